"""Run (or resume) a sweep: Ray Tune + Optuna over a validated space, every trial an MLflow child run.

Resuming: MLflow is the record of finished trials. Every invocation, first or ``--resume``, reads the sweep's
trial runs back (``gist_ray.sweep.ledger``) and runs one fresh Tune experiment over what is left:

- a trial run FINISHED or FAILED is done: its sampled config and final metrics go to the new Optuna study as an
  evaluated trial (COMPLETE / FAIL) and it is never scheduled again;
- any other trial run (RUNNING after a SIGKILL, KILLED after an interrupt) is continued: its config is scheduled
  first, the new Tune trial takes over its MLflow run (epochs already logged are not logged again) and resumes
  from the newest checkpoint in the trial directories that trained it (tag ``gist_ray.trial_dirs``), or, for a
  ``TorchTrainer`` trial, from its trainer's own storage (same name);
- the rest of ``num_samples`` is sampled anew; the results table, the best trial, the refit and the repeats are
  built from MLflow after the run, so they always agree with it.

Why not ``Tuner.restore``: Tune's experiment state is a snapshot taken at most every few seconds, never at the same
instant as the MLflow write that records a trial's end, so after a SIGKILL it can miss trials that finished
(which were then trained again) or started (duplicated under new ids). MLflow's status of a run is written by the
same hook that ends the trial, one write per event, so the ledger is exact at every kill moment: a trial killed
before its run says FINISHED is continued (from its last checkpoint; its final epoch is never logged twice), one
killed after is done. The refit (``<name>-refit``, a Ray Train run) is found again by its tag: FINISHED is reused,
anything else continues from its checkpoints; the repeats are a sweep of their own (``<name>-seeds``) resumed the
same way.
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from ray import tune
from ray.tune import Callback

from gist_ray import tracking
from gist_ray.config import Config, ConfigError, to_dict
from gist_ray.run_data import preflight_run
from gist_ray.pretrain import ensure_pretrained
from gist_ray.sweep.analysis import importances, refit_config, repeat_spec, summary_metric, write_pareto
from gist_ray.sweep.callbacks import MlflowSweepCallback, ProgressCallback, close_sweep_runs
from gist_ray.sweep.comparison import comparison_files, sweep_note
from gist_ray.sweep.ledger import (
    LedgerTrial,
    ResumePlan,
    optuna_storage,
    plan_resume,
    read_ledger,
    resumed_search_spec,
)
from gist_ray.sweep.search import make_scheduler, make_search_alg, objectives
from gist_ray.sweep.space import SweepSpec
from gist_ray.sweep.trial import config_key, run_trial, trial_resources
from gist_ray.train.inprocess import runs_in_process, train_in_process
from gist_ray.train.launch import cluster_has_gpu, init_ray, make_trainer
from gist_ray.timing import phase
from gist_ray.train.mlflow_callback import MlflowTrainCallback, open_train_run


@dataclass
class TrialRow:
    trial_id: str
    status: str
    config: dict[str, Any]
    metrics: dict[str, Any]
    error: str = ""
    run_id: str = ""


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
    parent_id: str = ""
    complete: bool = False  # every planned trial is done (an interrupted sweep is continued with --resume)

    def ok_rows(self) -> list[TrialRow]:
        return [r for r in self.rows if r.status == "TERMINATED" and tracking.finite(r.metrics.get(self.metric))]

    def best(self) -> TrialRow | None:
        ok = self.ok_rows()
        if not ok:
            return None
        pick = max if self.mode == "max" else min
        return pick(ok, key=lambda r: r.metrics[self.metric])


def backbones_in(spec: SweepSpec) -> list[str]:
    d = spec.space.get("model.backbone")
    names = [str(v) for v in d.probe_values()] if d else []
    return names or [spec.base.model.backbone]


def _per_tokenizer(spec: SweepSpec, base_cfg: Config) -> list[Config]:
    """The base config once per backbone the sweep trains, for text runs (each backbone tokenises into the cache
    with its own tokenizer); image runs: the base config alone (the decoded cache does not depend on it)."""
    if base_cfg.modality != "text":
        return [base_cfg]
    return [dataclasses.replace(base_cfg, model=dataclasses.replace(base_cfg.model, backbone=b))
            for b in backbones_in(spec)]


def prepare_weights(spec: SweepSpec) -> None:
    """Build cached synthetic-pretrained backbones once in the driver, not in every trial."""
    ensure_pretrained(backbones_in(spec), spec.base.model.weights)


def run_sweep(spec: SweepSpec, resume: bool = False, verbose: bool = True, role: str = tracking.TUNING,
              protocol: str | None = None, tags_for: Callable[[dict], dict[str, str]] | None = None,
              callbacks: Sequence[Callback] = ()) -> SweepResult:
    """Fit the sweep described by ``spec``; with ``resume`` continue an interrupted one of the same name.
    ``callbacks`` are extra Ray Tune callbacks (after gist-ray's MLflow and progress ones).

    ``role`` / ``protocol`` (default ``spec.protocol``) tag every trial run (``gist_ray.tracking``);
    ``tags_for(config)`` adds tags per trial (a repeat's selection rank). Resuming redoes no finished work at
    whatever moment the driver was killed: see the module docstring."""
    t0 = time.perf_counter()
    base_cfg = spec.base
    storage = str(Path(base_cfg.output_dir) / "sweeps") if "://" not in base_cfg.output_dir else base_cfg.output_dir + "/sweeps"
    path = f"{storage}/{spec.name}"
    uri, experiment = base_cfg.tracking.uri, base_cfg.tracking.experiment
    with phase("driver/mlflow_ledger"):
        c = tracking.client(uri)
        exp_id = tracking.experiment_id(c, experiment)
        ledger = read_ledger(c, exp_id, spec.name)
    exists = ledger.parent_id is not None or tune.Tuner.can_restore(path)  # local and s3:// / gs:// storage alike
    if resume and not exists:
        raise ConfigError(f"--resume {spec.name}: no sweep state at {path} and no sweep {spec.name!r} in MLflow")
    if not resume and exists:
        raise ConfigError(f"sweep {spec.name!r} already exists at {path}; pass --resume to continue it, or rename it")
    if not exists:  # trial runs left under this name without a sweep (by hand, or a store copied around)
        for t in ledger.trials:
            tracking.retire_run(c, t.run_id, f"a trial run of no sweep: sweep {spec.name!r} started anew")
        ledger.trials = []
    plan = plan_resume(spec, ledger)
    for t in plan.retired:
        tracking.retire_run(c, t.run_id, "unfinished duplicate of a continued trial; its slot is sampled anew")
    mlflow_cb = MlflowSweepCallback(spec, uri, experiment, role=role, protocol=protocol, continued=plan.continued,
                                    tags_for=tags_for)
    with phase("driver/mlflow_parent"):
        parent_id = mlflow_cb.open_parent()
    if resume and ledger.trials:
        print(f"[sweep {spec.name}] resuming: {len(plan.evaluated)} trials done (not rerun), "
              f"{len(plan.continued)} unfinished (continued), {plan.to_run - len(plan.continued)} new", flush=True)
    all_ended = True
    if plan.to_run:
        base_cfg = _start(spec, base_cfg)
        with phase("driver/tune_fit"):
            all_ended = _fit(spec, plan, base_cfg, storage, [mlflow_cb, *_progress(spec, plan, verbose), *callbacks])
        if all_ended:  # a continued trial whose config no trial ran: its slot went to a new run
            for t in mlflow_cb.not_taken_over():
                tracking.retire_run(c, t.run_id, "unfinished trial not taken over by the resumed sweep")
    ledger = read_ledger(c, exp_id, spec.name)
    result = SweepResult(spec.name, path, spec.search.metric, spec.search.mode, wall_s=time.perf_counter() - t0,
                         rows=[_row(t) for t in ledger.trials], parent_id=parent_id)
    result.complete = all_ended and not ledger.unfinished()
    if not result.complete:
        tracking.close_open_runs(c, exp_id, {tracking.SWEEP_TAG: spec.name}, "KILLED")
        print(f"[sweep {spec.name}] interrupted with {len(ledger.unfinished())} unfinished trials: "
              f"continue it with --resume", flush=True)
        return result
    with phase("driver/finish_parent"):
        finish_parent(c, spec, result)
    if spec.protocol == "vtab" and result.best() is not None:
        result.refit = refit(spec, result)
    if spec.search.repeat_best and result.ok_rows():
        result.repeats = repeat_best(spec, result, verbose)
    return result


def _start(spec: SweepSpec, base_cfg: Config) -> Config:
    """Pretrained weights, data preflight and Ray, before the first trial; returns the config (GPU resolved)."""
    with phase("driver/pretrain"):
        prepare_weights(spec)
    d = base_cfg.data
    splits = [d.train_split, d.eval_split, d.test_split]
    if spec.protocol == "vtab":
        splits += ["trainval", "test"]
    with phase("driver/preflight"):
        for cfg in _per_tokenizer(spec, base_cfg):  # bad data fails here, before Ray starts and before any trial
            preflight_run(cfg, splits)
    with phase("driver/ray_init"):
        init_ray(base_cfg.resources.address)
    if base_cfg.resources.use_gpu is None:  # no revalidation: one field set from what the cluster has
        base_cfg = dataclasses.replace(base_cfg, resources=dataclasses.replace(base_cfg.resources,
                                                                               use_gpu=cluster_has_gpu()))
        spec.base = base_cfg
    return base_cfg


def _progress(spec: SweepSpec, plan: ResumePlan, verbose: bool) -> list[Callback]:
    """The progress line (one per finished trial), counting the trials a resumed sweep had already done."""
    if not verbose:
        return []
    metric = spec.search.metric
    done = [t for t in plan.evaluated if tracking.finite(t.metrics.get(metric))]
    best = (max if spec.search.mode == "max" else min)((t.metrics[metric] for t in done), default=None)
    return [ProgressCallback(metric, spec.search.mode, spec.search.num_samples, done_before=len(plan.evaluated),
                             errored_before=sum(t.status == "FAILED" for t in plan.evaluated), best=best)]


def _fit(spec: SweepSpec, plan: ResumePlan, base_cfg: Config, storage: str, callbacks: list[Callback]) -> bool:
    """One Tune run over the plan's trials: a fresh Tuner whose searcher already holds the done trials.
    Returns whether every trial Tune made ended (False after an interrupt left some pending)."""
    search_spec = resumed_search_spec(spec, plan)
    # epochs without an evaluation (train.eval_every > 1) report no val/acc: Tune's strict check would stop the sweep
    # at the first one; the searcher (OptunaSearchOnEvaluations) and ASHA act on evaluated epochs only, and
    # MLflow gets only the points that were measured
    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
    ot_storage, study_name = optuna_storage(search_spec, plan.evaluated)
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, base=spec.base, budget=spec.search.max_trainable_params,
                             resume=plan.resume_map()),
        trial_resources(base_cfg),
    )
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=make_search_alg(search_spec, storage=ot_storage, study_name=study_name),
            scheduler=make_scheduler(spec, base_cfg.train.epochs),
            num_samples=plan.to_run,
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
        close_sweep_runs(base_cfg.tracking.uri, base_cfg.tracking.experiment, spec.name, "KILLED")
        raise
    return all(r.error is not None or r.metrics for r in grid)


def _row(t: LedgerTrial) -> TrialRow:
    status = {"FINISHED": "TERMINATED", "FAILED": "ERROR"}.get(t.status, t.status)
    return TrialRow(t.trial_id, status, dict(t.config), {**t.metrics, "trial_id": t.trial_id}, t.error[-300:],
                    t.run_id)


def refit(spec: SweepSpec, result: SweepResult) -> dict[str, Any]:
    """VTAB-1k protocol: train the best configuration on train+val, test once; an MLflow run under the sweep.
    A refit already FINISHED is not redone; an unfinished one continues from its checkpoints."""
    cfg = refit_config(spec, result.best().config)
    uri = cfg.tracking.uri
    c = tracking.client(uri)
    done = tracking.find_run(c, tracking.experiment_id(c, cfg.tracking.experiment),
                             {tracking.RUN_TAG: cfg.name, tracking.KIND_TAG: "train"})
    if done is not None and done.info.status == "FINISHED":
        metrics = dict(done.data.metrics)
        print(f"refit of the best configuration already done (run {done.info.run_id}): test/acc={metrics.get('test/acc')}")
        return metrics
    run_id = open_train_run(uri, cfg.tracking.experiment, cfg.name, to_dict(cfg), role=tracking.REFIT,
                            protocol="vtab", extra_tags={tracking.PARENT_TAG: result.parent_id,
                                                         tracking.RANK_TAG: "1", tracking.KIND_TAG + "_phase": "refit"})
    _start(spec, spec.base)
    status = "KILLED"  # an interrupt: the next --resume continues it
    try:
        if runs_in_process(cfg):  # one local worker: no Train controller to start
            metrics, _ = train_in_process(cfg, run_id, progress=f"refit on {cfg.data.train_split}")
        else:
            print(f"refit of the best configuration on {cfg.data.train_split} ({cfg.train.epochs} epochs, "
                  f"{cfg.resources.num_workers} Ray Train workers) ...", flush=True)
            metrics = dict(make_trainer(cfg, callbacks=[MlflowTrainCallback(uri, run_id)]).fit().metrics or {})
        status = "FINISHED"
    except Exception:
        status = "FAILED"
        raise
    finally:
        c.set_terminated(run_id, status)
    if "test/acc" in metrics:
        c.log_metric(result.parent_id, "refit/test/acc", float(metrics["test/acc"]))
    print(f"refit of the best configuration on {cfg.data.train_split}: test/acc={metrics.get('test/acc')}")
    return metrics


def repeat_best(spec: SweepSpec, result: SweepResult, verbose: bool) -> "SweepResult":
    """Rerun the best ``repeat_best`` configurations over ``repeat_seeds``; report mean and spread. Its runs are
    tagged role ``repeat``, the sweep's protocol and their configuration's rank (1 = best)."""
    sign = -1 if spec.search.mode == "max" else 1
    ranked = sorted(result.ok_rows(), key=lambda r: sign * r.metrics[spec.search.metric])
    best = [dict(r.config) for r in ranked[: spec.search.repeat_best]]
    follow = repeat_spec(spec, best)
    ranks = {config_key(_without_seed(cfg)): rank for rank, cfg in enumerate(best, start=1)}

    def rank_tag(config: dict) -> dict[str, str]:
        rank = ranks.get(config_key(_without_seed(config)))
        return {tracking.RANK_TAG: str(rank)} if rank else {}

    repeats = run_sweep(follow, resume=sweep_exists(follow), verbose=verbose, role=tracking.REPEAT,
                        protocol=spec.protocol, tags_for=rank_tag)
    if repeats.complete:
        summarise_repeats(spec, best, repeats, result.parent_id, summary_metric(spec))
    return repeats


def _without_seed(config: dict) -> dict:
    return {k: v for k, v in config.items() if k != "train.seed"}


def sweep_exists(spec: SweepSpec) -> bool:
    """A sweep of this name has run before: its parent run is in MLflow or its Tune state on disk."""
    cfg = spec.base
    c = tracking.client(cfg.tracking.uri)
    parent = tracking.find_run(c, tracking.experiment_id(c, cfg.tracking.experiment),
                               {tracking.SWEEP_TAG: spec.name, tracking.KIND_TAG: "sweep"})
    out = cfg.output_dir if "://" in cfg.output_dir else str(Path(cfg.output_dir))
    return parent is not None or tune.Tuner.can_restore(f"{out}/sweeps/{spec.name}")


def summarise_repeats(spec: SweepSpec, best: list[dict], repeats: SweepResult, parent_id: str,
                      metric: str) -> None:
    """Mean and sample std over seeds of ``metric`` for each repeated configuration; printed and logged on the
    parent run."""
    c = tracking.client(spec.base.tracking.uri)
    logged = c.get_run(parent_id).data.metrics  # a resumed sweep that ran nothing new does not log them again
    for rank, cfg in enumerate(best, start=1):
        vals = [r.metrics[metric] for r in repeats.ok_rows()
                if {k: r.config.get(k) for k in cfg} == cfg and tracking.finite(r.metrics.get(metric))]
        if not vals:
            continue
        mean = statistics.fmean(vals)
        std = statistics.stdev(vals) if len(vals) > 1 else 0.0
        print(f"best #{rank} over {len(vals)} seeds: {metric} = {mean:.4f} +- {std:.4f}  {cfg}")
        if f"repeat{rank}/{metric}/mean" not in logged:
            c.log_metric(parent_id, f"repeat{rank}/{metric}/mean", mean)
            c.log_metric(parent_id, f"repeat{rank}/{metric}/std", std)


def finish_parent(c, spec: SweepSpec, result: SweepResult) -> None:
    """Log the best config and the results table on the sweep's parent run (the best once: a resumed sweep that
    ran nothing new does not log it again)."""
    parent = result.parent_id
    best = result.best()
    again = best is not None and c.get_run(parent).data.tags.get("best_trial_id") == best.trial_id
    if not again:
        for k, v in importances(spec, result.rows).items():
            c.log_metric(parent, f"importance/{k}", v)
    if best is not None and not again:
        tracking.log_params(c, parent, {f"best.{k}": v for k, v in best.config.items()})
        c.log_metric(parent, f"best/{result.metric}", float(best.metrics[result.metric]))
        c.set_tag(parent, "best_trial_id", best.trial_id)
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp, "trials.md")
        p.write_text(format_table(result))
        c.log_artifact(parent, str(p))
        for f in comparison_files(spec.config_for, result.rows, result.metric, result.mode, Path(tmp)):
            c.log_artifact(parent, str(f))
        c.set_tag(parent, "mlflow.note.content", sweep_note(parent, result.rows, result.metric, result.mode,
                                                              spec.config_for))
        metrics, modes = objectives(spec)
        if len(metrics) > 1:
            out = Path(result.path) / "pareto" if "://" not in result.path else Path(tmp, "pareto")
            for f in write_pareto(result.rows, list(zip(metrics, modes)), out):
                c.log_artifact(parent, str(f), "pareto")
            result.pareto_dir = str(out)
        if best is not None:
            full = to_dict(spec.config_for(best.config))
            Path(tmp, "best_config.json").write_text(json.dumps(full, indent=2))
            c.log_artifact(parent, str(Path(tmp, "best_config.json")))
    c.set_terminated(parent, "FINISHED")


def format_table(result: SweepResult) -> str:
    """The trials as an aligned text table, best first; errored trials last with their reason. A test/acc column
    (test/score when the sweep ranks by a score) only where trials were tested (``search.test_trials``)."""
    keys = sorted({k for r in result.rows for k in r.config})
    test_key = "test/score" if result.metric.endswith("/score") else "test/acc"  # score: text runs' task metric
    tested = result.metric != test_key and any(test_key in r.metrics for r in result.rows)
    cols = ["trial", "status", *keys, result.metric, *([test_key] if tested else []), "epochs", "params"]
    sign = -1 if result.mode == "max" else 1

    def order(r: TrialRow) -> tuple[bool, float]:
        value = r.metrics.get(result.metric)
        return r.status != "TERMINATED", sign * value if tracking.finite(value) else 0.0

    rows = sorted(result.rows, key=order)

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return "-" if v is None else str(v)

    table = [cols]
    for r in rows:
        m = r.metrics
        off = r.config.get("gist.enabled") is False  # its sampled lambda, T, mu did nothing: not shown
        table.append([r.trial_id, r.status, *["-" if off and k.startswith("gist.") and k != "gist.enabled"
                                              else fmt(r.config.get(k)) for k in keys], fmt(m.get(result.metric)),
                      *([fmt(m.get(test_key))] if tested else []), fmt(m.get("epoch")), fmt(m.get("params/total"))])
    widths = [max(len(row[i]) for row in table) for i in range(len(cols))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    errors = [f"  {r.trial_id}: {r.error}" for r in rows if r.error]
    return "\n".join(lines + (["errors:", *errors] if errors else [])) + "\n"
