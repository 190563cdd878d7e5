"""Sweep files: a base run config, search settings, and a search space, validated before Ray starts.

A YAML sweep file::

    name: quickstart
    base: {model: {backbone: vit_synth_s}, train: {epochs: 6}}   # or a path to a run-config YAML
    search: {num_samples: 8, max_concurrent_trials: 2, metric: val/acc, mode: max, sampler: tpe, scheduler: asha}
    space:
      gist.lam: {choice: [0.25, 0.5, 0.75]}
      train.lr: {loguniform: [1.0e-4, 1.0e-2]}

Space keys are run-config paths (``a.b``). Distributions: ``choice``, ``uniform``, ``loguniform``, ``int``,
``logint``, ``quniform`` ([low, high, q]), ``fixed`` (or a bare value). Method knobs (``method.bottleneck``)
apply only to trials whose method has them. A ``.py`` sweep file defines ``SWEEP`` (the same mapping, minus
``space``) and ``space(trial)``, an Optuna define-by-run function for conditional spaces.

``per_task`` maps a ``data.task`` to a recipe of ``{a.b: value}``: set in the base config, except for keys the space
searches, whose recipe values make the sweep's first trial (the reference's per-dataset setting is tried first,
then the search explores around it).
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Optional

import optuna

from gist_ray.config import Config, Variants, absolute_paths, any_method_knobs, build_config
from gist_ray.errors import ConfigError
from gist_ray.objectives import objective_knobs
from gist_ray.typed_config import from_dict, load_yaml, parse_override, set_path

DISTRIBUTIONS = ("choice", "uniform", "loguniform", "int", "logint", "quniform", "fixed")


@dataclass
class SearchConfig:
    """How the sweep searches: trials, concurrency, objective(s), sampler, scheduler, budget."""

    num_samples: int = 8
    max_concurrent_trials: int = 2
    metric: str = "val/acc"
    mode: Literal["max", "min"] = "max"
    # multi-objective (NSGA-II): extra objectives as metric -> mode, e.g. {"params/total": "min"}
    objectives: dict = field(default_factory=dict)
    sampler: Literal["tpe", "random", "grid", "nsga2"] = "tpe"
    scheduler: Literal["asha", "hyperband", "none"] = "asha"
    grace_period: int = 1
    reduction_factor: int = 2
    seed: int = 0
    max_trainable_params: Optional[int] = None
    trial_retries: int = 0
    # configurations evaluated first (e.g. the paper's defaults), as {space key: value} mappings
    initial_points: list = field(default_factory=list)
    # after the search: rerun the best `repeat_best` configurations once per seed in `repeat_seeds`
    repeat_best: int = 0
    repeat_seeds: list = field(default_factory=list)
    # test every tuning trial at its end too (off: tuning never sees the test split, and saves that pass; repeats
    # and refits, the final runs, always test)
    test_trials: bool = False

    def check(self, where: str) -> None:
        w = where or "search"
        if self.num_samples < 1:
            raise ConfigError(f"{w}.num_samples: must be >= 1, got {self.num_samples}")
        if self.max_concurrent_trials < 1:
            raise ConfigError(f"{w}.max_concurrent_trials: must be >= 1, got {self.max_concurrent_trials}")
        if self.grace_period < 1 or self.reduction_factor < 2:
            raise ConfigError(f"{w}.grace_period/reduction_factor: need grace_period >= 1 and reduction_factor >= 2")
        for k, v in self.objectives.items():
            if v not in ("max", "min"):
                raise ConfigError(f"{w}.objectives.{k}: mode must be max or min, got {v!r}")
        if self.objectives and self.sampler not in ("nsga2", "random"):
            raise ConfigError(f"{w}.sampler: multi-objective sweeps need sampler nsga2 or random, got {self.sampler}")
        if self.repeat_best < 0 or (self.repeat_best and not self.repeat_seeds):
            raise ConfigError(f"{w}.repeat_best: needs repeat_seeds, a non-empty list of integer seeds")
        if self.max_trainable_params is not None and self.max_trainable_params < 1:
            raise ConfigError(f"{w}.max_trainable_params: must be >= 1, got {self.max_trainable_params}")
        for i, point in enumerate(self.initial_points):
            if not isinstance(point, dict):
                raise ConfigError(f"{w}.initial_points[{i}]: must be a mapping of space keys to values")
        if self.objectives and self.scheduler != "none":
            raise ConfigError(f"{w}.scheduler: early stopping needs one objective; use scheduler: none")


@dataclass
class Dist:
    """One dimension of the space."""

    kind: str
    args: list

    def probe_values(self) -> list:
        """Values that exercise the config validation (ends of ranges, every choice)."""
        if self.kind == "choice":
            return list(self.args)
        if self.kind == "fixed":
            return [self.args[0]]
        return [self.args[0], self.args[1]]


# config sections whose other keys are the knobs of the chosen ``<section>.name``
KNOBS = {"method": any_method_knobs, "objective": objective_knobs}

# how a sweep turns trials into reported numbers; every run records its protocol
PROTOCOLS = {
    "none": "the base config's splits as given",
    # honest VTAB-1k: tune on train800 / select on val200, refit the best on train800val200, test once
    "vtab": "select on val200, refit on train800val200, test once",
    # what the official GIST code reports: train on train800val200, evaluate test every epoch, best epoch
    "paper": "test evaluated every epoch, best epoch reported (comparable with published tables, not a clean test)",
}
PAPER_METRIC = "test/best_acc"


@dataclass
class SweepSpec:
    """A validated sweep; ``base`` is its built base run config (local paths absolute), ``protocol`` one of
    :data:`PROTOCOLS`. A trial's config is ``config_for(its sampled overrides)``, built once per process."""

    name: str
    base: Config
    search: SearchConfig
    space: dict[str, Dist] = field(default_factory=dict)
    define_by_run: Optional[Callable] = None
    source: str = ""
    protocol: str = "none"
    variants: Optional[Variants] = field(default=None, repr=False, compare=False)
    final_test_split: Optional[str] = None  # the split the final runs (repeats) test on, when trials do not

    def config_for(self, overrides: dict[str, Any]) -> Config:
        """The run config of a trial with these sampled ``{a.b: value}`` overrides (knobs its method lacks
        dropped), validated and cached."""
        if self.variants is None:
            self.variants = Variants(self.base)
        elif self.variants.base is not self.base:
            self.variants = self.variants.rebased(self.base)
        return self.variants.get(overrides)

    def names_of(self, section: str) -> list[str]:
        """Every method (``section="method"``) or objective a trial of this sweep can use."""
        d = self.space.get(f"{section}.name")
        if d is not None:
            return [str(v) for v in d.probe_values()]
        return [getattr(self.base, section).name]


def parse_dist(value: Any, where: str) -> Dist:
    if not isinstance(value, dict):
        return Dist("fixed", [value])
    if len(value) != 1:
        raise ConfigError(f"{where}: a distribution is one key, one of {', '.join(DISTRIBUTIONS)}; got {list(value)}")
    (kind, args), = value.items()
    if kind not in DISTRIBUTIONS:
        raise ConfigError(f"{where}: unknown distribution {kind!r}; known: {', '.join(DISTRIBUTIONS)}")
    if kind == "fixed":
        return Dist(kind, [args])
    if kind == "choice":
        if not isinstance(args, list) or not args:
            raise ConfigError(f"{where}.choice: needs a non-empty list")
        for v in args:
            if not isinstance(v, (str, int, float, bool)) and v is not None:
                raise ConfigError(f"{where}.choice: values must be scalars, got {v!r}")
        return Dist(kind, list(args))
    need = 3 if kind == "quniform" else 2
    if not isinstance(args, list) or len(args) != need:
        raise ConfigError(f"{where}.{kind}: needs [{'low, high, q' if need == 3 else 'low, high'}], got {args!r}")
    try:
        nums = [float(a) for a in args]
    except (TypeError, ValueError):
        raise ConfigError(f"{where}.{kind}: bounds must be numbers, got {args!r}") from None
    lo, hi = nums[0], nums[1]
    if lo > hi:
        raise ConfigError(f"{where}.{kind}: low {args[0]} > high {args[1]}")
    if kind in ("loguniform", "logint") and lo <= 0:
        raise ConfigError(f"{where}.{kind}: low must be > 0 on a log scale, got {args[0]}")
    if kind in ("int", "logint"):
        if not all(float(a).is_integer() for a in args):
            raise ConfigError(f"{where}.{kind}: bounds must be integers, got {args!r}")
        return Dist(kind, [int(lo), int(hi)])
    if kind == "quniform" and nums[2] <= 0:
        raise ConfigError(f"{where}.quniform: q must be > 0, got {args[2]}")
    return Dist(kind, nums)


def _validate(spec: SweepSpec) -> None:
    src = spec.source or spec.name
    base = spec.base
    if spec.search.scheduler == "hyperband" and base.train.eval_every > 1 and not spec.search.metric.startswith("train/"):
        raise ConfigError(f"{src}: search.scheduler: hyperband ranks trials at epochs of its own choosing and needs "
                          f"{spec.search.metric} at each of them, but train.eval_every is {base.train.eval_every}; "
                          f"use asha (it judges a trial at its first evaluation past each rung) or train.eval_every=1")
    for key, dist in spec.space.items():
        where = f"{src}: space.{key}"
        section = key.split(".", 1)[0]
        if section in KNOBS and key != f"{section}.name":  # a method's or an objective's own knob
            knob = key.split(".", 2)[1]
            names, knobs_of = spec.names_of(section), KNOBS[section]
            owners = [m for m in names if knob in (knobs_of(m) or set())]
            if not owners:
                raise ConfigError(f"{where}: no {section} in this sweep ({', '.join(names)}) has a knob {knob!r}")
            probe = {f"{section}.name": owners[0]}
        else:
            probe = {}
        for v in dist.probe_values():
            try:
                spec.config_for({**probe, key: v})
            except ConfigError as exc:
                raise ConfigError(f"{where}: value {v!r} is invalid: {exc}") from None
    for i, point in enumerate(spec.search.initial_points):
        where = f"{src}: search.initial_points[{i}]"
        unknown = [k for k in point if k not in spec.space]
        if unknown and spec.define_by_run is None:
            raise ConfigError(f"{where}: keys not in the space: {', '.join(unknown)}")
        for k, v in point.items():
            d = spec.space.get(k)
            if d is not None and d.kind in ("choice", "fixed") and v not in d.probe_values():
                raise ConfigError(f"{where}.{k}: {v!r} is not one of {d.probe_values()}")
        try:
            spec.config_for(point)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    if spec.define_by_run is not None:
        _validate_define_by_run(spec)


def _validate_define_by_run(spec: SweepSpec, probes: int = 16) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(probes):
        trial = study.ask()
        fixed = spec.define_by_run(trial) or {}
        overrides = {**trial.params, **fixed}
        try:
            spec.config_for(overrides)
        except ConfigError as exc:
            raise ConfigError(f"{spec.source}: space() proposed {overrides}: {exc}") from None
        study.tell(trial, 0.0)


def _load_python(path: Path) -> tuple[dict, Callable]:
    mod_spec = importlib.util.spec_from_file_location(f"gist_ray_space_{path.stem}", path)
    module = importlib.util.module_from_spec(mod_spec)
    # registered like an imported module, so space() pickles by reference (Tune saves the searcher with it)
    sys.modules[mod_spec.name] = module
    try:
        mod_spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001 - report any import error with the file name
        raise ConfigError(f"{path}: cannot import: {exc!r}") from None
    if not hasattr(module, "SWEEP") or not callable(getattr(module, "space", None)):
        raise ConfigError(f"{path}: a Python sweep file defines SWEEP (a mapping) and space(trial)")
    return dict(module.SWEEP), module.space


def first_trial(base: dict, space: dict[str, Dist], recipe: dict[str, Any], where: str) -> dict[str, Any]:
    """A complete point of ``space``: the recipe's values, every other searched key at its value in ``base`` (or,
    for a choice, its first value)."""
    point = {}
    for key, dist in space.items():
        node: Any = base
        for part in key.split("."):
            node = node.get(part, dataclasses.MISSING) if isinstance(node, dict) else dataclasses.MISSING
        if key in recipe:
            point[key] = recipe[key]
        elif node is not dataclasses.MISSING:
            point[key] = node
        elif dist.kind in ("choice", "fixed"):
            point[key] = dist.probe_values()[0]
        else:
            raise ConfigError(f"{where}: space.{key} has no value for the first trial; set it in base")
    return point


def load_sweep(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> SweepSpec:
    """Load and validate a sweep file. ``overrides`` (``a.b=v``) apply to the base run config, except
    ``search.<setting>=v``, which changes the search settings (``search.max_concurrent_trials=4``)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: sweep file not found")
    define_by_run = None
    if path.suffix == ".py":
        raw, define_by_run = _load_python(path)
    else:
        raw = load_yaml(path)
    raw = copy.deepcopy(raw)
    search_overrides = [t for t in overrides if parse_override(t)[0][0] == "search"]
    overrides = [t for t in overrides if t not in search_overrides]
    for text in search_overrides:
        keys, value = parse_override(text)
        set_path(raw, keys, value)
    allowed = {"name", "base", "search", "space", "overrides", "protocol", "per_task"}
    for key in raw:
        if key not in allowed:
            raise ConfigError(f"{path}: {key}: unknown top-level key; known: {', '.join(sorted(allowed))}")
    base = raw.get("base") or {}
    if isinstance(base, str):
        base_path = Path(base) if Path(base).is_absolute() else path.parent / base
        if not base_path.is_file():
            base_path = Path(base)
        base = load_yaml(base_path)
    if not isinstance(base, dict):
        raise ConfigError(f"{path}: base: must be a mapping or a path to a run config")
    base = copy.deepcopy(base)
    for text in list(raw.get("overrides") or []) + list(overrides):
        keys, value = parse_override(text)
        set_path(base, keys, value)
    per_task = raw.get("per_task") or {}
    if isinstance(per_task, str):  # a file of recipes shared by several sweep files
        per_task = load_yaml(path.parent / per_task)
    if not isinstance(per_task, dict):
        raise ConfigError(f"{path}: per_task: must map a data.task to {{config path: value}} overrides")
    task = base.get("data", {}).get("task", "shapes")
    recipe = per_task.get(task) or {}
    if not isinstance(recipe, dict):
        raise ConfigError(f"{path}: per_task.{task}: must be a mapping of config paths to values")
    given = {".".join(parse_override(t)[0]) for t in overrides}
    searched = set(raw["space"]) if isinstance(raw.get("space"), dict) else set()
    first = {}  # per-task values of searched keys: the first trial
    for key, value in recipe.items():
        if key in given:  # command-line overrides win over the per-task recipe
            continue
        if key in searched:
            first[str(key)] = value
        else:
            set_path(base, str(key).split("."), value)
    protocol = str(raw.get("protocol") or "none")
    if protocol not in PROTOCOLS:
        raise ConfigError(f"{path}: protocol: unknown {protocol!r}; known: {', '.join(PROTOCOLS)}")
    data = base.setdefault("data", {})
    if protocol == "vtab":
        data.update({"train_split": "train", "eval_split": "val", "test_split": None})  # test never reaches the tuner
    elif protocol == "paper":
        data.update({"train_split": "trainval", "eval_split": "test", "test_split": None})
        base.setdefault("train", {})["eval_every"] = 1
    search = from_dict(SearchConfig, raw.get("search") or {}, "search")
    if protocol == "paper" and search.metric != PAPER_METRIC:
        raise ConfigError(f"{path}: search.metric: protocol paper reports {PAPER_METRIC} (the best epoch's test "
                          f"accuracy, as the official code does); got {search.metric}")
    space_raw = raw.get("space") or {}
    if define_by_run is not None and space_raw:
        raise ConfigError(f"{path}: a Python sweep file defines its space in space(trial), not in SWEEP['space']")
    if not isinstance(space_raw, dict):
        raise ConfigError(f"{path}: space: must be a mapping of config paths to distributions")
    space = {str(k): parse_dist(v, f"{path}: space.{k}") for k, v in space_raw.items()}
    if first:
        search.initial_points = [first_trial(base, space, first, f"{path}: per_task.{task}"), *search.initial_points]
    base_cfg = absolute_paths(build_config(base, source=f"{path}: base"))
    final_test = base_cfg.data.test_split
    if final_test and not search.test_trials:  # tuning trials select on eval_split; the final runs test
        base_cfg = dataclasses.replace(base_cfg, data=dataclasses.replace(base_cfg.data, test_split=None))
    spec = SweepSpec(str(raw.get("name") or path.stem), base_cfg, search, space, define_by_run, str(path), protocol,
                     final_test_split=final_test)
    if protocol in ("vtab", "paper"):
        bad = [k for k in space if k.startswith("data.") and k.endswith("_split") or k == "train.eval_every"]
        if bad:
            raise ConfigError(f"{path}: space.{bad[0]}: protocol {protocol} fixes the splits; do not search them")
    if search.sampler == "grid":
        bad = [k for k, d in space.items() if d.kind not in ("choice", "fixed")]
        if bad:
            raise ConfigError(f"{path}: search.sampler grid needs choice/fixed dimensions only; not: {', '.join(bad)}")
    _validate(spec)
    return spec

