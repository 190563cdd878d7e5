"""The comparison a researcher wants first from a sweep, for its parent run: the best score of each method with GIST
and without, the score of the GIST trials against lambda and against T, and the trials as a CSV table."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import matplotlib

matplotlib.use("Agg")  # files only; no display on a cluster node
import matplotlib.pyplot as plt  # noqa: E402

from gist_ray.config import Config, to_dict  # noqa: E402
from gist_ray.mlflow_ui import run_name  # noqa: E402


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
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
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
    fig.savefig(path, dpi=85)  # about 1100 px wide: the run page shows it whole
    plt.close(fig)
    return path


def comparison_files(config_for: Callable[[dict], Config], rows: Sequence[Any], metric: str, mode: str,
                     directory: Path) -> list[Path]:
    """For a sweep's parent run: ``trials.csv`` (every trial: its readable name, method, GIST setting, sampled
    values, status, score, error) and ``gist_vs_off.png`` (:func:`plot_comparison` of the finished trials).
    ``rows`` are the driver's trial rows (``trial_id``, ``status``, ``config``, ``metrics``, ``error``);
    ``config_for(sampled overrides)`` builds a trial's run config (``SweepSpec.config_for``)."""
    table, points = [], []
    for r in rows:
        cfg = to_dict(config_for(r.config))
        value = r.metrics.get(metric)
        if r.status == "TERMINATED" and isinstance(value, (int, float)) and math.isfinite(value):
            points.append(point_of(cfg, value))
        g = cfg["gist"]
        table.append({"trial": r.trial_id, "status": r.status, "name": run_name(cfg, r.config),
                      "method": cfg["method"]["name"], "gist": g["enabled"], "lambda": g["lam"] if g["enabled"] else "",
                      "T": g["temperature"] if g["enabled"] else "", **r.config,
                      **{k: r.metrics.get(k) for k in (metric, "epoch", "params/total")}, "error": r.error})
    path = directory / "trials.csv"
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for row in table for k in row)))
        writer.writeheader()
        writer.writerows(table)
    files = [path]
    if points:
        files.append(plot_comparison(points, metric, directory / "gist_vs_off.png", mode == "max"))
    return files


def sweep_note(parent_id: str, rows: Sequence[Any], metric: str, mode: str, config_for: Callable[[dict], Config],
               top: int = 10) -> str:
    """The parent run's description (Markdown, the ``mlflow.note.content`` tag): the best trial by name, the
    comparison plot (served by the tracking server from the run's artifacts) and the ``top`` trials."""
    ok = [r for r in rows if r.status == "TERMINATED" and isinstance(r.metrics.get(metric), (int, float))
          and math.isfinite(r.metrics[metric])]
    ok.sort(key=lambda r: r.metrics[metric], reverse=mode == "max")
    names = {r.trial_id: run_name(to_dict(config_for(r.config)), r.config) for r in ok}
    lines = []
    if ok:
        lines.append(f"**Best: {names[ok[0].trial_id]}**: {metric} {ok[0].metrics[metric]:.4f}")
    lines += ["", f"![GIST on vs off](get-artifact?path=gist_vs_off.png&run_uuid={parent_id})", "",
              f"| trial | run | {metric} |", "|---|---|---|"]
    cell = {k: v.replace("|", "\\|") for k, v in names.items()}  # run names hold "|": escaped in a table cell
    lines += [f"| {r.trial_id} | {cell[r.trial_id]} | {r.metrics[metric]:.4f} |" for r in ok[:top]]
    errored = len([r for r in rows if r.status == "ERROR"])
    lines.append(f"\n{len(rows)} trials, {errored} errored; all of them in trials.csv and trials.md (Artifacts).")
    return "\n".join(lines)
