"""Saturating power-law fits ``err = a * N^-b + c``, bootstrap CIs over seeds, GIST gains and paired tests.

``N`` is backbone parameters or training compute; ``err`` is an error rate in [0, 1] (``1 - accuracy``).
All functions are pure: numpy arrays in, small dataclasses out. Per-size seed values may be a 2-D array
``(n_sizes, n_seeds)`` (NaN = missing) or a ragged sequence of 1-D arrays.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Literal, Sequence

import numpy as np
from scipy import optimize, stats

Alternative = Literal["two-sided", "greater", "less"]

# bounds on (A, b, c) where A = a * N_ref^-b is the reducible error at the geometric-mean size N_ref
_LOWER = (1e-12, 1e-6, 0.0)
_UPPER = (1e3, 10.0, 1.0)


def power_law(n: np.ndarray | float, a: float, b: float, c: float) -> np.ndarray:
    """``a * n^-b + c``, evaluated in log space so that huge ``a`` / ``n`` do not overflow."""
    n = np.asarray(n, dtype=float)
    return np.exp(math.log(a) - b * np.log(n)) + c


@dataclass(frozen=True)
class PowerLawFit:
    """Fitted ``err = a * N^-b + c``; ``rmse`` in error units, ``converged`` False if curve_fit gave up."""

    a: float
    b: float
    c: float
    rmse: float
    n_points: int
    converged: bool = True

    def predict(self, n: np.ndarray | float) -> np.ndarray:
        return power_law(n, self.a, self.b, self.c)

    def params(self) -> dict[str, float]:
        return {"a": self.a, "b": self.b, "c": self.c}


def _rows(values: object) -> list[np.ndarray]:
    """Per-size 1-D float arrays with NaNs dropped, from a 2-D array or a ragged sequence."""
    if isinstance(values, np.ndarray) and values.ndim == 1:
        values = values[:, None]
    rows = [np.asarray(r, dtype=float).ravel() for r in values]  # type: ignore[union-attr]
    return [r[np.isfinite(r)] for r in rows]


def _initial_guess(x: np.ndarray, err: np.ndarray) -> tuple[float, float, float]:
    """Grid over the floor ``c``; for each, a log-linear fit gives ``A`` and ``b``; keep the best SSE."""
    lo = max(float(err.min()), 0.0)
    best, best_sse = (max(float(err.mean()) - lo, 1e-3), 0.1, 0.0), math.inf
    for c in np.linspace(0.0, 0.99 * lo, 25):
        r = err - c
        ok = r > 0
        if ok.sum() < 2 or np.ptp(x[ok]) == 0:
            continue
        slope, intercept = np.polyfit(x[ok], np.log(r[ok]), 1)
        b = float(np.clip(-slope, 1e-3, _UPPER[1]))
        big_a = float(np.clip(math.exp(intercept), _LOWER[0], _UPPER[0]))
        sse = float(np.sum((big_a * np.exp(-b * x) + c - err) ** 2))
        if sse < best_sse:
            best, best_sse = (big_a, b, float(c)), sse
    return best


def _inside(p: Sequence[float]) -> list[float]:
    """Clip a parameter vector strictly inside the bounds (curve_fit rejects p0 on the boundary)."""
    out = []
    for v, lo, hi in zip(p, _LOWER, _UPPER):
        eps = 1e-9 * max(1.0, abs(hi - lo))
        out.append(float(np.clip(v, lo + eps, hi - eps)))
    return out


def fit_power_law(n: Sequence[float] | np.ndarray, err: Sequence[float] | np.ndarray,
                  p0: tuple[float, float, float] | None = None) -> PowerLawFit:
    """Least-squares fit of ``err = a * N^-b + c`` with ``a > 0``, ``b > 0``, ``0 <= c <= 1``.

    Fitted in ``x = log(N / N_ref)`` (``N_ref`` = geometric mean of ``N``), which keeps the problem well
    scaled for N from 1e5 to 1e12. ``p0`` is ``(a, b, c)`` in the original units; by default a grid search
    over ``c`` with log-linear fits chooses it.
    """
    n_arr, e = np.asarray(n, dtype=float).ravel(), np.asarray(err, dtype=float).ravel()
    if n_arr.shape != e.shape:
        raise ValueError(f"N and err differ in length: {n_arr.size} vs {e.size}")
    ok = np.isfinite(n_arr) & np.isfinite(e)
    n_arr, e = n_arr[ok], e[ok]
    if np.any(n_arr <= 0):
        raise ValueError("N must be positive")
    if e.size < 3 or np.unique(n_arr).size < 2:
        raise ValueError(f"need >= 3 points over >= 2 distinct N, got {e.size} points")
    log_ref = float(np.mean(np.log(n_arr)))
    x = np.log(n_arr) - log_ref
    if p0 is None:
        guess = _initial_guess(x, e)
    else:
        guess = (p0[0] * math.exp(-p0[1] * log_ref), p0[1], p0[2])

    def model(xv: np.ndarray, big_a: float, b: float, c: float) -> np.ndarray:
        return big_a * np.exp(-b * xv) + c

    def jac(xv: np.ndarray, big_a: float, b: float, c: float) -> np.ndarray:
        ex = np.exp(-b * xv)
        return np.stack([ex, -big_a * xv * ex, np.ones_like(xv)], axis=1)

    converged = True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optimize.OptimizeWarning)
            popt, _ = optimize.curve_fit(model, x, e, p0=_inside(guess), bounds=(_LOWER, _UPPER),
                                         method="trf", jac=jac, maxfev=20000)
        big_a, b, c = (float(v) for v in popt)
    except (RuntimeError, ValueError):
        (big_a, b, c), converged = guess, False
    rmse = float(np.sqrt(np.mean((model(x, big_a, b, c) - e) ** 2)))
    a = math.exp(math.log(big_a) + b * log_ref)
    return PowerLawFit(a=a, b=b, c=c, rmse=rmse, n_points=int(e.size), converged=converged)


@dataclass(frozen=True)
class BootstrapFit:
    """Point fit on per-size seed means plus percentile CIs of ``a``, ``b``, ``c`` over seed resamples."""

    fit: PowerLawFit
    ci: dict[str, tuple[float, float]]
    samples: np.ndarray = field(repr=False)  # (n_ok, 3): a, b, c of each successful resample
    n_failed: int
    level: float

    def band(self, n: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        """Pointwise percentile band of the fitted curve at ``n``."""
        n = np.atleast_1d(np.asarray(n, dtype=float))
        if not len(self.samples):
            return np.full(n.size, np.nan), np.full(n.size, np.nan)
        preds = np.stack([power_law(n, *s) for s in self.samples])
        q = 50 * (1 - self.level)
        return np.percentile(preds, q, axis=0), np.percentile(preds, 100 - q, axis=0)


def _resampled_means(rows: list[np.ndarray], n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """``(n_boot, n_sizes)`` means of each size's values resampled with replacement."""
    out = np.empty((n_boot, len(rows)))
    for i, r in enumerate(rows):
        idx = rng.integers(0, r.size, size=(n_boot, r.size))
        out[:, i] = r[idx].mean(axis=1)
    return out


def bootstrap_fit(n: Sequence[float] | np.ndarray, err_by_seed: object, n_boot: int = 1000, seed: int = 0,
                  level: float = 0.95) -> BootstrapFit:
    """Fit the seed means, then refit ``n_boot`` times with each size's seeds resampled with replacement.

    Percentile intervals; with few seeds they run narrow (about 83% coverage at nominal 95% measured with
    8 seeds and 6 sizes), so read them as seed-noise intervals, not exact confidence statements.
    """
    n_arr = np.asarray(n, dtype=float).ravel()
    rows = _rows(err_by_seed)
    if len(rows) != n_arr.size:
        raise ValueError(f"{n_arr.size} sizes but {len(rows)} rows of seed values")
    if any(r.size == 0 for r in rows):
        raise ValueError("every size needs at least one finite seed value")
    point = fit_power_law(n_arr, np.array([r.mean() for r in rows]))
    means = _resampled_means(rows, n_boot, np.random.default_rng(seed))
    samples, failed = [], 0
    for m in means:
        f = fit_power_law(n_arr, m, p0=(point.a, point.b, point.c))
        if f.converged:
            samples.append((f.a, f.b, f.c))
        else:
            failed += 1
    arr = np.array(samples, dtype=float).reshape(-1, 3)
    q = 50 * (1 - level)
    ci = {}
    for j, name in enumerate("abc"):
        if len(arr):
            ci[name] = (float(np.percentile(arr[:, j], q)), float(np.percentile(arr[:, j], 100 - q)))
        else:
            ci[name] = (math.nan, math.nan)
    return BootstrapFit(fit=point, ci=ci, samples=arr, n_failed=failed, level=level)


@dataclass(frozen=True)
class GistGain:
    """Per-size gain ``mean(with) - mean(without)`` with percentile bootstrap CIs over seeds."""

    gain: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    n: np.ndarray  # seeds (pairs when paired) per size
    paired: bool
    level: float


def gist_gain(with_acc: object, without_acc: object, n_boot: int = 1000, seed: int = 0, level: float = 0.95,
              paired: bool | None = None) -> GistGain:
    """GIST gain per size with bootstrap CIs over seeds.

    ``paired`` (default: when every size has the same seed count with and without GIST) resamples seed
    indices jointly, i.e. bootstraps the mean of per-seed differences; otherwise both sides are resampled
    independently. With paired inputs, seed ``i`` of ``with_acc`` pairs with seed ``i`` of ``without_acc``.
    """
    w_raw, wo_raw = _rows(with_acc), _rows(without_acc)
    if len(w_raw) != len(wo_raw):
        raise ValueError(f"{len(w_raw)} sizes with GIST but {len(wo_raw)} without")
    if paired is None:
        paired = all(a.size == b.size for a, b in zip(w_raw, wo_raw))
    rng = np.random.default_rng(seed)
    q = 50 * (1 - level)
    gain, lo, hi, counts = [], [], [], []
    for w, wo in zip(w_raw, wo_raw):
        if paired:
            if w.size != wo.size:
                raise ValueError("paired=True needs the same number of seeds with and without GIST")
            d = w - wo
            boot = _resampled_means([d], n_boot, rng)[:, 0] if d.size else np.array([np.nan])
            g, k = float(d.mean()) if d.size else math.nan, d.size
        else:
            if w.size == 0 or wo.size == 0:
                boot, g, k = np.array([np.nan]), math.nan, 0
            else:
                boot = _resampled_means([w], n_boot, rng)[:, 0] - _resampled_means([wo], n_boot, rng)[:, 0]
                g, k = float(w.mean() - wo.mean()), min(w.size, wo.size)
        gain.append(g)
        lo.append(float(np.percentile(boot, q)))
        hi.append(float(np.percentile(boot, 100 - q)))
        counts.append(k)
    return GistGain(gain=np.array(gain), lo=np.array(lo), hi=np.array(hi), n=np.array(counts, dtype=int),
                    paired=bool(paired), level=level)


@dataclass(frozen=True)
class PairedTest:
    """Paired comparison of ``with - without`` over all (seed, dataset) pairs."""

    mean_diff: float
    std_diff: float
    n: int
    wilcoxon_p: float
    ttest_p: float
    alternative: str


def paired_test(with_acc: object, without_acc: object, alternative: Alternative = "two-sided") -> PairedTest:
    """Wilcoxon signed-rank and paired t-test on ``with - without``; inputs of equal shape, NaN pairs dropped.

    Typical input: arrays ``(n_seeds, n_datasets)`` for one method and backbone, flattened into pairs.
    """
    w, wo = np.asarray(with_acc, dtype=float).ravel(), np.asarray(without_acc, dtype=float).ravel()
    if w.shape != wo.shape:
        raise ValueError(f"with/without differ in size: {w.size} vs {wo.size}")
    d = (w - wo)[np.isfinite(w) & np.isfinite(wo)]
    n = int(d.size)
    mean = float(d.mean()) if n else math.nan
    std = float(d.std(ddof=1)) if n > 1 else math.nan
    if n < 2:
        return PairedTest(mean, std, n, math.nan, math.nan, alternative)
    if np.all(d == 0):
        return PairedTest(mean, std, n, 1.0, 1.0, alternative)
    try:
        wil_p = float(stats.wilcoxon(d, alternative=alternative).pvalue)
    except ValueError:
        wil_p = math.nan
    if std == 0:  # constant non-zero difference: t is infinite
        right_way = (mean > 0 and alternative != "less") or (mean < 0 and alternative != "greater")
        t_p = 0.0 if right_way else 1.0
    else:
        t_p = float(stats.ttest_1samp(d, 0.0, alternative=alternative).pvalue)
    return PairedTest(mean, std, n, wil_p, t_p, alternative)
