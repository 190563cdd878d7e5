"""Tidy run records (``list[dict]``) and the seed-aware aggregation shared by plots and report tables.

A record holds ``backbone``, ``backbone_params``, ``method``, ``gist`` (bool), ``dataset``, ``seed``,
``trainable_params`` and an accuracy under ``acc``, ``test_acc`` or ``val_acc`` (first finite one wins unless a
metric is named). Duplicates of one (method, gist, backbone, dataset, seed) are averaged.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np

from gist_ray.scaling.intervals import LEVEL, MIN_DF, Interval, stratified_interval

Record = dict[str, Any]
# (method, gist, backbone) -> dataset -> seed -> accuracy
Grid = dict[tuple[str, bool, str], dict[str, dict[Any, float]]]
DEFAULT_METRICS = ("acc", "test_acc", "val_acc")


def as_records(data: Any) -> list[Record]:
    """A list of dicts from a list of mappings or anything with pandas' ``to_dict("records")``."""
    if hasattr(data, "to_dict") and not isinstance(data, dict):
        data = data.to_dict("records")
    return [dict(r) for r in data]


def finite_float(v: Any) -> float | None:
    """``v`` as a float when it is a finite number (MLflow strings included), else None."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def accuracy(record: Record, metric: str | None = None) -> float | None:
    """The record's accuracy: ``record[metric]``, or the first finite of acc / test_acc / val_acc."""
    for key in (metric,) if metric else DEFAULT_METRICS:
        v = finite_float(record.get(key))
        if v is not None:
            return v
    return None


def as_bool(v: Any) -> bool:
    """``gist`` flags from bools, ints or strings such as "true"/"false"."""
    if isinstance(v, str):
        return v.strip().lower() in ("1", "true", "yes", "y", "on")
    return bool(v)


def grid(records: Iterable[Record], metric: str | None = None) -> Grid:
    """Group accuracies by (method, gist, backbone) -> dataset -> seed, averaging duplicates."""
    acc: dict[tuple, dict[str, dict[Any, list[float]]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for r in records:
        v = accuracy(r, metric)
        if v is None:
            continue
        key = (str(r["method"]), as_bool(r.get("gist", False)), str(r.get("backbone", "")))
        acc[key][str(r["dataset"])][r.get("seed", 0)].append(v)
    return {k: {d: {s: float(np.mean(v)) for s, v in seeds.items()} for d, seeds in ds.items()}
            for k, ds in acc.items()}


def mean_field(records: Iterable[Record], key: tuple[str, bool, str], field: str) -> float | None:
    """Mean of a numeric field (e.g. ``trainable_params``) over the records of one (method, gist, backbone)."""
    vals = [finite_float(r.get(field)) for r in records
            if (str(r["method"]), as_bool(r.get("gist", False)), str(r.get("backbone", ""))) == key]
    vals = [v for v in vals if v is not None]
    return float(np.mean(vals)) if vals else None


@dataclass(frozen=True)
class Stat:
    """Mean over datasets of per-dataset seed means; ``std`` (ddof=1) over seeds of per-seed means."""

    mean: float
    std: float
    n_seeds: int


def summarize(by_dataset: dict[str, dict[Any, float]], datasets: Sequence[str] | None = None) -> Stat:
    """Stat over ``datasets`` (default: all present). ``std`` uses the seeds that every dataset has."""
    names = [d for d in (datasets if datasets is not None else by_dataset) if by_dataset.get(d)]
    if not names:
        return Stat(math.nan, math.nan, 0)
    mean = float(np.mean([np.mean(list(by_dataset[d].values())) for d in names]))
    common = set.intersection(*(set(by_dataset[d]) for d in names))
    per_seed = [np.mean([by_dataset[d][s] for d in names]) for s in common]
    std = float(np.std(per_seed, ddof=1)) if len(per_seed) > 1 else math.nan
    return Stat(mean, std, len(common))


def dataset_seed_interval(by_dataset: dict[str, dict[Any, float]], datasets: Sequence[str] | None = None,
                          level: float = LEVEL, min_df: int = MIN_DF) -> Interval:
    """Interval of ``summarize(...).mean`` (mean over datasets of each dataset's seed mean), seeds nested in
    datasets; "n too small" below ``min_df`` degrees of freedom (one dataset: fewer than 3 seeds).

    For a report cell: ``iv = dataset_seed_interval(by_ds, [d])``; ``iv.scaled(100).text(".1f")`` gives
    ``[lo, hi]`` or the reason there is none; ``iv.ok`` says which.
    """
    names = [d for d in (datasets if datasets is not None else by_dataset) if by_dataset.get(d)]
    return stratified_interval([list(by_dataset[d].values()) for d in names], level, min_df)


def common_seed_means(by_dataset: dict[str, dict[Any, float]], datasets: Sequence[str] | None = None
                      ) -> dict[Any, float]:
    """Seed -> mean over ``datasets`` (default all) for the seeds every one of them has (what plots show)."""
    names = [d for d in (datasets if datasets is not None else by_dataset) if by_dataset.get(d)]
    if not names:
        return {}
    common = sort_mixed(set.intersection(*(set(by_dataset[d]) for d in names)))
    return {s: float(np.mean([by_dataset[d][s] for d in names])) for s in common}


def backbone_sizes(records: Iterable[Record]) -> dict[str, float]:
    """Backbone -> parameter count (median over its records that carry ``backbone_params``)."""
    sizes: dict[str, list[float]] = defaultdict(list)
    for r in records:
        v = finite_float(r.get("backbone_params"))
        if v is not None and v > 0:
            sizes[str(r.get("backbone", ""))].append(v)
    return {b: float(np.median(v)) for b, v in sizes.items()}


def sort_mixed(values: Iterable[Any]) -> list[Any]:
    """Sorted naturally when comparable (seeds 2 < 10), else by their text."""
    values = list(values)
    try:
        return sorted(values)
    except TypeError:
        return sorted(values, key=str)


def ordered(values: Iterable[Any]) -> list[Any]:
    """Unique values in order of first appearance."""
    return list(dict.fromkeys(values))
