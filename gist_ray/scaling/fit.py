"""Scaling-law fits ``err = a * N^-b + c`` that respect their degrees of freedom.

``N`` is backbone parameters or training examples; ``err`` is an error rate in [0, 1] (``1 - accuracy``). Each
distinct ``N`` is one point (its seeds averaged), so a fit of ``p`` parameters to ``k`` sizes has ``k - p``
residual degrees of freedom. ``fit_scaling_law`` chooses the law from ``k``:

- ``k >= 4`` (parameters + 1): the saturating law ``a N^-b + c``;
- ``k == 3``: the saturating law would pass through every point (no residual: exactly determined), so the
  pure power law ``a N^-b`` is fitted, i.e. ``c`` fixed at ``floor`` (default 0: the assumption that no error
  floor is reached within the measured range; pass the task's known floor otherwise);
- ``k < 3``: no fit.

Intervals of ``b`` and ``c`` are linearised (Wald) t intervals with the residual degrees of freedom and the
residual variance, so they carry both seed noise and lack of fit; they are given only with at least
``MIN_DF`` residual degrees of freedom and when no parameter sits on its bound (where the linearisation does
not hold). All functions are pure: numpy arrays in, small dataclasses out.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from scipy import optimize

from gist_ray.scaling.intervals import LEVEL, MIN_DF, t_quantile

# bounds on (A, b, c) where A = a * N_ref^-b is the reducible error at the geometric-mean size N_ref
_LOWER = (1e-12, 1e-6, 0.0)
_UPPER = (1e3, 10.0, 1.0)
_NAMES = ("a", "b", "c")


@dataclass(frozen=True)
class Law:
    name: str
    formula: str
    n_params: int


SATURATING = Law("saturating", "a*N^-b + c", 3)
POWER = Law("power", "a*N^-b", 2)


def power_law(n: np.ndarray | float, a: float, b: float, c: float = 0.0) -> np.ndarray:
    """``a * n^-b + c``, evaluated in log space so that huge ``a`` / ``n`` do not overflow."""
    n = np.asarray(n, dtype=float)
    return np.exp(math.log(a) - b * np.log(n)) + c


@dataclass(frozen=True)
class PowerLawFit:
    """Fitted ``err = a * N^-b + c`` (``c`` fixed when ``free`` lacks it); ``rmse`` in error units.

    ``cov`` is the covariance of the free parameters in (A, b, c) order (A = a at the reference size) from the
    Jacobian and the residual variance, ``df`` the residual degrees of freedom; ``converged`` False if the
    optimiser gave up (the initial guess is returned then).
    """

    a: float
    b: float
    c: float
    rmse: float
    n_points: int
    converged: bool = True
    free: tuple[str, ...] = _NAMES
    df: int = 0
    cov: np.ndarray = field(default_factory=lambda: np.full((3, 3), np.nan), repr=False, compare=False)
    at_bound: tuple[str, ...] = ()

    def predict(self, n: np.ndarray | float) -> np.ndarray:
        return power_law(n, self.a, self.b, self.c)

    def params(self) -> dict[str, float]:
        return {"a": self.a, "b": self.b, "c": self.c}

    def wald(self, name: str, level: float = LEVEL) -> tuple[float, float]:
        """Linearised t interval of ``b`` or ``c`` with ``df`` degrees of freedom (NaN if not free or df < 1)."""
        if name not in ("b", "c") or name not in self.free or self.df < 1 or not self.converged:
            return math.nan, math.nan
        var = float(self.cov[self.free.index(name), self.free.index(name)])
        if not math.isfinite(var) or var < 0:
            return math.nan, math.nan
        half = float(t_quantile(0.5 + level / 2, self.df)) * math.sqrt(var)
        value = getattr(self, name)
        return value - half, value + half


def _initial_guess(x: np.ndarray, err: np.ndarray, floor: float | None) -> tuple[float, float, float]:
    """Log-linear fits of ``err - c`` for a grid of floors ``c`` (or the fixed one); keep the best SSE."""
    lo = max(float(err.min()), 0.0)
    floors = [floor] if floor is not None else list(np.linspace(0.0, 0.99 * lo, 25))
    best, best_sse = (max(float(err.mean()) - (floor or 0.0), 1e-3), 0.1, floor or 0.0), math.inf
    for c in floors:
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


def _inside(p: Sequence[float], lower: Sequence[float], upper: Sequence[float]) -> list[float]:
    """Clip a parameter vector strictly inside the bounds (curve_fit rejects p0 on the boundary)."""
    out = []
    for v, lo, hi in zip(p, lower, upper):
        eps = 1e-9 * max(1.0, abs(hi - lo))
        out.append(float(np.clip(v, lo + eps, hi - eps)))
    return out


def _jacobian(x: np.ndarray, big_a: float, b: float) -> np.ndarray:
    ex = np.exp(-b * x)
    return np.stack([ex, -big_a * x * ex, np.ones_like(x)], axis=1)


def fit_power_law(n: Sequence[float] | np.ndarray, err: Sequence[float] | np.ndarray,
                  p0: tuple[float, float, float] | None = None, floor: float | None = None) -> PowerLawFit:
    """Least-squares fit of ``err = a * N^-b + c`` with ``a > 0``, ``0 < b <= 10``, ``0 <= c <= 1``.

    ``floor`` fixes ``c`` (the pure power law when 0); ``None`` fits it. Fitted in ``x = log(N / N_ref)``
    (``N_ref`` = geometric mean of ``N``), which keeps the problem well scaled for N from 1e2 to 1e12. ``p0``
    is ``(a, b, c)`` in the original units; by default log-linear fits choose it.
    """
    n_arr, e = np.asarray(n, dtype=float).ravel(), np.asarray(err, dtype=float).ravel()
    if n_arr.shape != e.shape:
        raise ValueError(f"N and err differ in length: {n_arr.size} vs {e.size}")
    ok = np.isfinite(n_arr) & np.isfinite(e)
    n_arr, e = n_arr[ok], e[ok]
    if np.any(n_arr <= 0):
        raise ValueError("N must be positive")
    if floor is not None and not 0.0 <= floor <= 1.0:
        raise ValueError(f"floor must lie in [0, 1], got {floor}")
    free = _NAMES if floor is None else _NAMES[:2]
    if e.size < len(free) or np.unique(n_arr).size < 2:
        raise ValueError(f"need >= {len(free)} points over >= 2 distinct N, got {e.size} points")
    log_ref = float(np.mean(np.log(n_arr)))
    x = np.log(n_arr) - log_ref
    guess = _initial_guess(x, e, floor) if p0 is None else (p0[0] * math.exp(-p0[1] * log_ref), p0[1], p0[2])
    c_fixed = 0.0 if floor is None else floor
    k = len(free)

    def model(xv: np.ndarray, *p: float) -> np.ndarray:
        return p[0] * np.exp(-p[1] * xv) + (p[2] if k == 3 else c_fixed)

    def jac(xv: np.ndarray, *p: float) -> np.ndarray:
        return _jacobian(xv, p[0], p[1])[:, :k]

    lower, upper = _LOWER[:k], _UPPER[:k]
    converged = True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optimize.OptimizeWarning)
            popt, _ = optimize.curve_fit(model, x, e, p0=_inside(guess[:k], lower, upper), bounds=(lower, upper),
                                         method="trf", jac=jac, maxfev=20000)
        p = [float(v) for v in popt]
    except (RuntimeError, ValueError):
        p, converged = list(guess[:k]), False
    big_a, b = p[0], p[1]
    c = p[2] if k == 3 else c_fixed
    resid = model(x, *p) - e
    rmse = float(np.sqrt(np.mean(resid**2)))
    df = int(e.size - k)
    cov = np.full((k, k), np.nan)
    if df > 0 and converged:
        j = _jacobian(x, big_a, b)[:, :k]
        cov = float(np.sum(resid**2)) / df * np.linalg.pinv(j.T @ j)
    bound = tuple(name for name, v, lo, hi in zip(free, p, lower, upper)
                  if v <= lo + 1e-6 * max(1.0, abs(lo)) or v >= hi - 1e-6 * max(1.0, abs(hi)))
    a = math.exp(math.log(big_a) + b * log_ref)
    return PowerLawFit(a=a, b=b, c=c, rmse=rmse, n_points=int(e.size), converged=converged, free=free, df=df,
                       cov=cov, at_bound=bound)


def choose_law(n_sizes: int, floor: float = 0.0) -> tuple[Law | None, str]:
    """The law ``n_sizes`` distinct sizes can fit (at least parameters + 1 sizes), and why."""
    if n_sizes >= SATURATING.n_params + 1:
        return SATURATING, f"{n_sizes} sizes >= 4 (3 parameters + 1)"
    if n_sizes >= POWER.n_params + 1:
        return POWER, (f"{n_sizes} sizes: a*N^-b + c would be exactly determined (3 parameters, 0 residual df); "
                       f"c fixed at {floor:g} (assumed: no error floor within the measured range)")
    return None, f"{n_sizes} size{'s' if n_sizes != 1 else ''}: a law needs >= 3"


def _rows(values: object) -> list[np.ndarray]:
    """Per-size 1-D float arrays with NaNs dropped, from a 1-D array (one value per size), 2-D or ragged."""
    if isinstance(values, np.ndarray) and values.ndim == 1:
        values = values[:, None]
    rows = [np.atleast_1d(np.asarray(r, dtype=float)).ravel() for r in values]  # type: ignore[union-attr]
    return [r[np.isfinite(r)] for r in rows]


@dataclass(frozen=True)
class ScalingFit:
    """The law fitted to per-size means, why that law, and the intervals the residual df support."""

    law: Law | None
    formula: str  # the law as fitted, e.g. "a*N^-b + c" or "a*N^-b (c = 0)"
    reason: str  # why this law (or none)
    fit: PowerLawFit | None
    ci: dict[str, tuple[float, float]]  # b and c; NaN when the data cannot support an interval
    intervals: str  # how the intervals were made, or why there are none
    sizes: int
    seeds: int  # fewest seeds behind any size's mean
    level: float

    @property
    def df(self) -> int:
        return self.fit.df if self.fit else 0


def fit_scaling_law(n: Sequence[float] | np.ndarray, err_by_seed: object, level: float = LEVEL,
                    floor: float = 0.0, law: str = "auto", min_df: int = MIN_DF) -> ScalingFit:
    """Fit the law ``choose_law`` picks (or ``law`` = ``"saturating"`` / ``"power"``) to the per-size seed means.

    ``err_by_seed``: one row of seed values per size (2-D with NaN for missing, ragged, or 1-D means).
    """
    n_arr = np.asarray(n, dtype=float).ravel()
    rows = _rows(err_by_seed)
    if len(rows) != n_arr.size:
        raise ValueError(f"{n_arr.size} sizes but {len(rows)} rows of seed values")
    keep = [i for i, r in enumerate(rows) if r.size]
    n_arr, rows = n_arr[keep], [rows[i] for i in keep]
    if np.unique(n_arr).size != n_arr.size:
        raise ValueError(f"sizes must be distinct, got {sorted(n_arr.tolist())}")
    seeds = int(min((r.size for r in rows), default=0))
    chosen, reason = choose_law(n_arr.size, floor)
    if law != "auto":
        forced = {"saturating": SATURATING, "power": POWER}.get(law)
        if forced is None:
            raise ValueError(f"law must be auto, saturating or power, got {law!r}")
        if n_arr.size < forced.n_params + 1:
            raise ValueError(f"law {law}: {n_arr.size} sizes, needs >= {forced.n_params + 1}")
        chosen, reason = forced, f"{law} law requested"
    nan = (math.nan, math.nan)
    if chosen is None:
        return ScalingFit(None, "", reason, None, {"b": nan, "c": nan}, "no fit", int(n_arr.size), seeds, level)
    f = fit_power_law(n_arr, [r.mean() for r in rows], floor=None if chosen is SATURATING else floor)
    ci = {"b": nan, "c": nan}
    if not f.converged:
        why = "none: the fit did not converge"
    elif f.df < min_df:
        why = f"none: {f.df} residual df (need {min_df})"
    elif f.at_bound:
        why = f"none: {', '.join(f.at_bound)} at its bound (linearised intervals do not hold there)"
    else:
        ci = {name: f.wald(name, level) if name in f.free else nan for name in ("b", "c")}
        why = f"Wald t, {f.df} residual df"
    formula = chosen.formula if chosen is SATURATING else f"{chosen.formula} (c = {floor:g})"
    return ScalingFit(chosen, formula, reason, f, ci, why, int(n_arr.size), seeds, level)
