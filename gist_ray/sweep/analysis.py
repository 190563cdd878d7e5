"""After a sweep: Pareto front, Optuna parameter importances, the VTAB refit, repeats of the best over seeds."""

from __future__ import annotations

import copy
import csv
import dataclasses
from pathlib import Path

import optuna
from optuna.distributions import CategoricalDistribution

from gist_ray.config import Config
from gist_ray.sweep.search import optuna_distribution
from gist_ray.sweep.space import Dist, SweepSpec
from gist_ray.tracking import finite


def pareto_rows(rows: list, objectives: list[tuple[str, str]]) -> list:
    """Rows not dominated on every (metric, mode) objective; rows missing an objective are skipped."""
    ok = [r for r in rows if r.status == "TERMINATED" and all(finite(r.metrics.get(m)) for m, _ in objectives)]

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
    pts = [r for r in rows if all(finite(r.metrics.get(n)) for n in names[:2])]
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
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    metric, mode = spec.search.metric, spec.search.mode
    ok = [r for r in rows if r.status == "TERMINATED" and finite(r.metrics.get(metric))]
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


REFIT_SPLITS = {"data.train_split": "trainval", "data.eval_split": None, "data.test_split": "test"}


def refit_config(spec: SweepSpec, best_config: dict) -> Config:
    """The VTAB-1k refit: the best configuration trained on train+val, evaluated on test once."""
    trial = spec.config_for(best_config)
    return dataclasses.replace(trial, name=f"{spec.name}-refit",
                               data=dataclasses.replace(trial.data, train_split="trainval", eval_split=None,
                                                        test_split="test"))


def repeat_spec(spec: SweepSpec, best_configs: list[dict]) -> SweepSpec:
    """A follow-up sweep: each of the best configurations once per seed (run first, exactly, in order). Under the
    VTAB protocol a repeat is the refit of its configuration with another seed (train+val, test once), and the
    repeats are summarised on test accuracy; otherwise on the sweep's metric, with the base config's splits."""
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
    base = spec.base
    if spec.final_test_split and not base.data.test_split:  # the repeats are final runs: they test
        base = dataclasses.replace(base, data=dataclasses.replace(base.data, test_split=spec.final_test_split))
    if spec.protocol == "vtab":
        base = dataclasses.replace(base, data=dataclasses.replace(base.data, train_split="trainval", eval_split=None,
                                                                   test_split="test"))
        s.metric, s.mode = "train/acc", "max"  # reported every epoch (Tune checks it); it selects nothing here
    # protocol "none": the repeats are final runs, never refit again (their runs are tagged with spec.protocol)
    return SweepSpec(f"{spec.name}-seeds", base, s, space, None, spec.source, "none")


def summary_metric(spec: SweepSpec) -> str:
    """What the repeats of a selected configuration are summarised on: test accuracy under the VTAB protocol
    (each repeat is a refit), else the sweep's own metric."""
    return "test/acc" if spec.protocol == "vtab" else spec.search.metric
