"""Load and validate a study file, before Ray starts: unknown keys, bad grid values, every cell's run config.

::

    name: scaling_toy                   # letters, digits, '.', '_', '-'
    output: studies/scaling_toy         # tables and plots (default: <base output_dir>/studies/<name>)
    metric: test/acc                    # what the tables and fits use (default test/acc)
    max_concurrent_trials: 2
    base: {model: {weights: auto}, train: {epochs: 4}}     # or a path to a run-config YAML
    overrides: [train.lr=3e-3]          # optional, applied to base
    grid:
      backbones: [vit_synth_xs, vit_synth_s, vit_synth_m]
      methods: [linear, {name: gist_adapter, bottleneck: 8}]   # a name, or {name, <knob>: value, ...}
      gist: [true, false]
      datasets: [shapes]                # data.task of base's data.name, or {name, task, root} (data.name/task/root)
      seeds: [0, 1]                     # train.seed
      n_train: [200, 800]               # optional: data.n_train values (synthetic data only)
"""

from __future__ import annotations

import copy
import dataclasses
import re
from pathlib import Path
from typing import Any, Optional, Sequence

from gist_ray.backbones import is_known_backbone
from gist_ray.config import Config, MethodConfig, absolute_paths, any_method_knobs, build_config
from gist_ray.data.fgvc import FGVC_DATASETS
from gist_ray.data.synthetic import TASKS as SYNTHETIC_TASKS
from gist_ray.data.vtab import VTAB_DATASETS
from gist_ray.errors import ConfigError
from gist_ray.study.spec import DatasetEntry, MethodEntry, Study, cell_overrides, scalar
from gist_ray.text.backbones import is_text_backbone
from gist_ray.typed_config import load_yaml, parse_override, set_path

STUDY_KEYS = ("name", "base", "grid", "output", "metric", "max_concurrent_trials", "overrides")
GRID_KEYS = ("backbones", "methods", "gist", "datasets", "seeds", "n_train")
REQUIRED_GRID = ("backbones", "methods", "datasets")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
KNOWN_TASKS = {"synthetic": list(SYNTHETIC_TASKS), "vtab": list(VTAB_DATASETS), "fgvc": list(FGVC_DATASETS)}


def load_study(path: str | Path, overrides: Sequence[str] = ()) -> Study:
    """Load and validate a study file; ``overrides`` change study keys (``grid.seeds=[0]``) or the base config."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: study file not found")
    raw = load_yaml(path)
    for key in raw:
        if key not in STUDY_KEYS:
            raise ConfigError(f"{path}: {key}: unknown top-level key; known: {', '.join(sorted(STUDY_KEYS))}")
    raw = copy.deepcopy(raw)
    base_overrides = split_overrides(raw, overrides)
    name = raw.get("name") or path.stem
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ConfigError(f"{path}: name: {name!r} must be letters, digits, '.', '_' or '-' (it names sweeps)")
    base_cfg = load_base(raw, path, name, base_overrides)
    base_method, base_knobs = base_cfg.method.name, dict(base_cfg.method.options)
    # the base method's knobs travel with the cells of that method only
    base_cfg = dataclasses.replace(base_cfg, method=MethodConfig(base_method, {}))

    grid = raw.get("grid")
    if not isinstance(grid, dict):
        raise ConfigError(f"{path}: grid: missing; a mapping with {', '.join(GRID_KEYS)}")
    for key in grid:
        if key not in GRID_KEYS:
            raise ConfigError(f"{path}: grid.{key}: unknown key; known: {', '.join(GRID_KEYS)}")
    for key in REQUIRED_GRID:
        if key not in grid:
            raise ConfigError(f"{path}: grid.{key}: required")
    w = f"{path}: grid"
    backbones = parse_list(grid.get("backbones"), f"{w}.backbones", str, [])
    methods = parse_methods(grid.get("methods"), f"{w}.methods")
    if len(set(methods)) != len(methods):
        raise ConfigError(f"{w}.methods: duplicate entries")
    gist = parse_list(grid.get("gist"), f"{w}.gist", bool, [base_cfg.gist.enabled])
    datasets = parse_datasets(grid.get("datasets"), f"{w}.datasets", base_cfg)
    if len(set(datasets)) != len(datasets):
        raise ConfigError(f"{w}.datasets: duplicate entries")
    seeds = parse_list(grid.get("seeds"), f"{w}.seeds", int, [base_cfg.train.seed])
    n_train: list[Optional[int]] = [None]
    if grid.get("n_train") is not None:
        n_train = parse_list(grid.get("n_train"), f"{w}.n_train", int, [])
        if any(n < 1 for n in n_train):  # type: ignore[operator]
            raise ConfigError(f"{w}.n_train: values must be >= 1, got {n_train}")
        if any(d.source != "synthetic" for d in datasets):
            raise ConfigError(f"{w}.n_train: only the synthetic datasets take a training-set size")

    metric = raw.get("metric", "test/acc")
    if not isinstance(metric, str) or "/" not in metric:
        raise ConfigError(f"{path}: metric: expected a logged metric such as test/acc or val/acc, got {metric!r}")
    if metric.startswith("test/") and not base_cfg.data.test_split:
        raise ConfigError(f"{path}: metric {metric}: base data.test_split is null, so no cell is ever tested")
    if metric.startswith("val/") and not base_cfg.data.eval_split:
        raise ConfigError(f"{path}: metric {metric}: base data.eval_split is null")
    mct = raw.get("max_concurrent_trials", 2)
    if isinstance(mct, bool) or not isinstance(mct, int) or mct < 1:
        raise ConfigError(f"{path}: max_concurrent_trials: must be an integer >= 1, got {mct!r}")
    output = raw.get("output") or str(Path(base_cfg.output_dir) / "studies" / name)
    if not isinstance(output, str):
        raise ConfigError(f"{path}: output: expected a folder path, got {output!r}")

    study = Study(name, base_cfg, backbones, methods, gist, datasets, seeds, n_train, output, metric, mct,
                  str(path), base_method, base_knobs)
    validate(study, path)
    return study


def split_overrides(raw: dict, overrides: Sequence[str]) -> list[str]:
    """Overrides naming a study key (``grid.seeds=[0]``, ``metric=val/acc``) change the study (in ``raw``);
    ``base.x=v`` and everything else (``train.epochs=2``) the base run config. Returns the base overrides."""
    rest = []
    for text in overrides:
        keys, value = parse_override(text)
        if keys[0] in STUDY_KEYS and keys[0] not in ("base", "overrides"):
            set_path(raw, keys, value)
        elif keys[0] == "base" and len(keys) > 1:
            rest.append(text.split(".", 1)[1])
        else:
            rest.append(text)
    return rest


def load_base(raw: dict, path: Path, name: str, overrides: Sequence[str]) -> Config:
    """The study's base run config (a mapping or a run-config file), with the file's and the command line's
    overrides, built once, local paths made absolute."""
    base = raw.get("base") or {}
    if isinstance(base, str):
        base_path = Path(base) if Path(base).is_absolute() else path.parent / base
        base = load_yaml(base_path if base_path.is_file() else Path(base))
    if not isinstance(base, dict):
        raise ConfigError(f"{path}: base: must be a mapping or a path to a run config")
    file_overrides = raw.get("overrides") or []
    if not isinstance(file_overrides, list):
        raise ConfigError(f"{path}: overrides: must be a list of a.b=value strings")
    base = {"name": name, **copy.deepcopy(base)}
    try:
        cfg = build_config(base, [*file_overrides, *overrides])
    except ConfigError as exc:
        raise ConfigError(f"{path}: base: {exc}") from None
    return absolute_paths(cfg)


def parse_methods(raw: Any, where: str) -> list[MethodEntry]:
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{where}: must be a non-empty list of method names or {{name, <knob>: value}} mappings")
    out = []
    for i, m in enumerate(raw):
        w = f"{where}[{i}]"
        if isinstance(m, str):
            out.append(MethodEntry(m))
            continue
        if not isinstance(m, dict) or not isinstance(m.get("name"), str):
            raise ConfigError(f"{w}: expected a method name or a mapping with a name, got {m!r}")
        knobs = {k: v for k, v in m.items() if k != "name"}
        if isinstance(knobs.get("options"), dict):
            knobs.update(knobs.pop("options"))
        bad = [k for k, v in knobs.items() if not scalar(v)]
        if bad:
            raise ConfigError(f"{w}.{bad[0]}: study method knobs must be scalars, got {knobs[bad[0]]!r}")
        out.append(MethodEntry(m["name"], tuple(knobs.items())))
    return out


def parse_datasets(raw: Any, where: str, base: Config) -> list[DatasetEntry]:
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{where}: must be a non-empty list of task names or {{name, task, root}} mappings")
    default_source, default_root = base.data.name, base.data.root
    out = []
    for i, d in enumerate(raw):
        w = f"{where}[{i}]"
        if isinstance(d, str):
            out.append(DatasetEntry(default_source, d, default_root))
            continue
        if not isinstance(d, dict):
            raise ConfigError(f"{w}: expected a task name or a mapping {{name, task, root}}, got {d!r}")
        unknown = [k for k in d if k not in ("name", "task", "root")]
        if unknown:
            raise ConfigError(f"{w}.{unknown[0]}: unknown key; known: name, task, root")
        if not isinstance(d.get("task"), str):
            raise ConfigError(f"{w}.task: needs a task (dataset) name")
        source = str(d.get("name", default_source))
        root = d.get("root", default_root if source == default_source else None)
        out.append(DatasetEntry(source, d["task"], None if root is None else str(Path(root).resolve())))
    return out


def parse_list(raw: Any, where: str, kind: type, default: list) -> list:
    if raw is None:
        return list(default)
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{where}: must be a non-empty list")
    for i, v in enumerate(raw):
        ok = isinstance(v, kind) and not (kind is int and isinstance(v, bool))
        if not ok:
            raise ConfigError(f"{where}[{i}]: expected {'true/false' if kind is bool else kind.__name__}, got {v!r}")
    if len(set(raw)) != len(raw):
        raise ConfigError(f"{where}: duplicate values in {raw!r}")
    return list(raw)


def validate(study: Study, path: Path) -> None:
    """Each grid value alone (errors name it), then every cell's full run config (each built once)."""
    w = f"{path}: grid"
    try:
        first = study.cells()[0]
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    ref = dict(first.overrides)

    def check(where: str, changes: dict[str, Any]) -> None:
        try:
            study.variants.get({**ref, **changes})
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None

    # cheap checks first, so that a bad first value is named by its own axis
    for i, b in enumerate(study.backbones):
        if not (is_known_backbone(b) or is_text_backbone(b)):
            raise ConfigError(f"{w}.backbones[{i}] ({b}): unknown backbone (not a gist-ray, timm or text encoder "
                              "name)")
    for i, d in enumerate(study.datasets):
        known = KNOWN_TASKS.get(d.source)
        if known is not None and d.task not in known:
            raise ConfigError(f"{w}.datasets[{i}]: unknown {d.source} task {d.task!r}; known: {', '.join(known)}")
    for i, m in enumerate(study.methods):
        owned = any_method_knobs(m.name) or set()
        bad = [k for k, _ in m.knobs if owned and k not in owned]
        if bad:
            raise ConfigError(f"{w}.methods[{i}].{bad[0]}: method {m.name} has no knob {bad[0]!r}; "
                              f"known: {', '.join(sorted(owned))}")
        over = dict(cell_overrides(study, first.backbone, m, first.gist, first.dataset, first.seed, first.n_train))
        check(f"{w}.methods[{i}] ({m.label()})", over)
    for i, b in enumerate(study.backbones):
        check(f"{w}.backbones[{i}] ({b})", {"model.backbone": b})
    for i, d in enumerate(study.datasets):
        over = {"data.name": d.source, "data.task": d.task}
        if "data.root" in ref:
            over["data.root"] = d.root
        check(f"{w}.datasets[{i}] ({d.task})", over)
    for i, n in enumerate(study.n_train):
        if n is not None:
            check(f"{w}.n_train[{i}]", {"data.n_train": n})
    for c in study.cells():
        check(f"{path}: cell {c.index} ({c.label()})", dict(c.overrides))
