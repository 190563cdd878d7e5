"""Scaling-study figures (PNG + SVG) from tidy records; matplotlib's Agg canvas, no pyplot state.

- ``plot_accuracy_vs_params``: accuracy against backbone parameters per method, GIST solid / without dashed,
  with the fitted saturating power law ``1 - (a N^-b + c)`` where >= 3 sizes exist;
- ``plot_gist_gain``: GIST gain against backbone size with bootstrap CI error bars (paired over seeds);
- ``plot_pareto``: accuracy against trainable parameters, the Pareto front highlighted.

Accuracy is averaged over datasets (per seed), shown multiplied by ``scale`` (100: percent).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from gist_ray.scaling.fit import fit_power_law, gist_gain
from gist_ray.scaling.records import (
    as_records,
    backbone_sizes,
    grid,
    mean_field,
    ordered,
    paired_seeds,
    seed_means,
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


def plot_accuracy_vs_params(records: Iterable[dict], out_dir: str | Path, metric: str | None = None,
                            dataset: str | None = None, scale: float = 100.0, fit: bool = True,
                            formats: Sequence[str] = FORMATS, stem: str = "accuracy_vs_backbone") -> list[Path]:
    """Mean accuracy (± std over seeds) against backbone parameters, one line per (method, GIST)."""
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
            pts = sorted((sizes[b], summarize(g[(m, gg, b)])) for (m, gg, b) in g
                         if m == method and gg == gist and b in sizes)
            if not pts:
                continue
            x = np.array([p[0] for p in pts])
            y = np.array([p[1].mean for p in pts])
            err = np.nan_to_num(np.array([p[1].std for p in pts]))
            style, fitted = ("-" if gist else "--"), fit and np.unique(x).size >= 3
            fmt = ("o" if gist else "s") + ("" if fitted else style)
            ax.errorbar(x, y * scale, yerr=err * scale, fmt=fmt, mfc=None if gist else "none",
                        color=colours[method], capsize=3, label=_label(method, gist))
            if fitted:
                f = fit_power_law(x, 1.0 - y)
                xs = np.geomspace(x.min(), x.max(), 100)
                ax.plot(xs, (1.0 - f.predict(xs)) * scale, style, color=colours[method])
    _log_x(ax, "backbone parameters")
    ax.set_ylabel(f"accuracy{' (%)' if scale == 100 else ''}" + (f" — {dataset}" if dataset else ""))
    ax.legend(fontsize="small")
    return _save(fig, out_dir, stem, formats)


def plot_gist_gain(records: Iterable[dict], out_dir: str | Path, metric: str | None = None, scale: float = 100.0,
                   n_boot: int = 1000, seed: int = 0, level: float = 0.95, formats: Sequence[str] = FORMATS,
                   stem: str = "gist_gain") -> list[Path]:
    """GIST gain (with - without, averaged over shared datasets, paired over seeds) against backbone size."""
    recs = as_records(records)
    sizes = backbone_sizes(recs)
    if not sizes:
        raise ValueError("no record carries backbone_params")
    g = grid(recs, metric)
    methods = ordered(k[0] for k in g)
    colours = _colours(methods)
    fig, ax = _figure()
    for i, method in enumerate(methods):
        rows = []
        for b in sorted((b for b in sizes if (method, True, b) in g and (method, False, b) in g), key=sizes.get):
            datasets, seeds = paired_seeds(g[(method, True, b)], g[(method, False, b)])
            if seeds:
                rows.append((sizes[b], seed_means(g[(method, True, b)], datasets, seeds),
                             seed_means(g[(method, False, b)], datasets, seeds)))
        if not rows:
            continue
        res = gist_gain([r[1] for r in rows], [r[2] for r in rows], n_boot=n_boot, seed=seed, level=level,
                         paired=True)
        x = np.array([r[0] for r in rows]) * 1.04 ** (i - (len(methods) - 1) / 2)  # dodge overlapping bars
        yerr = np.vstack([res.gain - res.lo, res.hi - res.gain]) * scale
        ax.errorbar(x, res.gain * scale, yerr=yerr, fmt="o-", color=colours[method], capsize=3, label=method)
    ax.axhline(0.0, color="black", linewidth=0.8)
    _log_x(ax, "backbone parameters")
    ax.set_ylabel(f"GIST gain{' (points)' if scale == 100 else ''}, {level:.0%} CI")
    ax.legend(fontsize="small")
    return _save(fig, out_dir, stem, formats)


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
             formats: Sequence[str] = FORMATS, n_boot: int = 1000) -> list[Path]:
    """Every figure the records allow (scaling plots need backbone_params, Pareto needs trainable_params)."""
    recs = as_records(records)
    paths: list[Path] = []
    if backbone_sizes(recs):
        paths += plot_accuracy_vs_params(recs, out_dir, metric=metric, formats=formats)
        paths += plot_gist_gain(recs, out_dir, metric=metric, formats=formats, n_boot=n_boot)
    if any(r.get("trainable_params") for r in recs):
        paths += plot_pareto(recs, out_dir, metric=metric, formats=formats)
    return paths
