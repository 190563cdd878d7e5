"""After a sweep: Pareto front, Optuna parameter importances, the VTAB refit, repeats of the best over seeds."""

from __future__ import annotations

import copy
import csv
import math
from pathlib import Path
from typing import Any

from gist_ray.sweep.space import SweepSpec


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def pareto_rows(rows: list, objectives: list[tuple[str, str]]) -> list:
    """Rows not dominated on every (metric, mode) objective; rows missing an objective are skipped."""
    ok = [r for r in rows if r.status == "TERMINATED" and all(_finite(r.metrics.get(m)) for m, _ in objectives)]

    def key(r):
        return [r.metrics[m] if mode == "max" else -r.metrics[m] for m, mode in objectives]

    front = []
    for r in ok:
        kr = key(r)
        dominated = any(all(a >= b for a, b in zip(key(o), kr)) and key(o) != kr for o in ok)
        if not dominated:
            front.append(r)
    return front


def write_pareto(rows: list, objectives: list[tuple[str, str]], out_dir: Path) -> list[Path]:
    """Pareto CSV (every trial, with an ``on_front`` column) and a PNG scatter of the first two objectives."""
    out_dir.mkdir(parents=True, exist_ok=True)
    front = {r.trial_id for r in pareto_rows(rows, objectives)}
    names = [m for m, _ in objectives]
    keys = sorted({k for r in rows for k in r.config})
    csv_path = out_dir / "pareto.csv"
    with open(csv_path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["trial_id", "status", "on_front", *names, *keys])
        for r in rows:
            w.writerow([r.trial_id, r.status, r.trial_id in front, *[r.metrics.get(n) for n in names],
                        *[r.config.get(k) for k in keys]])
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4.2))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    pts = [r for r in rows if all(_finite(r.metrics.get(n)) for n in names[:2])]
    ax.scatter([r.metrics[names[1]] for r in pts], [r.metrics[names[0]] for r in pts], c="0.6", label="trials")
    fr = sorted((r for r in pts if r.trial_id in front), key=lambda r: r.metrics[names[1]])
    ax.plot([r.metrics[names[1]] for r in fr], [r.metrics[names[0]] for r in fr], "o-", c="C3", label="Pareto front")
    ax.set_xscale("log")
    ax.set_xlabel(names[1])
    ax.set_ylabel(names[0])
    ax.legend()
    png = out_dir / "pareto.png"
    fig.savefig(png, dpi=120, bbox_inches="tight")
    return [csv_path, png]


def importances(spec: SweepSpec, rows: list) -> dict[str, float]:
    """Optuna's fANOVA-style parameter importances for the main objective, from the finished trials."""
    import optuna
    from optuna.distributions import CategoricalDistribution

    from gist_ray.sweep.search import optuna_distribution

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    metric, mode = spec.search.metric, spec.search.mode
    ok = [r for r in rows if r.status == "TERMINATED" and _finite(r.metrics.get(metric))]
    if len(ok) < 3:
        return {}
    study = optuna.create_study(direction="maximize" if mode == "max" else "minimize")
    for r in ok:
        params = {k: v for k, v in r.config.items() if isinstance(v, (int, float, str, bool))}
        dists = {}
        for k, v in params.items():
            d = spec.space.get(k)
            dists[k] = optuna_distribution(d) if d is not None else CategoricalDistribution([v])
        study.add_trial(optuna.trial.create_trial(params=params, distributions=dists, value=float(r.metrics[metric])))
    try:
        return {k: float(v) for k, v in optuna.importance.get_param_importances(study).items()}
    except (RuntimeError, ValueError, ZeroDivisionError):
        return {}


def refit_config(spec: SweepSpec, best_config: dict) -> dict:
    """The VTAB-1k refit: the best configuration trained on train+val, evaluated on test once."""
    from gist_ray.sweep.space import apply_overrides

    raw = apply_overrides(spec.base, best_config)
    raw.setdefault("data", {}).update({"train_split": "trainval", "eval_split": None, "test_split": "test"})
    raw["name"] = f"{spec.name}-refit"
    return raw


def repeat_spec(spec: SweepSpec, best_configs: list[dict]) -> SweepSpec:
    """A follow-up sweep: each of the best configurations once per seed (run first, exactly, in order)."""
    from gist_ray.sweep.space import Dist

    s = copy.deepcopy(spec.search)
    seeds = list(s.repeat_seeds)
    points = [{**cfg, "train.seed": seed} for cfg in best_configs for seed in seeds]
    space: dict[str, Dist] = {}
    for key in sorted({k for p in points for k in p}):
        values = []
        for p in points:
            if p.get(key) not in values:
                values.append(p.get(key))
        space[key] = Dist("choice", values)
    s.initial_points, s.num_samples, s.sampler, s.scheduler = points, len(points), "random", "none"
    s.objectives, s.repeat_best, s.repeat_seeds = {}, 0, []
    s.max_concurrent_trials = spec.search.max_concurrent_trials
    return SweepSpec(f"{spec.name}-seeds", copy.deepcopy(spec.base), s, space, None, spec.source, "none")
