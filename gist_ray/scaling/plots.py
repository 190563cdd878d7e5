"""Scaling-study figures (PNG + SVG) from tidy records; matplotlib's Agg canvas, no pyplot state.

- ``plot_accuracy_vs_params``: accuracy against backbone parameters per method, GIST solid / without dashed,
  every seed as a dot, t intervals where there are enough seeds, and the law ``fit_scaling_law`` chose;
- ``plot_gist_gain``: GIST gain against backbone size, every seed's gain as a dot, nested t intervals where
  there are enough seeds (none from 2 seeds: see ``gist_ray.scaling.intervals``);
- ``plot_pareto``: accuracy against trainable parameters, the Pareto front highlighted.

Accuracy is averaged over datasets (per seed), shown multiplied by ``scale`` (100: percent).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from gist_ray.scaling.fit import fit_scaling_law
from gist_ray.scaling.gains import paired_gain
from gist_ray.scaling.intervals import LEVEL, MIN_DF
from gist_ray.scaling.records import (
    as_records,
    backbone_sizes,
    common_seed_means,
    dataset_seed_interval,
    grid,
    mean_field,
    ordered,
    summarize,
)

FORMATS = ("png", "svg")


def _figure(figsize: tuple[float, float] = (6.0, 4.2)) -> Any:
    from matplotlib.figure import Figure  # lazy: importing the package must not pull matplotlib

    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.add_subplot()


def _save(fig: Any, out_dir: str | Path, stem: str, formats: Sequence[str]) -> list[Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        path = out / f"{stem}.{fmt}"
        fig.savefig(path, format=fmt, dpi=150)
        paths.append(path)
    return paths


def _log_x(ax: Any, label: str) -> None:
    from matplotlib.ticker import NullFormatter

    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels on a log axis overlap
    ax.set_xlabel(label)
    ax.grid(True, which="both", alpha=0.3)


def _colours(methods: Sequence[str]) -> dict[str, Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return {m: cmap(i % 10) for i, m in enumerate(methods)}


def _label(method: str, gist: bool) -> str:
    return f"{method} + GIST" if gist else method


def _seed_dots(ax: Any, x: float, ys: Sequence[float], colour: Any, marker: str, filled: bool) -> None:
    """Each seed's value as a small, slightly spread dot beside the mean (spread on the log x axis)."""
    if not len(ys):
        return
    spread = 1.0 + 0.015 * (np.arange(len(ys)) - (len(ys) - 1) / 2)
    ax.scatter(x * spread, ys, s=14, marker=marker, alpha=0.55, linewidths=0.8, zorder=3, gid="seeds",
               facecolors=colour if filled else "none", edgecolors=colour)


def _interval_bars(ax: Any, x: np.ndarray, intervals: Sequence[Any], scale: float, colour: Any) -> None:
    """Error bars for the intervals that exist ("n too small" ones get none)."""
    ok = [i for i, iv in enumerate(intervals) if iv.ok]
    if not ok:
        return
    y = np.array([intervals[i].estimate for i in ok]) * scale
    lo = np.array([intervals[i].lo for i in ok]) * scale
    hi = np.array([intervals[i].hi for i in ok]) * scale
    bars = ax.errorbar(x[ok], y, yerr=np.vstack([y - lo, hi - y]), fmt="none", ecolor=colour, capsize=3, zorder=2)
    for part in bars.lines[2]:
        part.set_gid("interval")


def plot_accuracy_vs_params(records: Iterable[dict], out_dir: str | Path, metric: str | None = None,
                            dataset: str | None = None, scale: float = 100.0, fit: bool = True,
                            level: float = LEVEL, formats: Sequence[str] = FORMATS,
                            stem: str = "accuracy_vs_backbone") -> list[Path]:
    """``accuracy_vs_params_figure`` saved as ``<stem>.<fmt>``."""
    return _save(accuracy_vs_params_figure(records, metric, dataset, scale, fit, level), out_dir, stem, formats)


def accuracy_vs_params_figure(records: Iterable[dict], metric: str | None = None, dataset: str | None = None,
                              scale: float = 100.0, fit: bool = True, level: float = LEVEL) -> Any:
    """Accuracy against backbone parameters, one line per (method, GIST): the mean over datasets, its t
    interval where there are enough seeds, every seed's own mean over datasets as a dot, and the scaling law
    ``fit_scaling_law`` chose for >= 3 sizes."""
    recs = [r for r in as_records(records) if dataset is None or r.get("dataset") == dataset]
    sizes = backbone_sizes(recs)
    if not sizes:
        raise ValueError("no record carries backbone_params")
    g = grid(recs, metric)
    methods = ordered(k[0] for k in g)
    colours = _colours(methods)
    fig, ax = _figure()
    for method in methods:
        for gist in (False, True):
            bbs = sorted((b for (m, gg, b) in g if m == method and gg == gist and b in sizes), key=sizes.get)
            if not bbs:
                continue
            colour, marker = colours[method], ("o" if gist else "s")
            x = np.array([sizes[b] for b in bbs])
            ivs = [dataset_seed_interval(g[(method, gist, b)], level=level) for b in bbs]
            y = np.array([summarize(g[(method, gist, b)]).mean for b in bbs])
            seeds = [list(common_seed_means(g[(method, gist, b)]).values()) for b in bbs]
            law = fit_scaling_law(x, [1.0 - np.array(s) if s else [1.0 - m] for s, m in zip(seeds, y)],
                                  level=level) if fit and x.size >= 3 else None
            style = "-" if gist else "--"
            ax.plot(x, y * scale, marker + ("" if law and law.fit else style), color=colour,
                    mfc=colour if gist else "none", label=_label(method, gist), zorder=4)
            _interval_bars(ax, x, ivs, scale, colour)
            for xi, ys in zip(x, seeds):
                _seed_dots(ax, xi, np.array(ys) * scale, colour, marker, gist)
            if law and law.fit:
                xs = np.geomspace(x.min(), x.max(), 100)
                ax.plot(xs, (1.0 - law.fit.predict(xs)) * scale, style, color=colour, linewidth=1.0)
    _log_x(ax, "backbone parameters")
    what = f"accuracy{' (%)' if scale == 100 else ''}" + (f" — {dataset}" if dataset else "")
    ax.set_ylabel(what)
    ax.set_title(f"mean; bars: {level:.0%} t interval (>= {MIN_DF + 1} seeds); dots: seeds; lines: fitted law",
                 fontsize="small")
    if ax.get_legend_handles_labels()[0]:  # no GIST pair measured: an empty plot, no legend
        ax.legend(fontsize="small")
    return fig


def plot_gist_gain(records: Iterable[dict], out_dir: str | Path, metric: str | None = None, scale: float = 100.0,
                   level: float = LEVEL, formats: Sequence[str] = FORMATS, stem: str = "gist_gain") -> list[Path]:
    """``gist_gain_figure`` saved as ``<stem>.<fmt>``."""
    return _save(gist_gain_figure(records, metric, scale, level), out_dir, stem, formats)


def gist_gain_figure(records: Iterable[dict], metric: str | None = None, scale: float = 100.0,
                     level: float = LEVEL) -> Any:
    """GIST gain (with - without; mean over datasets of the mean over paired seeds) against backbone size:
    the gain, its nested t interval where there are enough seeds, and each seed's gain as a dot."""
    recs = as_records(records)
    sizes = backbone_sizes(recs)
    if not sizes:
        raise ValueError("no record carries backbone_params")
    g = grid(recs, metric)
    methods = ordered(k[0] for k in g)
    colours = _colours(methods)
    fig, ax = _figure()
    for i, method in enumerate(methods):
        bbs = sorted((b for b in sizes if (method, True, b) in g and (method, False, b) in g), key=sizes.get)
        gains = [(b, paired_gain(g[(method, True, b)], g[(method, False, b)], level)) for b in bbs]
        gains = [(b, pg) for b, pg in gains if pg.datasets]
        if not gains:
            continue
        x = np.array([sizes[b] for b, _ in gains]) * 1.06 ** (i - (len(methods) - 1) / 2)  # dodge methods
        colour = colours[method]
        ax.plot(x, [pg.gain * scale for _, pg in gains], "o-", color=colour, label=method, zorder=4)
        _interval_bars(ax, x, [pg.interval for _, pg in gains], scale, colour)
        for xi, (_, pg) in zip(x, gains):
            _seed_dots(ax, xi, np.array(list(pg.per_seed.values())) * scale, colour, "o", True)
    ax.axhline(0.0, color="black", linewidth=0.8)
    _log_x(ax, "backbone parameters")
    ax.set_ylabel(f"GIST gain{' (points)' if scale == 100 else ''}")
    ax.set_title(f"mean over datasets; bars: {level:.0%} t interval (>= {MIN_DF + 1} seeds); dots: seeds",
                 fontsize="small")
    if ax.get_legend_handles_labels()[0]:  # no GIST pair measured: an empty plot, no legend
        ax.legend(fontsize="small")
    return fig


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of points not dominated by another with fewer (or equal) parameters and higher accuracy."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -np.inf
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def plot_pareto(records: Iterable[dict], out_dir: str | Path, metric: str | None = None,
                backbone: str | None = None, scale: float = 100.0, formats: Sequence[str] = FORMATS,
                stem: str = "pareto_trainable") -> list[Path]:
    """Accuracy against trainable parameters, one point per (method, GIST, backbone); the front highlighted."""
    recs = [r for r in as_records(records) if backbone is None or str(r.get("backbone")) == backbone]
    g = grid(recs, metric)
    pts, keys = [], []
    for key, by_ds in g.items():
        p = mean_field(recs, key, "trainable_params")
        if p is not None and p > 0:
            pts.append((p, summarize(by_ds).mean))
            keys.append(key)
    if not pts:
        raise ValueError("no record carries trainable_params")
    methods = ordered(k[0] for k in keys)
    colours = _colours(methods)
    several = len({k[2] for k in keys}) > 1
    fig, ax = _figure()
    seen: set[tuple[str, bool]] = set()
    for (x, y), (method, gist, bb) in zip(pts, keys):
        label = None if (method, gist) in seen else _label(method, gist)
        seen.add((method, gist))
        ax.scatter([x], [y * scale], marker="o" if gist else "s", s=40, label=label,
                   facecolors=colours[method] if gist else "none", edgecolors=colours[method])
        if several:
            ax.annotate(bb, (x, y * scale), fontsize="x-small", xytext=(3, 3), textcoords="offset points")
    front = pareto_front(pts)
    fx = [pts[i][0] for i in front]
    fy = [pts[i][1] * scale for i in front]
    ax.step(fx, fy, where="post", color="black", linewidth=1.0, alpha=0.7, label="Pareto front")
    ax.scatter(fx, fy, s=140, facecolors="none", edgecolors="black", linewidths=1.2)
    _log_x(ax, "trainable parameters")
    ax.set_ylabel(f"accuracy{' (%)' if scale == 100 else ''}")
    ax.legend(fontsize="small")
    return _save(fig, out_dir, stem, formats)


def plot_all(records: Iterable[dict], out_dir: str | Path, metric: str | None = None,
             formats: Sequence[str] = FORMATS) -> list[Path]:
    """Every figure the records allow (scaling plots need backbone_params, Pareto needs trainable_params)."""
    recs = as_records(records)
    paths: list[Path] = []
    if backbone_sizes(recs):
        paths += plot_accuracy_vs_params(recs, out_dir, metric=metric, formats=formats)
        paths += plot_gist_gain(recs, out_dir, metric=metric, formats=formats)
    if any(r.get("trainable_params") for r in recs):
        paths += plot_pareto(recs, out_dir, metric=metric, formats=formats)
    return paths
