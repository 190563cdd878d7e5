"""Coverage of the study tables' 95 % intervals, measured by simulation (the figures docs/scaling.md quotes).

Seed intervals (normal noise, truth 0): the Student t interval at any n and the tables' rule on top of it (no
interval below 3 seeds); the Welch-stratified interval (seeds nested in 3 datasets of noise 1:3:10, and in 3
equal cells) without its minimum, so that 2 seeds are measured too; for comparison, the percentile bootstrap
the tables used before and BCa (``scipy.stats.bootstrap``), also at larger n and under skewed (log-normal)
noise, which is why the tables never bootstrap. Fits: the Wald interval of the exponent ``b`` from
``fit_scaling_law`` (seed means with noise sd 0.005 around ``30 N^-0.3 + 0.12``, N from 5e6 to 1e9).

    python bench/interval_coverage.py            # 10000 simulations per seed design, 400 per fit design
    python bench/interval_coverage.py --quick    # 1000 / 100: a smoke run
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import warnings

import numpy as np
from scipy import stats

from gist_ray.scaling.fit import fit_scaling_law, power_law
from gist_ray.scaling.intervals import mean_interval, stratified_interval, t_interval

SEEDS = (2, 3, 5, 10)
LARGE = (20, 30, 50, 100)
SDS = np.array([1.0, 3.0, 10.0])
TRUE = (30.0, 0.3, 0.12)


def parse(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sims", type=int, default=10000, help="simulated studies per seed design")
    ap.add_argument("--fit-sims", type=int, default=400, help="simulated studies per fit design")
    ap.add_argument("--resamples", type=int, default=999, help="bootstrap resamples (percentile, BCa)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="1000 / 100 simulations, 199 resamples, no large n")
    return ap.parse_args(argv)


def _per_sample(interval, draws: np.ndarray, truth: float = 0.0) -> tuple[float, float]:
    """(coverage, share of samples that got an interval) of ``interval`` over the first axis of ``draws``."""
    ivs = [interval(x) for x in draws]
    given = [iv for iv in ivs if iv.ok]
    return float(np.mean([iv.contains(truth) for iv in ivs])), len(given) / len(ivs)


def _bootstrap(draws: np.ndarray, method: str, resamples: int, seed: int, truth: float = 0.0) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # degenerate BCa samples (n = 2) warn; they count as misses
        res = stats.bootstrap((draws,), np.mean, axis=-1, vectorized=True, method=method, n_resamples=resamples,
                              batch=max(1, 2_000_000 // (resamples * draws.shape[-1])), random_state=seed)
    lo, hi = res.confidence_interval
    return float(np.mean((lo <= truth) & (truth <= hi)))


def seed_rows(args) -> list[dict]:
    rng = np.random.default_rng(args.seed)
    rows = []

    def add(interval: str, design: str, n: int, cov: float, given: float = 1.0) -> None:
        rows.append({"interval": interval, "design": design, "n": n, "coverage": cov, "given": given})

    for n in SEEDS:
        x = rng.normal(0.0, 1.0, (args.sims, n))
        add("t", "1 dataset", n, *_per_sample(t_interval, x))
        add("t, tables' rule (>= 3 seeds)", "1 dataset", n, *_per_sample(mean_interval, x))
        add("percentile bootstrap (before)", "1 dataset", n, _bootstrap(x, "percentile", args.resamples, args.seed))
        add("BCa", "1 dataset", n, _bootstrap(x, "BCa", args.resamples, args.seed))
        nested = rng.normal(0.0, 1.0, (args.sims, 3, n)) * SDS[None, :, None]
        add("Welch-stratified t", "3 datasets, sd 1:3:10", n,
            *_per_sample(lambda s: stratified_interval(s, min_df=1), nested))
        equal = rng.normal(0.0, 1.0, (args.sims, 3, n))
        add("Welch-stratified t", "3 equal cells", n, *_per_sample(lambda s: stratified_interval(s, min_df=1), equal))
    for n in () if args.quick else LARGE:
        x = rng.normal(0.0, 1.0, (args.sims, n))
        add("t", "1 dataset", n, *_per_sample(t_interval, x))
        add("BCa", "1 dataset", n, _bootstrap(x, "BCa", args.resamples, args.seed))
        skew = rng.lognormal(0.0, 1.0, (args.sims, n))
        add("t", "1 dataset, log-normal", n, *_per_sample(t_interval, skew, math.exp(0.5)))
        add("BCa", "1 dataset, log-normal", n, _bootstrap(skew, "BCa", args.resamples, args.seed, math.exp(0.5)))
    return rows


def fit_rows(args) -> list[dict]:
    rng = np.random.default_rng(args.seed + 1)
    rows = []
    for k, law in ((3, "power"), (4, "power"), (5, "power"), (5, "saturating"), (6, "saturating"), (8, "saturating")):
        sizes = np.geomspace(5e6, 1e9, k)
        truth = (30.0, 0.3, 0.0) if law == "power" else TRUE
        hits, given = 0, 0
        for _ in range(args.fit_sims):
            err = power_law(sizes, *truth) + rng.normal(0.0, 0.005, k)
            res = fit_scaling_law(sizes, err, law=law, min_df=1)  # min_df=1: measure the 1-df case too
            lo, hi = res.ci["b"]
            given += math.isfinite(lo)
            hits += math.isfinite(lo) and lo <= truth[1] <= hi
        rows.append({"interval": f"Wald t of b, {law} law", "design": f"{k} sizes", "n": k,
                     "coverage": hits / args.fit_sims, "given": given / args.fit_sims})
    return rows


def main(argv=None) -> list[dict]:
    args = parse(argv)
    if args.quick:
        args.sims, args.fit_sims, args.resamples = min(args.sims, 1000), min(args.fit_sims, 100), 199
    t0 = time.perf_counter()
    rows = seed_rows(args) + fit_rows(args)
    print(f"95 % interval coverage by simulation ({args.sims} studies per seed design, {args.fit_sims} per fit "
          f"design, {args.resamples} bootstrap resamples; binomial sd at 95 %: "
          f"{math.sqrt(0.95 * 0.05 / args.sims):.4f} / {math.sqrt(0.95 * 0.05 / args.fit_sims):.4f})")
    print(f"{'interval':<32} {'design':<24} {'n':>4} {'coverage':>9} {'given':>6}")
    for r in rows:
        print(f"{r['interval']:<32} {r['design']:<24} {r['n']:>4} {r['coverage']:>9.4f} {r['given']:>6.0%}")
    print(f"({time.perf_counter() - t0:.0f} s; n = seeds per dataset or cell, or sizes for fits; "
          f"given = share of simulated studies that got an interval; coverage counts a missing interval as a miss)")
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
