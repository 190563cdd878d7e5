"""Run (or resume) a sweep: Ray Tune + Optuna over a validated space, every trial an MLflow child run."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gist_ray.config import ConfigError, build_config, to_dict
from gist_ray.sweep.space import SweepSpec, apply_overrides


@dataclass
class TrialRow:
    trial_id: str
    status: str
    config: dict[str, Any]
    metrics: dict[str, Any]
    error: str = ""


@dataclass
class SweepResult:
    name: str
    path: str
    metric: str
    mode: str
    rows: list[TrialRow] = field(default_factory=list)
    wall_s: float = 0.0
    refit: dict[str, Any] = field(default_factory=dict)
    repeats: "SweepResult | None" = None
    pareto_dir: str = ""

    def ok_rows(self) -> list[TrialRow]:
        return [r for r in self.rows if r.status == "TERMINATED" and _finite(r.metrics.get(self.metric))]

    def best(self) -> TrialRow | None:
        ok = self.ok_rows()
        if not ok:
            return None
        pick = max if self.mode == "max" else min
        return pick(ok, key=lambda r: r.metrics[self.metric])


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def absolute_paths(raw: dict) -> dict:
    """Trials run in other directories: make the base config's local paths absolute."""
    import copy

    raw = copy.deepcopy(raw)
    cfg = build_config(raw)
    raw["output_dir"] = cfg.output_dir if "://" in cfg.output_dir else str(Path(cfg.output_dir).resolve())
    if cfg.data.root:
        raw.setdefault("data", {})["root"] = str(Path(cfg.data.root).resolve())
    if cfg.model.weights not in ("auto", "none", "hub"):
        raw.setdefault("model", {})["weights"] = str(Path(cfg.model.weights).resolve())
    uri = cfg.tracking.uri
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        raw.setdefault("tracking", {})["uri"] = "sqlite:///" + str(Path(uri[len("sqlite:///"):]).resolve())
    return raw


def backbones_in(spec: SweepSpec) -> list[str]:
    d = spec.space.get("model.backbone")
    names = [str(v) for v in d.probe_values()] if d else []
    return names or [build_config(spec.base).model.backbone]


def prepare_weights(spec: SweepSpec) -> None:
    """Build cached synthetic-pretrained backbones once in the driver, not in every trial."""
    from gist_ray.pretrain import ensure_pretrained

    ensure_pretrained(backbones_in(spec), build_config(spec.base).model.weights)


def run_sweep(spec: SweepSpec, resume: bool = False, verbose: bool = True) -> SweepResult:
    """Fit the sweep described by ``spec``; with ``resume`` continue an interrupted one of the same name."""
    from ray import tune

    from gist_ray.sweep.callbacks import MlflowSweepCallback, ProgressCallback
    from gist_ray.sweep.search import make_scheduler, make_search_alg
    from gist_ray.sweep.trial import run_trial, trial_resources
    from gist_ray.train.launch import cluster_has_gpu, init_ray

    t0 = time.perf_counter()
    spec.base = absolute_paths(spec.base)
    base_cfg = build_config(spec.base)
    storage = str(Path(base_cfg.output_dir) / "sweeps") if "://" not in base_cfg.output_dir else base_cfg.output_dir + "/sweeps"
    path = f"{storage}/{spec.name}"
    exists = tune.Tuner.can_restore(path)  # local paths and s3:// / gs:// storage alike
    if resume and not exists:
        raise ConfigError(f"--resume {spec.name}: no sweep state at {path}")
    if not resume and exists:
        raise ConfigError(f"sweep {spec.name!r} already exists at {path}; pass --resume to continue it, or rename it")
    prepare_weights(spec)
    d = base_cfg.data
    splits = [d.train_split, d.eval_split, d.test_split]
    if spec.protocol == "vtab":
        splits += ["trainval", "test"]
    from gist_ray.data import preflight

    preflight(d, splits)  # bad data fails here, before Ray starts and before any trial
    init_ray(base_cfg.resources.address)
    if base_cfg.resources.use_gpu is None:
        spec.base.setdefault("resources", {})["use_gpu"] = cluster_has_gpu()
        base_cfg = build_config(spec.base)

    mlflow_cb = MlflowSweepCallback(spec, base_cfg.tracking.uri, base_cfg.tracking.experiment)
    total = spec.search.num_samples
    callbacks = [mlflow_cb, ProgressCallback(spec.search.metric, spec.search.mode, total)] if verbose else [mlflow_cb]
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, base=spec.base, budget=spec.search.max_trainable_params),
        trial_resources(base_cfg),
    )
    if resume:
        tuner = tune.Tuner.restore(path, trainable, resume_unfinished=True, resume_errored=False, restart_errored=False)
    else:
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=make_search_alg(spec),
                scheduler=make_scheduler(spec, base_cfg.train.epochs),
                num_samples=total,
                max_concurrent_trials=spec.search.max_concurrent_trials,
                reuse_actors=True,  # a finished trial's process takes the next one: no re-import of torch/timm
            ),
            run_config=tune.RunConfig(
                name=spec.name,
                storage_path=storage,
                callbacks=callbacks,
                failure_config=tune.FailureConfig(max_failures=spec.search.trial_retries),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
                verbose=0,
            ),
        )
    try:
        grid = tuner.fit()
    except BaseException:
        from gist_ray.sweep.callbacks import close_sweep_runs

        close_sweep_runs(base_cfg.tracking.uri, base_cfg.tracking.experiment, spec.name, "KILLED")
        raise
    result = SweepResult(spec.name, path, spec.search.metric, spec.search.mode, wall_s=time.perf_counter() - t0)
    for r in grid:
        m = dict(r.metrics or {})
        status = "ERROR" if r.error else "TERMINATED"
        err = "" if not r.error else str(r.error).strip().splitlines()[-1][:300]
        result.rows.append(TrialRow(str(m.get("trial_id", "?")), status, dict(r.config or {}), m, err))
    finish_parent(mlflow_cb, spec, result)
    if spec.protocol == "vtab" and result.best() is not None:
        result.refit = refit(spec, result, mlflow_cb)
    if spec.search.repeat_best and result.ok_rows():
        result.repeats = repeat_best(spec, result, verbose)
    return result


def refit(spec: SweepSpec, result: SweepResult, cb) -> dict[str, Any]:
    """VTAB-1k protocol: train the best configuration on train+val, test once; an MLflow run under the sweep."""
    from gist_ray import tracking
    from gist_ray.sweep.analysis import refit_config
    from gist_ray.train.launch import make_trainer
    from gist_ray.train.mlflow_callback import MlflowTrainCallback, open_train_run

    cfg = build_config(refit_config(spec, result.best().config))
    cfg_dict = to_dict(cfg)
    uri = cfg.tracking.uri
    run_id = open_train_run(uri, cfg.tracking.experiment, cfg.name, cfg_dict)
    c = tracking.client(uri)
    c.set_tag(run_id, tracking.PARENT_TAG, cb.parent_id)
    c.set_tag(run_id, tracking.KIND_TAG + "_phase", "refit")
    status = "FAILED"
    try:
        out = make_trainer(cfg, callbacks=[MlflowTrainCallback(uri, run_id)]).fit()
        status = "FINISHED"
    finally:
        c.set_terminated(run_id, status)
    metrics = dict(out.metrics or {})
    if "test/acc" in metrics:
        c.log_metric(cb.parent_id, "refit/test/acc", float(metrics["test/acc"]))
    print(f"refit of the best configuration on {cfg.data.train_split}: test/acc={metrics.get('test/acc')}")
    return metrics


def repeat_best(spec: SweepSpec, result: SweepResult, verbose: bool) -> "SweepResult":
    """Rerun the best ``repeat_best`` configurations over ``repeat_seeds``; report mean and spread."""
    from gist_ray.sweep.analysis import repeat_spec

    sign = -1 if spec.search.mode == "max" else 1
    ranked = sorted(result.ok_rows(), key=lambda r: sign * r.metrics[spec.search.metric])
    best = [dict(r.config) for r in ranked[: spec.search.repeat_best]]
    follow = repeat_spec(spec, best)
    from ray import tune

    resume = tune.Tuner.can_restore(f"{result.path.rsplit('/', 1)[0]}/{follow.name}")
    repeats = run_sweep(follow, resume=resume, verbose=verbose)
    summarise_repeats(spec, best, repeats)
    return repeats


def summarise_repeats(spec: SweepSpec, best: list[dict], repeats: SweepResult) -> None:
    """Mean and sample std over seeds of each repeated configuration; printed and logged on the parent run."""
    import statistics

    from gist_ray import tracking
    from gist_ray.sweep.callbacks import MlflowSweepCallback

    metric = spec.search.metric
    parent = MlflowSweepCallback(spec, *_tracking_target(spec)).open_parent()
    c = tracking.client(_tracking_target(spec)[0])
    for rank, cfg in enumerate(best, start=1):
        vals = [r.metrics[metric] for r in repeats.ok_rows() if {k: r.config.get(k) for k in cfg} == cfg]
        if not vals:
            continue
        mean = statistics.fmean(vals)
        std = statistics.stdev(vals) if len(vals) > 1 else 0.0
        print(f"best #{rank} over {len(vals)} seeds: {metric} = {mean:.4f} +- {std:.4f}  {cfg}")
        c.log_metric(parent, f"repeat{rank}/{metric}/mean", mean)
        c.log_metric(parent, f"repeat{rank}/{metric}/std", std)
    c.set_terminated(parent, "FINISHED")


def _tracking_target(spec: SweepSpec) -> tuple[str, str]:
    cfg = build_config(spec.base)
    return cfg.tracking.uri, cfg.tracking.experiment


def finish_parent(cb, spec: SweepSpec, result: SweepResult) -> None:
    """Log the best config and the results table on the sweep's parent run."""
    import json
    import tempfile

    from gist_ray import tracking

    c, parent = cb.c, getattr(cb, "parent_id", None) or cb.open_parent()
    from gist_ray.sweep.analysis import importances, write_pareto
    from gist_ray.sweep.search import objectives

    best = result.best()
    imp = importances(spec, result.rows)
    for k, v in imp.items():
        c.log_metric(parent, f"importance/{k}", v)
    if best is not None:
        tracking.log_params(c, parent, {f"best.{k}": v for k, v in best.config.items()})
        c.log_metric(parent, f"best/{result.metric}", float(best.metrics[result.metric]))
        c.set_tag(parent, "best_trial_id", best.trial_id)
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp, "trials.md")
        p.write_text(format_table(result))
        c.log_artifact(parent, str(p))
        metrics, modes = objectives(spec)
        if len(metrics) > 1:
            out = Path(result.path) / "pareto" if "://" not in result.path else Path(tmp, "pareto")
            for f in write_pareto(result.rows, list(zip(metrics, modes)), out):
                c.log_artifact(parent, str(f), "pareto")
            result.pareto_dir = str(out)
        if best is not None:
            full = to_dict(build_config(apply_overrides(spec.base, best.config)))
            Path(tmp, "best_config.json").write_text(json.dumps(full, indent=2))
            c.log_artifact(parent, str(Path(tmp, "best_config.json")))
    c.set_terminated(parent, "FINISHED")


def format_table(result: SweepResult) -> str:
    """The trials as an aligned text table, best first; errored trials last with their reason."""
    keys = sorted({k for r in result.rows for k in r.config})
    cols = ["trial", "status", *keys, result.metric, "test/acc", "epochs", "params"]
    sign = -1 if result.mode == "max" else 1
    rows = sorted(result.rows, key=lambda r: (r.status != "TERMINATED",
                                              sign * r.metrics.get(result.metric, 0.0) if _finite(r.metrics.get(result.metric)) else 0))

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return "-" if v is None else str(v)

    table = [cols]
    for r in rows:
        m = r.metrics
        table.append([r.trial_id, r.status, *[fmt(r.config.get(k)) for k in keys], fmt(m.get(result.metric)),
                      fmt(m.get("test/acc")), fmt(m.get("epoch")), fmt(m.get("params/total"))])
    widths = [max(len(row[i]) for row in table) for i in range(len(cols))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    errors = [f"  {r.trial_id}: {r.error}" for r in rows if r.error]
    return "\n".join(lines + (["errors:", *errors] if errors else [])) + "\n"
