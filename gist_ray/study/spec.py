"""What a study is: a base run config and a grid whose every combination is one *cell*.

A cell is a set of ``{config path: value}`` overrides of the base (the trial config of the sweep that runs it);
:meth:`Study.cell_config` builds its run config once. Loading and validating a study file is
:mod:`gist_ray.study.load`.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from dataclasses import dataclass, field
from typing import Any, Optional

from gist_ray.config import Config, Variants
from gist_ray.errors import ConfigError
from gist_ray.methods import METHODS


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
    """A validated study. ``base`` is the base run config (its paths absolute) without the base method's knobs:
    those (``base_knobs``) travel with the cells of ``base_method`` only."""

    name: str
    base: Config
    backbones: list[str]
    methods: list[MethodEntry]
    gist: list[bool]
    datasets: list[DatasetEntry]
    seeds: list[int]
    n_train: list[Optional[int]]
    output: str
    metric: str = "test/acc"
    max_concurrent_trials: int = 2
    source: str = ""
    base_method: str = "gist_adapter"
    base_knobs: dict = field(default_factory=dict)
    _cells: list[Cell] = field(default_factory=list, repr=False)
    _variants: Optional[Variants] = field(default=None, repr=False)

    @property
    def tracking_uri(self) -> str:
        return self.base.tracking.uri

    @property
    def experiment(self) -> str:
        return self.base.tracking.experiment

    @property
    def variants(self) -> Variants:
        """The base and every config derived from it by overrides, each built once."""
        if self._variants is None:
            self._variants = Variants(self.base)
        return self._variants

    def cells(self) -> list[Cell]:
        """Every cell, seed-major (all sizes of seed 0 first), then dataset, n_train, backbone, method, GIST."""
        if not self._cells:
            combos = itertools.product(self.seeds, self.datasets, self.n_train, self.backbones, self.methods, self.gist)
            self._cells = [Cell(i, b, m, g, d, s, n, tuple(cell_overrides(self, b, m, g, d, s, n).items()))
                           for i, (s, d, n, b, m, g) in enumerate(combos)]
        return self._cells

    def cell_config(self, cell: Cell) -> Config:
        """The cell's validated run config (built once)."""
        return self.variants.get(dict(cell.overrides))

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


def scalar(v: Any) -> bool:
    return v is None or isinstance(v, (str, int, float, bool))


@functools.lru_cache(maxsize=None)
def method_defaults(name: str) -> dict[str, Any]:
    out = {}
    for f in dataclasses.fields(METHODS.get(name).config_cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            out[f.name] = f.default_factory()  # type: ignore[misc]
    return out


def own_knobs(study: Study, method: MethodEntry) -> dict[str, Any]:
    own = dict(method.knobs)
    if method.name == study.base_method:
        own = {**study.base_knobs, **own}
    return own


def knob_names(study: Study) -> list[str]:
    """Every method knob a cell sets: the entries' knobs and the base method's own knobs."""
    names: list[str] = []
    for m in study.methods:
        names += [k for k in own_knobs(study, m) if k not in names]
    return names


def cell_overrides(study: Study, backbone: str, method: MethodEntry, gist: bool, dataset: DatasetEntry, seed: int,
                   n_train: Optional[int]) -> dict[str, Any]:
    """The cell's sweep-trial overrides. Every cell sets every key (a sweep's initial points must be complete);
    a knob the cell's method does not have gets a placeholder that the sweep layer drops."""
    own = own_knobs(study, method)
    out: dict[str, Any] = {"model.backbone": backbone, "method.name": method.name}
    defaults = None
    for knob in knob_names(study):
        if knob in own:
            out[f"method.{knob}"] = own[knob]
            continue
        if defaults is None:
            try:
                defaults = method_defaults(method.name)
            except KeyError:  # unknown method: the validation names it
                defaults = {}
        v = defaults.get(knob, 0)  # a knob the method lacks: a placeholder the sweep layer drops
        if not scalar(v):
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
