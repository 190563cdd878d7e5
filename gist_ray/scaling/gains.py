"""GIST gains with seeds nested in datasets, and the paired tests that go with them.

A *pair* is the run with GIST and the run without it that share method, backbone, dataset and seed. A gain is
averaged first over a dataset's paired seeds, then over datasets (the headline of the paper's tables: the mean
over datasets). Its interval is ``stratified_interval`` over datasets: seeds are the replicates, the datasets
the fixed benchmark. Seed labels are not matched across datasets (seed 0 of one task has nothing to do with
seed 0 of another); only within a dataset do the two sides of a pair share a seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from scipy import stats

from gist_ray.scaling.intervals import LEVEL, MIN_DF, Alternative, Interval, stratified_t_test
from gist_ray.scaling.intervals import stratified_interval
from gist_ray.scaling.records import sort_mixed

ByDataset = dict[str, dict[Any, float]]  # dataset -> seed -> accuracy


def paired_differences(with_: ByDataset, without: ByDataset) -> dict[str, dict[Any, float]]:
    """dataset -> seed -> (with - without) for the seeds both sides have on that dataset (datasets in order)."""
    out: dict[str, dict[Any, float]] = {}
    for d, on in with_.items():
        off = without.get(d, {})
        seeds = sort_mixed(s for s in on if s in off)
        if seeds:
            out[d] = {s: on[s] - off[s] for s in seeds}
    return out


@dataclass(frozen=True)
class PairedGain:
    """Gain (with - without, mean over datasets of mean over paired seeds) at one method and backbone."""

    interval: Interval
    acc_with: float  # the same average of the paired runs' accuracies
    acc_without: float
    datasets: int
    seeds: int  # fewest paired seeds on any dataset
    per_seed: dict[Any, float]  # seed -> gain averaged over datasets, for seeds every dataset has (for display)

    @property
    def gain(self) -> float:
        return self.interval.estimate


def paired_gain(with_: ByDataset, without: ByDataset, level: float = LEVEL, min_df: int = MIN_DF) -> PairedGain:
    """GIST gain over the pairs of ``with_`` and ``without`` with its nested (datasets x seeds) interval."""
    diffs = paired_differences(with_, without)
    strata = [np.array(list(by_seed.values())) for by_seed in diffs.values()]
    iv = stratified_interval(strata, level, min_df, unit="seeds")
    acc_on = float(np.mean([np.mean([with_[d][s] for s in diffs[d]]) for d in diffs])) if diffs else math.nan
    acc_off = float(np.mean([np.mean([without[d][s] for s in diffs[d]]) for d in diffs])) if diffs else math.nan
    common = set.intersection(*(set(v) for v in diffs.values())) if diffs else set()
    per_seed = {s: float(np.mean([diffs[d][s] for d in diffs])) for s in sort_mixed(common)}
    seeds = min((len(v) for v in diffs.values()), default=0)
    return PairedGain(iv, acc_on, acc_off, len(diffs), seeds, per_seed)


def min_wilcoxon_p(n: int, alternative: Alternative = "two-sided") -> float:
    """The smallest p an exact signed-rank test can return with ``n`` nonzero differences (all of one sign)."""
    return min(1.0, (2.0 if alternative == "two-sided" else 1.0) * 0.5**n)


@dataclass(frozen=True)
class PairedTest:
    """GIST on vs off over cells (e.g. backbone x dataset), seeds paired within each cell.

    ``t``: stratified t-test over the seed pairs (unit of pairing: the seed within a cell; cells are strata),
    with the interval of the mean gain over cells. ``wilcoxon``: signed-rank test over the cells' mean gains
    (unit: the cell); NaN with ``wilcoxon_reason`` when no outcome of ``cells`` units could reach ``1 - level``.
    """

    cells: int
    pairs: int
    mean_gain: float
    interval: Interval
    t_p: float
    wilcoxon_p: float
    wilcoxon_reason: str
    alternative: str


def paired_test(cells: Sequence[object], alternative: Alternative = "two-sided", level: float = LEVEL,
                min_df: int = MIN_DF) -> PairedTest:
    """Tests of "GIST changes accuracy" from per-cell arrays of paired differences (one value per seed)."""
    strata = [a[np.isfinite(a)] for a in (np.asarray(c, dtype=float).ravel() for c in cells)]
    strata = [a for a in strata if a.size]
    test = stratified_t_test(strata, alternative, level, min_df, unit="seeds")
    means = np.array([a.mean() for a in strata])
    nonzero = int(np.count_nonzero(means))
    if nonzero == 0 and means.size:
        wil_p, why = 1.0, ""
    elif min_wilcoxon_p(nonzero, alternative) > 1 - level:
        wil_p, why = math.nan, f"n too small: {means.size} cells (an exact signed-rank p cannot reach {1 - level:.2g})"
    else:
        wil_p, why = float(stats.wilcoxon(means, alternative=alternative).pvalue), ""
    return PairedTest(len(strata), int(sum(a.size for a in strata)), test.interval.estimate, test.interval, test.p,
                      wil_p, why, alternative)
