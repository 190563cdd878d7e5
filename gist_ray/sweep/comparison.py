"""The comparison a researcher wants first from a sweep, drawn for its parent run: the best score of each method with
GIST and without, and the score of the GIST trials against lambda and against T."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import matplotlib

matplotlib.use("Agg")  # files only; no display on a cluster node
import matplotlib.pyplot as plt  # noqa: E402


@dataclass(frozen=True)
class Point:
    """One finished trial: its method, GIST on/off, lambda and T (GIST on only) and its score."""

    method: str
    gist: bool
    lam: float | None
    temperature: float | None
    value: float


def point_of(cfg: dict, value: float) -> Point:
    """A trial's point from its full run config (plain dict) and score."""
    g = cfg["gist"]
    on = bool(g["enabled"])
    return Point(cfg["method"]["name"], on, float(g["lam"]) if on else None,
                 float(g["temperature"]) if on else None, float(value))


def best_by_method(points: Iterable[Point], maximise: bool = True) -> dict[str, dict[bool, float]]:
    """``{method: {gist on/off: best score}}`` over the finite scores."""
    out: dict[str, dict[bool, float]] = {}
    pick = max if maximise else min
    for p in points:
        if not math.isfinite(p.value):
            continue
        seen = out.setdefault(p.method, {})
        seen[p.gist] = pick(seen.get(p.gist, p.value), p.value)
    return out


def plot_comparison(points: list[Point], metric: str, path: Path, maximise: bool = True) -> Path:
    """Three panels: best ``metric`` per method with and without GIST (bars), then ``metric`` of the GIST trials
    against lambda and against T (one colour per method). Writes ``path`` (PNG) and returns it."""
    best = best_by_method(points, maximise)
    methods = sorted(best)
    colours = {m: plt.get_cmap("tab10")(i % 10) for i, m in enumerate(methods)}
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    ax = axes[0]
    width = 0.38
    for j, (on, label, hatch) in enumerate(((False, "without GIST", "//"), (True, "with GIST", ""))):
        xs = [i + (j - 0.5) * width for i in range(len(methods))]
        ys = [best[m].get(on, math.nan) for m in methods]
        bars = ax.bar(xs, ys, width, label=label, color=[colours[m] for m in methods], alpha=0.55 if not on else 0.95,
                      hatch=hatch, edgecolor="black", linewidth=0.5)
        for b, y in zip(bars, ys):
            if math.isfinite(y):
                ax.annotate(f"{y:.3f}", (b.get_x() + b.get_width() / 2, y), ha="center", va="bottom", fontsize=8)
    tops = [v for m in methods for v in best[m].values()]
    if tops:
        ax.set_ylim(0, max(tops) * 1.18 if max(tops) > 0 else 1)
    ax.set_xticks(range(len(methods)), methods, rotation=20, ha="right")
    ax.set_ylabel(f"best {metric}")
    ax.set_title("GIST on vs off, per method")
    ax.legend(fontsize=8, loc="upper left", ncols=2)
    gist_points = [p for p in points if p.gist and math.isfinite(p.value)]
    for ax, attr, label in ((axes[1], "lam", "lambda (KL weight)"), (axes[2], "temperature", "T (temperature)")):
        for m in methods:
            mine = [p for p in gist_points if p.method == m]
            if mine:
                ax.scatter([getattr(p, attr) for p in mine], [p.value for p in mine], color=colours[m], label=m,
                           s=28, edgecolor="black", linewidth=0.4)
        for m in methods:
            if False in best[m]:  # the method's best without GIST, for reference
                ax.axhline(best[m][False], color=colours[m], linestyle=":", linewidth=1)
        ax.set_xlabel(label)
        ax.set_ylabel(metric)
        ax.set_title(f"{metric} of GIST trials vs {label.split(' ')[0]} (dotted: best without GIST)", fontsize=9)
        if gist_points:
            ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
