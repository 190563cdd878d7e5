"""Scaling studies (``gist-ray scale STUDY.yaml``) and experiment reports (``gist-ray report EXPERIMENT``).

A study file is a base run config plus a grid; every combination is one *cell*, trained once on the train
split, selected on nothing (val is logged every epoch) and tested once at the end::

    name: scaling_toy                   # letters, digits, '.', '_', '-'
    output: studies/scaling_toy         # tables and plots (default: <base output_dir>/studies/<name>)
    metric: test/acc                    # what the tables and fits use (default test/acc)
    max_concurrent_trials: 2
    n_boot: 1000                        # bootstrap resamples for the CIs
    base: {model: {weights: auto}, train: {epochs: 4}}     # or a path to a run-config YAML
    overrides: [train.lr=3e-3]          # optional, applied to base
    grid:
      backbones: [vit_synth_xs, vit_synth_s, vit_synth_m]
      methods: [linear, {name: gist_adapter, bottleneck: 8}]   # a name, or {name, <knob>: value, ...}
      gist: [true, false]
      datasets: [shapes]                # data.task of base's data.name, or {name, task, root} (data.name/task/root)
      seeds: [0, 1]                     # train.seed
      n_train: [200, 800]               # optional: data.n_train values (synthetic data only)

How it runs: the cells still to run become one sweep of the sweep layer (``run_sweep``), named
``<study>-<k>`` (k = 1, 2, ... one per invocation, so no sweep directory is ever reused), whose trials are
exactly those cells: each cell is a ``search.initial_points`` entry of a ``random``-sampler sweep with
``num_samples`` = number of cells to run and scheduler ``none`` (points to evaluate run first and exactly).

Resuming: a cell counts as done when the experiment holds a FINISHED trial run (tag ``gist_ray.kind=trial``)
of a sweep named ``<study>-<k>`` whose logged config (MLflow params) equals the cell's full run config, except
``name``, ``output_dir``, ``tracking.*`` and ``resources.*``, and which logged the study's metric. Rerunning the
study therefore runs only the missing or failed cells; editing the base config (e.g. more epochs) makes every
cell new. A cell interrupted mid-training restarts from scratch in the next sweep. After each sweep its runs get
the tag ``gist_ray.study=<name>`` and the sweep's parent run hangs under the study run (``gist_ray.kind=study``)
that holds the tables and plots as artifacts.

Analysis: err = 1 - accuracy fitted as ``a * N^-b + c`` per method and GIST on/off over backbone size ``N`` (the
backbone's parameters without its classification head, counted exactly), with bootstrap CIs over seeds; the
GIST gain per size with paired bootstrap CIs; and a paired Wilcoxon / t-test per method over all (size, dataset,
seed) pairs.
"""

from __future__ import annotations

import copy
import functools
import itertools
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from gist_ray.config import ConfigError, build_config, load_yaml, parse_override, set_path, to_dict

STUDY_TAG = "gist_ray.study"
STUDY_KEYS = ("name", "base", "grid", "output", "metric", "max_concurrent_trials", "overrides", "n_boot")
GRID_KEYS = ("backbones", "methods", "gist", "datasets", "seeds", "n_train")
REQUIRED_GRID = ("backbones", "methods", "datasets")
# config fields that do not change what a cell computes (paths, run name, where it runs)
IGNORED = ("name", "output_dir")
IGNORED_PREFIXES = ("tracking.", "resources.")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


# ----------------------------------------------------------------------------- the study file


@dataclass(frozen=True)
class MethodEntry:
    name: str
    knobs: tuple[tuple[str, Any], ...] = ()

    def label(self) -> str:
        return self.name + ("(" + ",".join(f"{k}={v}" for k, v in self.knobs) + ")" if self.knobs else "")


@dataclass(frozen=True)
class DatasetEntry:
    source: str  # data.name
    task: str  # data.task
    root: Optional[str] = None  # data.root


@dataclass(frozen=True)
class Cell:
    """One combination of the grid; ``overrides`` are the ``{config path: value}`` of its sweep trial."""

    index: int
    backbone: str
    method: MethodEntry
    gist: bool
    dataset: DatasetEntry
    seed: int
    n_train: Optional[int]
    overrides: tuple[tuple[str, Any], ...]

    def label(self) -> str:
        n = f" n_train={self.n_train}" if self.n_train is not None else ""
        return (f"{self.backbone} {self.method.label()} gist={'on' if self.gist else 'off'} "
                f"{self.dataset.task} seed={self.seed}{n}")


@dataclass
class Study:
    name: str
    base: dict
    backbones: list[str]
    methods: list[MethodEntry]
    gist: list[bool]
    datasets: list[DatasetEntry]
    seeds: list[int]
    n_train: list[Optional[int]]
    output: str
    metric: str = "test/acc"
    max_concurrent_trials: int = 2
    n_boot: int = 1000
    source: str = ""
    # the base run config's method knobs; they apply to the cells of that method only (base keeps just the name)
    base_method: str = "gist_adapter"
    base_knobs: dict = field(default_factory=dict)
    _cells: list[Cell] = field(default_factory=list, repr=False)

    @property
    def tracking_uri(self) -> str:
        return build_config(self.base).tracking.uri

    @property
    def experiment(self) -> str:
        return build_config(self.base).tracking.experiment

    def cells(self) -> list[Cell]:
        """Every cell, seed-major (all sizes of seed 0 first), then dataset, n_train, backbone, method, GIST."""
        if not self._cells:
            combos = itertools.product(self.seeds, self.datasets, self.n_train, self.backbones, self.methods, self.gist)
            self._cells = [Cell(i, b, m, g, d, s, n, tuple(cell_overrides(self, b, m, g, d, s, n).items()))
                           for i, (s, d, n, b, m, g) in enumerate(combos)]
        return self._cells

    def space_keys(self) -> list[str]:
        keys: list[str] = []
        for c in self.cells():
            keys += [k for k, _ in c.overrides if k not in keys]
        return keys

    def method_labels(self) -> dict[MethodEntry, str]:
        """A method's name, or name(knob=v, ...) where one name appears with several knob settings."""
        counts: dict[str, int] = {}
        for m in self.methods:
            counts[m.name] = counts.get(m.name, 0) + 1
        return {m: (m.label() if counts[m.name] > 1 else m.name) for m in self.methods}


def _scalar(v: Any) -> bool:
    return v is None or isinstance(v, (str, int, float, bool))


def _base_method(base: dict) -> tuple[str, dict]:
    method = dict(base.get("method") or {})
    name = str(method.pop("name", "gist_adapter"))
    if isinstance(method.get("options"), dict):
        method.update(method.pop("options"))
    return name, method


@functools.lru_cache(maxsize=None)
def _method_defaults(name: str) -> dict[str, Any]:
    import dataclasses

    from gist_ray.methods import METHODS

    out = {}
    for f in dataclasses.fields(METHODS.get(name).config_cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            out[f.name] = f.default_factory()  # type: ignore[misc]
    return out


def _own_knobs(study: Study, method: MethodEntry) -> dict[str, Any]:
    own = dict(method.knobs)
    if method.name == study.base_method:
        own = {**study.base_knobs, **own}
    return own


def _knob_names(study: Study) -> list[str]:
    """Every method knob a cell sets: the entries' knobs and the base method's own knobs."""
    names: list[str] = []
    for m in study.methods:
        names += [k for k in _own_knobs(study, m) if k not in names]
    return names


def cell_overrides(study: Study, backbone: str, method: MethodEntry, gist: bool, dataset: DatasetEntry, seed: int,
                   n_train: Optional[int]) -> dict[str, Any]:
    """The cell's sweep-trial overrides. Every cell sets every key (a sweep's initial points must be complete);
    a knob the cell's method does not have gets a placeholder that the sweep layer drops."""
    own = _own_knobs(study, method)
    out: dict[str, Any] = {"model.backbone": backbone, "method.name": method.name}
    defaults = None
    for knob in _knob_names(study):
        if knob in own:
            out[f"method.{knob}"] = own[knob]
            continue
        if defaults is None:
            try:
                defaults = _method_defaults(method.name)
            except KeyError:  # unknown method: the validation names it
                defaults = {}
        v = defaults.get(knob, 0)  # a knob the method lacks: a placeholder the sweep layer drops
        if not _scalar(v):
            raise ConfigError(f"grid.methods: {method.name}'s knob {knob} has a non-scalar default; "
                              f"give {knob} explicitly in every {method.name} entry")
        out[f"method.{knob}"] = v
    out["gist.enabled"] = bool(gist)
    out["data.name"] = dataset.source
    out["data.task"] = dataset.task
    if any(d.root is not None for d in study.datasets):
        out["data.root"] = dataset.root
    out["train.seed"] = int(seed)
    if n_train is not None:
        out["data.n_train"] = int(n_train)
    return out


def _apply_overrides(base: dict, overrides: dict[str, Any]) -> dict:
    from gist_ray.sweep.space import apply_overrides

    return apply_overrides(base, overrides)


def _parse_methods(raw: Any, where: str) -> list[MethodEntry]:
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
        bad = [k for k, v in knobs.items() if not _scalar(v)]
        if bad:
            raise ConfigError(f"{w}.{bad[0]}: study method knobs must be scalars, got {knobs[bad[0]]!r}")
        out.append(MethodEntry(m["name"], tuple(knobs.items())))
    return out


def _parse_datasets(raw: Any, where: str, base: dict) -> list[DatasetEntry]:
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{where}: must be a non-empty list of task names or {{name, task, root}} mappings")
    data = base.get("data") or {}
    default_source = str(data.get("name", "synthetic"))
    default_root = data.get("root")
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
        out.append(DatasetEntry(source, d["task"], None if root is None else str(root)))
    return out


def _known_tasks(source: str) -> Optional[Sequence[str]]:
    if source == "synthetic":
        from gist_ray.data.synthetic import TASKS

        return list(TASKS)
    if source == "vtab":
        from gist_ray.data.vtab import VTAB_DATASETS

        return list(VTAB_DATASETS)
    if source == "fgvc":
        from gist_ray.data.fgvc import FGVC_DATASETS

        return list(FGVC_DATASETS)
    return None


def _list(raw: Any, where: str, kind: type, default: list) -> list:
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


def _apply_study_overrides(raw: dict, overrides: Sequence[str]) -> list[str]:
    """Overrides naming a study key (``grid.seeds=[0]``, ``metric=val/acc``) change the study; ``base.x=v`` and
    everything else (``train.epochs=2``) the base run config. Returns the base overrides."""
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


def load_study(path: str | Path, overrides: Sequence[str] = ()) -> Study:
    """Load and validate a study file: unknown keys, bad grid values and every cell's run config, before Ray."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: study file not found")
    raw = load_yaml(path)
    for key in raw:
        if key not in STUDY_KEYS:
            raise ConfigError(f"{path}: {key}: unknown top-level key; known: {', '.join(sorted(STUDY_KEYS))}")
    raw = copy.deepcopy(raw)
    base_overrides = _apply_study_overrides(raw, overrides)
    name = raw.get("name") or path.stem
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ConfigError(f"{path}: name: {name!r} must be letters, digits, '.', '_' or '-' (it names sweeps)")
    base = raw.get("base") or {}
    if isinstance(base, str):
        base_path = Path(base) if Path(base).is_absolute() else path.parent / base
        base = load_yaml(base_path if base_path.is_file() else Path(base))
    if not isinstance(base, dict):
        raise ConfigError(f"{path}: base: must be a mapping or a path to a run config")
    base = copy.deepcopy(base)
    file_overrides = raw.get("overrides") or []
    if not isinstance(file_overrides, list):
        raise ConfigError(f"{path}: overrides: must be a list of a.b=value strings")
    for text in list(file_overrides) + base_overrides:
        keys, value = parse_override(text)
        set_path(base, keys, value)
    base.setdefault("name", name)
    try:
        base_cfg = build_config(base)
    except ConfigError as exc:
        raise ConfigError(f"{path}: base: {exc}") from None
    base_method, base_knobs = _base_method(base)
    base["method"] = {"name": base_method}  # its knobs travel with the cells of that method

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
    backbones = _list(grid.get("backbones"), f"{w}.backbones", str, [])
    methods = _parse_methods(grid.get("methods"), f"{w}.methods")
    if len(set(methods)) != len(methods):
        raise ConfigError(f"{w}.methods: duplicate entries")
    gist = _list(grid.get("gist"), f"{w}.gist", bool, [base_cfg.gist.enabled])
    datasets = _parse_datasets(grid.get("datasets"), f"{w}.datasets", base)
    if len(set(datasets)) != len(datasets):
        raise ConfigError(f"{w}.datasets: duplicate entries")
    seeds = _list(grid.get("seeds"), f"{w}.seeds", int, [base_cfg.train.seed])
    n_train: list[Optional[int]] = [None]
    if grid.get("n_train") is not None:
        n_train = _list(grid.get("n_train"), f"{w}.n_train", int, [])
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
    n_boot = raw.get("n_boot", 1000)
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 10:
        raise ConfigError(f"{path}: n_boot: must be an integer >= 10, got {n_boot!r}")
    output = raw.get("output") or str(Path(base_cfg.output_dir) / "studies" / name)
    if not isinstance(output, str):
        raise ConfigError(f"{path}: output: expected a folder path, got {output!r}")

    study = Study(name, base, backbones, methods, gist, datasets, seeds, n_train, output, metric, mct, n_boot,
                  str(path), base_method, base_knobs)
    _validate(study, path)
    return study


def _validate(study: Study, path: Path) -> None:
    """Each grid value alone (errors name it), then every cell's full run config."""
    w = f"{path}: grid"
    try:
        first = study.cells()[0]
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    ref = dict(first.overrides)

    def check(where: str, changes: dict[str, Any]) -> None:
        try:
            build_config(_apply_overrides(study.base, {**ref, **changes}))
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None

    from gist_ray.backbones import is_known_backbone
    from gist_ray.sweep.space import method_knobs

    # cheap checks first, so that a bad first value is named by its own axis
    for i, b in enumerate(study.backbones):
        if not is_known_backbone(b):
            raise ConfigError(f"{w}.backbones[{i}] ({b}): unknown backbone (not a gist-ray or timm model name)")
    for i, d in enumerate(study.datasets):
        known = _known_tasks(d.source)
        if known is not None and d.task not in known:
            raise ConfigError(f"{w}.datasets[{i}]: unknown {d.source} task {d.task!r}; known: {', '.join(known)}")
    for i, m in enumerate(study.methods):
        owned = method_knobs(m.name)
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


# ----------------------------------------------------------------------------- which cells are done


def cell_signature(base: dict, cell: Cell) -> dict[str, str]:
    """The cell's run config as MLflow params (``str`` values), without the fields that do not change results."""
    from gist_ray import tracking

    flat = tracking.flatten(to_dict(build_config(_apply_overrides(base, dict(cell.overrides)))))
    return {k: str(v)[:6000] for k, v in flat.items()
            if k not in IGNORED and not k.startswith(IGNORED_PREFIXES)}


def study_sweep_re(name: str) -> re.Pattern:
    return re.compile(rf"^{re.escape(name)}-(\d+)$")


def _search_all(c, exp_id: str, flt: str) -> list:
    runs, token = [], None
    while True:
        page = c.search_runs([exp_id], filter_string=flt, max_results=1000, page_token=token)
        runs += list(page)
        token = page.token
        if not token:
            return runs


def study_runs(uri: str, experiment: str, name: str, kind: Optional[str] = "trial",
               status: Optional[str] = "FINISHED") -> list:
    """Runs of kind ``kind`` (None: any) of the study's sweeps (``gist_ray.sweep`` = ``<name>-<k>``)."""
    from gist_ray import tracking

    c = tracking.client(uri)
    exp = c.get_experiment_by_name(experiment)
    if exp is None:
        return []
    # LIKE's '_' matches any character; the exact names are checked below
    flt = f"tags.`{tracking.SWEEP_TAG}` LIKE '{name}-%'"
    if kind:
        flt += f" and tags.`{tracking.KIND_TAG}` = '{kind}'"
    if status:
        flt += f" and attributes.status = '{status}'"
    pattern = study_sweep_re(name)
    return [r for r in _search_all(c, exp.experiment_id, flt)
            if pattern.match(r.data.tags.get(tracking.SWEEP_TAG, ""))]


def finished_cells(study: Study, base: Optional[dict] = None) -> dict[int, Any]:
    """Cell index -> its newest FINISHED MLflow run (with the study's metric), for the cells already done.

    ``base`` is the base config as the sweep layer logs it (local paths made absolute); default: the study's."""
    from gist_ray.sweep.driver import absolute_paths

    base = absolute_paths(study.base) if base is None else base
    runs = [r for r in study_runs(study.tracking_uri, study.experiment, study.name) if study.metric in r.data.metrics]
    runs.sort(key=lambda r: r.info.start_time or 0)  # newest last: it wins below
    index: dict[tuple[str, ...], dict[tuple, Any]] = {}  # signature keys -> their values -> newest run
    done: dict[int, Any] = {}
    for cell in study.cells():
        sig = cell_signature(base, cell)
        keys = tuple(sorted(sig))
        if keys not in index:
            index[keys] = {tuple(r.data.params.get(k) for k in keys): r for r in runs}
        run = index[keys].get(tuple(sig[k] for k in keys))
        if run is not None:
            done[cell.index] = run
    return done


def next_sweep_name(study: Study) -> str:
    """``<study>-<k>`` with k above every sweep of the study in MLflow and on disk."""
    from gist_ray import tracking

    pattern = study_sweep_re(study.name)
    used = [0]
    for r in study_runs(study.tracking_uri, study.experiment, study.name, kind=None, status=None):
        m = pattern.match(r.data.tags.get(tracking.SWEEP_TAG, ""))
        used.append(int(m.group(1)))
    out = build_config(study.base).output_dir
    sweeps = Path(out) / "sweeps"
    if "://" not in out and sweeps.is_dir():
        for p in sweeps.iterdir():
            m = pattern.match(p.name)
            if m:
                used.append(int(m.group(1)))
    return f"{study.name}-{max(used) + 1}"


# ----------------------------------------------------------------------------- the sweep of the remaining cells


def search_metric(base: dict) -> tuple[str, str]:
    """A metric every epoch reports (Optuna and Tune's metric check need one); it does not choose anything."""
    cfg = build_config(base)
    if cfg.data.eval_split and cfg.train.eval_every == 1:
        return "val/acc", "max"
    return "train/acc", "max"


def sweep_spec(study: Study, cells: Sequence[Cell], sweep_name: str):
    """A sweep whose trials are exactly ``cells``: random sampler, the cells as initial points, no scheduler."""
    from gist_ray.sweep.space import Dist, SearchConfig, SweepSpec

    keys = study.space_keys()
    space = {}
    for k in keys:
        values: list = []
        for c in cells:
            v = dict(c.overrides)[k]
            if not any(v == u and type(v) is type(u) for u in values):
                values.append(v)
        space[k] = Dist("choice", values)
    metric, mode = search_metric(study.base)
    search = SearchConfig(num_samples=len(cells), max_concurrent_trials=study.max_concurrent_trials, metric=metric,
                          mode=mode, sampler="random", scheduler="none",
                          initial_points=[dict(c.overrides) for c in cells])
    return SweepSpec(sweep_name, copy.deepcopy(study.base), search, space, source=study.source)


# ----------------------------------------------------------------------------- backbones


def prepare_ladder(study: Study, backbones: Sequence[str]) -> None:
    """Build the missing synthetic-pretrained ``vit_synth_*`` weights before the sweep (one at a time)."""
    if build_config(study.base).model.weights != "auto":
        return
    from gist_ray.backbones import TINY, resolve_name
    from gist_ray.pretrain import pretrained_synthetic_weights, weights_path

    names = [n for n in dict.fromkeys(resolve_name(b) for b in backbones)
             if n in TINY and TINY[n].pretrain and not weights_path(n).is_file()]
    if not names:
        return
    for n in names:
        pretrained_synthetic_weights(n)  # pins torch to one thread while it trains



@functools.lru_cache(maxsize=None)
def backbone_params(name: str) -> int:
    """Exact parameter count of backbone ``name`` without its classification head (built on the meta device)."""
    import torch

    from gist_ray.backbones import create_backbone

    with torch.device("meta"):
        model = create_backbone(name, 0, weights="none")
    return int(sum(p.numel() for p in model.parameters()))


# ----------------------------------------------------------------------------- analysis


def cell_records(study: Study, done: dict[int, Any]) -> list[dict]:
    """Tidy records (``gist_ray.scaling.records`` schema) of the finished cells; ``acc`` is the study metric."""
    labels = study.method_labels()
    several_n = len(study.n_train) > 1
    out = []
    for cell in study.cells():
        run = done.get(cell.index)
        if run is None:
            continue
        m = run.data.metrics
        method = labels[cell.method] + (f"@n{cell.n_train}" if several_n else "")
        out.append({
            "run_id": run.info.run_id, "cell": cell.index, "backbone": cell.backbone,
            "backbone_params": float(backbone_params(cell.backbone)), "method": method, "gist": cell.gist,
            "dataset": cell.dataset.task, "seed": cell.seed, "n_train": cell.n_train, "acc": float(m[study.metric]),
            "metric": study.metric, "test_acc": m.get("test/acc"), "val_acc": m.get("val/acc"),
            "trainable_params": m.get("params/total"),
        })
    return out


def analyze(records: list[dict], n_boot: int = 1000, level: float = 0.95) -> dict[str, list[dict]]:
    """Power-law fits, GIST gains per size and paired tests from cell records (``acc`` = the study metric)."""
    import numpy as np

    from gist_ray.scaling.fit import bootstrap_fit, gist_gain, paired_test
    from gist_ray.scaling.records import backbone_sizes, grid, ordered, paired_seeds, seed_means

    g = grid(records, "acc")
    sizes = backbone_sizes(records)
    methods = ordered(k[0] for k in g)
    fits, gains, tests = [], [], []
    for method in methods:
        for gist in (False, True):
            bbs = sorted((b for (m, gg, b) in g if m == method and gg == gist), key=lambda b: sizes[b])
            if not bbs:
                continue
            datasets = [d for d in g[(method, gist, bbs[0])] if all(d in g[(method, gist, b)] for b in bbs)]
            rows = []
            for b in bbs:
                seeds = set.intersection(*(set(g[(method, gist, b)][d]) for d in datasets)) if datasets else set()
                rows.append(1.0 - seed_means(g[(method, gist, b)], datasets, sorted(seeds, key=str)))
            row = {"method": method, "gist": "on" if gist else "off", "sizes": len(bbs),
                   "seeds": int(min(len(r) for r in rows))}
            if len(bbs) >= 3 and all(len(r) for r in rows):
                bf = bootstrap_fit([sizes[b] for b in bbs], rows, n_boot=n_boot, level=level)
                row.update({"a": bf.fit.a, "b": bf.fit.b, "b_lo": bf.ci["b"][0], "b_hi": bf.ci["b"][1],
                            "c": bf.fit.c, "c_lo": bf.ci["c"][0], "c_hi": bf.ci["c"][1], "rmse": bf.fit.rmse,
                            "converged": bf.fit.converged, "failed_boots": bf.n_failed})
            fits.append(row)
        pairs_w, pairs_wo = [], []
        bbs = sorted((b for b in sizes if (method, True, b) in g and (method, False, b) in g), key=lambda b: sizes[b])
        with_rows, without_rows, kept = [], [], []
        for b in bbs:
            on, off = g[(method, True, b)], g[(method, False, b)]
            datasets, seeds = paired_seeds(on, off)
            if not seeds:
                continue
            with_rows.append(seed_means(on, datasets, seeds))
            without_rows.append(seed_means(off, datasets, seeds))
            kept.append(b)
            for d in datasets:
                for s in seeds:
                    pairs_w.append(on[d][s])
                    pairs_wo.append(off[d][s])
        if kept:
            res = gist_gain(with_rows, without_rows, n_boot=n_boot, level=level, paired=True)
            for i, b in enumerate(kept):
                gains.append({"method": method, "backbone": b, "backbone_params_m": sizes[b] / 1e6,
                              "acc_off": float(np.mean(without_rows[i])), "acc_on": float(np.mean(with_rows[i])),
                              "gain": float(res.gain[i]), "gain_lo": float(res.lo[i]), "gain_hi": float(res.hi[i]),
                              "seeds": int(res.n[i])})
            t = paired_test(pairs_w, pairs_wo)
            tests.append({"method": method, "pairs": t.n, "mean_diff": t.mean_diff, "std_diff": t.std_diff,
                          "wilcoxon_p": t.wilcoxon_p, "ttest_p": t.ttest_p})
    if len(tests) > 1:
        w, wo = [], []
        for (m, gist, b), by_ds in g.items():
            if gist and (m, False, b) in g:
                off = g[(m, False, b)]
                for d, seeds in by_ds.items():
                    for s, v in seeds.items():
                        if s in off.get(d, {}):
                            w.append(v)
                            wo.append(off[d][s])
        t = paired_test(w, wo)
        tests.append({"method": "all methods", "pairs": t.n, "mean_diff": t.mean_diff, "std_diff": t.std_diff,
                      "wilcoxon_p": t.wilcoxon_p, "ttest_p": t.ttest_p})
    return {"fits": fits, "gains": gains, "tests": tests}


def _tables(analysis: dict[str, list[dict]], level: float = 0.95) -> dict[str, Any]:
    from gist_ray.report import Table

    class NumTable(Table):
        """Markdown/LaTeX with per-column formats; CSV keeps full precision."""

        fmt: dict = {}

        def text(self, key: str, value: Any) -> str:
            f = self.fmt.get(key)
            if f and isinstance(value, (int, float)) and not isinstance(value, bool):
                return "–" if isinstance(value, float) and math.isnan(value) else format(value, f)
            return super().text(key, value)

    pct = f"{level:.0%}"
    gains = NumTable("GIST gain per backbone size (accuracy points, with - without, paired over seeds)", [
        ("method", "Method"), ("backbone", "Backbone"), ("backbone_params_m", "Backbone params (M)"),
        ("acc_off", "Acc. without"), ("acc_on", "Acc. with GIST"), ("gain", "Gain"), ("gain_lo", f"{pct} CI low"),
        ("gain_hi", f"{pct} CI high"), ("seeds", "Seeds")])
    gains.fmt = {"backbone_params_m": ".3f", "acc_off": ".2f", "acc_on": ".2f", "gain": "+.2f", "gain_lo": "+.2f",
                 "gain_hi": "+.2f"}
    gains.rows = [{**r, **{k: 100 * r[k] for k in ("acc_off", "acc_on", "gain", "gain_lo", "gain_hi")}}
                  for r in analysis["gains"]]
    fits = NumTable("Power-law fits err = a * N^-b + c (N = backbone parameters)", [
        ("method", "Method"), ("gist", "GIST"), ("sizes", "Sizes"), ("seeds", "Seeds"), ("a", "a"), ("b", "b"),
        ("b_lo", f"b {pct} CI low"), ("b_hi", f"b {pct} CI high"), ("c", "c"), ("c_lo", f"c {pct} low"),
        ("c_hi", f"c {pct} high"), ("rmse", "RMSE")])
    fits.fmt = {"a": ".3g", "b": ".3f", "b_lo": ".3f", "b_hi": ".3f", "c": ".3f", "c_lo": ".3f", "c_hi": ".3f",
                "rmse": ".4f"}
    fits.rows = analysis["fits"]
    tests = NumTable("Paired test of GIST on vs off over (size, dataset, seed) pairs (accuracy points)", [
        ("method", "Method"), ("pairs", "Pairs"), ("mean_diff", "Mean diff"), ("std_diff", "Std diff"),
        ("wilcoxon_p", "Wilcoxon p"), ("ttest_p", "t-test p")])
    tests.fmt = {"mean_diff": "+.2f", "std_diff": ".2f", "wilcoxon_p": ".3g", "ttest_p": ".3g"}
    tests.rows = [{**r, "mean_diff": 100 * r["mean_diff"], "std_diff": 100 * r["std_diff"]} for r in analysis["tests"]]
    return {"gist_gain": gains, "fits": fits, "paired_tests": tests}


def write_study_outputs(records: list[dict], out_dir: str | Path, n_boot: int = 1000,
                        formats: Sequence[str] = ("md", "csv", "tex")) -> tuple[dict, list[Path], str]:
    """Tables (md/csv/tex), ``records.csv``, plots (PNG+SVG) and ``summary.md``; returns (analysis, paths, md)."""
    import csv

    from gist_ray.report import scaling_table
    from gist_ray.scaling import plots

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    analysis = analyze(records, n_boot=n_boot)
    tables = {"scaling": scaling_table(records, metric="acc"), **_tables(analysis)}
    paths: list[Path] = []
    md = []
    for name, table in tables.items():
        for fmt in formats:
            p = out / f"{name}.{fmt}"
            text = table.render(fmt)
            p.write_text(f"## {table.title}\n\n{text}" if fmt == "md" else text, encoding="utf-8")
            paths.append(p)
        md.append(f"## {table.title}\n\n{table.to_markdown()}")
    keys = ["cell", "run_id", "backbone", "backbone_params", "method", "gist", "dataset", "seed", "n_train", "acc",
            "metric", "test_acc", "val_acc", "trainable_params"]
    with open(out / "records.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, keys, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        w.writerows(records)
    paths.append(out / "records.csv")
    if records:
        paths += plots.plot_accuracy_vs_params(records, out, metric="acc")
        if any(r["gist"] for r in records) and not all(r["gist"] for r in records):
            paths += plots.plot_gist_gain(records, out, metric="acc", n_boot=n_boot)
        if any(r.get("trainable_params") for r in records):
            paths += plots.plot_pareto(records, out, metric="acc")
    figures = [p for p in paths if p.suffix in (".png", ".svg")]
    summary = "\n".join(md) + "\nPlots:\n" + "".join(f"- {p}\n" for p in figures)
    (out / "summary.md").write_text(summary, encoding="utf-8")
    paths.append(out / "summary.md")
    return analysis, paths, summary


# ----------------------------------------------------------------------------- MLflow: the study run


def open_study_run(study: Study) -> str:
    from gist_ray import tracking

    c = tracking.client(study.tracking_uri)
    exp = tracking.experiment_id(c, study.experiment)
    tags = {tracking.KIND_TAG: "study", STUDY_TAG: study.name}
    found = tracking.find_run(c, exp, tags)
    if found:
        c.update_run(found.info.run_id, "RUNNING")
        return found.info.run_id
    run_id = c.create_run(exp, run_name=f"study-{study.name}", tags=tags).info.run_id
    tracking.log_params(c, run_id, {
        "study.metric": study.metric, "study.cells": len(study.cells()), "grid.backbones": study.backbones,
        "grid.methods": [m.label() for m in study.methods], "grid.gist": study.gist,
        "grid.datasets": [d.task for d in study.datasets], "grid.seeds": study.seeds,
        "grid.n_train": study.n_train,
    })
    return run_id


def adopt_sweep(study: Study, sweep: str, study_run: str) -> None:
    """Tag the sweep's runs with the study and hang its parent run under the study run."""
    from gist_ray import tracking

    c = tracking.client(study.tracking_uri)
    exp = c.get_experiment_by_name(study.experiment)
    if exp is None:
        return
    for r in _search_all(c, exp.experiment_id, f"tags.`{tracking.SWEEP_TAG}` = '{sweep}'"):
        c.set_tag(r.info.run_id, STUDY_TAG, study.name)
        if r.data.tags.get(tracking.KIND_TAG) == "sweep":
            c.set_tag(r.info.run_id, tracking.PARENT_TAG, study_run)


# ----------------------------------------------------------------------------- run_study


@dataclass
class StudyResult:
    name: str
    output: Path
    cells: int  # in the grid
    skipped: int  # already finished before this invocation
    ran: int  # launched by this invocation
    done: int  # finished after this invocation
    sweep: Optional[str]  # the sweep this invocation ran (None: nothing to run)
    wall_s: float
    records: list[dict] = field(default_factory=list)
    analysis: dict = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    study_run_id: str = ""
    summary: str = ""

    @property
    def complete(self) -> bool:
        return self.done == self.cells


def run_study(path: str | Path, overrides: Sequence[str] = (), verbose: bool = True) -> StudyResult:
    """Run the study's unfinished cells as one sweep, then fit, tabulate, plot and log it all to MLflow."""
    from gist_ray import tracking
    from gist_ray.sweep.driver import absolute_paths

    t0 = time.perf_counter()
    say = print if verbose else (lambda *a, **k: None)
    study = load_study(path, overrides)
    study.base = absolute_paths(study.base)
    _check_data(study)
    cells = study.cells()
    done = finished_cells(study, study.base)
    todo = [c for c in cells if c.index not in done]
    say(f"[study {study.name}] {len(cells)} cells: {len(done)} already finished, {len(todo)} to run "
        f"(MLflow {study.tracking_uri}, experiment {study.experiment})", flush=True)
    study_run = open_study_run(study)
    c = tracking.client(study.tracking_uri)
    sweep_name, errors, status = None, [], "FAILED"
    try:
        if todo:
            from gist_ray.sweep.driver import run_sweep

            prepare_ladder(study, [cell.backbone for cell in todo])
            sweep_name = next_sweep_name(study)
            say(f"[study {study.name}] sweep {sweep_name}: {len(todo)} cells, "
                f"{study.max_concurrent_trials} at a time", flush=True)
            spec = sweep_spec(study, todo, sweep_name)
            try:
                result = run_sweep(spec, verbose=verbose)
                errors = [f"{r.config.get('model.backbone')} {r.config.get('method.name')} "
                          f"gist={r.config.get('gist.enabled')} {r.config.get('data.task')} "
                          f"seed={r.config.get('train.seed')}: {r.error}" for r in result.rows if r.error]
            finally:
                adopt_sweep(study, sweep_name, study_run)
        done = finished_cells(study, study.base)
        records = cell_records(study, done)
        out = Path(study.output)
        files: list[Path] = []
        analysis: dict = {}
        summary = ""
        if records:
            analysis, files, summary = write_study_outputs(records, out, n_boot=study.n_boot)
            for f in files:
                c.log_artifact(study_run, str(f), "study")
            if study.source:
                c.log_artifact(study_run, study.source, "study")
            _log_study_metrics(c, study_run, analysis, len(done), len(cells))
        status = "FINISHED"
    finally:
        c.set_terminated(study_run, status if status == "FINISHED" else "KILLED")
    res = StudyResult(study.name, Path(study.output), len(cells), len(cells) - len(todo), len(todo), len(done),
                      sweep_name, time.perf_counter() - t0, records, analysis, files, errors, study_run, summary)
    if verbose:
        print()
        print(summary or "no finished cells yet: nothing to tabulate")
        for e in errors:
            print(f"errored: {e}")
        state = "complete" if res.complete else f"{res.cells - res.done} cells missing; rerun the same command"
        print(f"[study {study.name}] {res.done}/{res.cells} cells finished ({state}); {res.wall_s:.0f} s; "
              f"tables and plots in {res.output.resolve()}; MLflow study run {study_run}")
    return res


def _check_data(study: Study) -> None:
    """Cheap checks of each non-synthetic dataset's list files before Ray starts."""
    from gist_ray.data import validate_splits

    seen = set()
    for cell in study.cells():
        if cell.dataset in seen or cell.dataset.source == "synthetic":
            continue
        seen.add(cell.dataset)
        cfg = build_config(_apply_overrides(study.base, dict(cell.overrides)))
        d = cfg.data
        if d.root is None:
            raise ConfigError(f"{study.source}: dataset {d.name}/{d.task}: data.root is not set "
                              f"(add data.root=/path/to/{d.name} to the command)")
        validate_splits(d, [s for s in (d.train_split, d.eval_split, d.test_split) if s])


def _log_study_metrics(c, run_id: str, analysis: dict, done: int, total: int) -> None:
    from gist_ray import tracking

    m = {"study/cells_done": float(done), "study/cells_total": float(total)}
    for f in analysis.get("fits", []):
        if "b" in f:
            m[f"fit/{_metric_key(f['method'])}/gist_{f['gist']}/b"] = float(f["b"])
    for r in analysis.get("gains", []):
        m[f"gain/{_metric_key(r['method'])}/{r['backbone']}"] = float(r["gain"])
    tracking.log_metrics(c, run_id, {k: v for k, v in m.items() if math.isfinite(v)}, step=0)


def _metric_key(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_./ -]", "_", text)


# ----------------------------------------------------------------------------- gist-ray report EXPERIMENT


def report(experiment: str, tracking_uri: str = "sqlite:///mlflow.db", out_dir: str | Path = "report",
           metric: str = "test/acc") -> list[Path]:
    """Table-2-shaped VTAB table and the scaling table (md/csv/tex) and plots from an MLflow experiment.

    Uses the FINISHED runs tagged with method/dataset that logged ``metric`` (no fallback: with ``test/acc``,
    the tuning trials of ``protocol: vtab`` sweeps, which never test, are left out and their refits kept).
    Backbone sizes are exact parameter counts for known backbones. Prints the Markdown tables; returns the paths.
    """
    from gist_ray.report import records_from_mlflow, scaling_table, vtab_table, write_report

    try:
        recs = records_from_mlflow(tracking_uri, experiment, metric=metric, fallback=None)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if not recs:
        raise ConfigError(f"experiment {experiment!r} at {tracking_uri}: no FINISHED run with tags method and "
                          f"dataset that logged {metric}")
    for r in recs:
        try:
            r["backbone_params"] = float(backbone_params(r["backbone"]))
        except Exception:  # noqa: BLE001 - unknown or unbuildable name: keep the estimate from the run
            pass
    paths = write_report(recs, out_dir, metric="acc", plots=False)
    from gist_ray.scaling import plots

    try:
        paths += plots.plot_all(recs, out_dir, metric="acc")
    except ValueError as exc:
        print(f"(plots skipped: {exc})")
    print(f"## {vtab_table(recs, 'acc').title}\n\n{vtab_table(recs, 'acc').to_markdown()}")
    print(f"## {scaling_table(recs, 'acc').title}\n\n{scaling_table(recs, 'acc').to_markdown()}")
    print(f"{len(recs)} runs of {experiment} ({metric}); files in {Path(out_dir).resolve()}")
    return paths
