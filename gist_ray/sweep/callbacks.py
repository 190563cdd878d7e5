"""Tune callbacks run by the sweep driver: the MLflow run hierarchy and a progress line."""

from __future__ import annotations

import math
import time
from typing import Any, Callable, Iterable

from ray.tune import Callback

from gist_ray import mlflow_ui, tracking
from gist_ray.config import to_dict
from gist_ray.sweep.space import SweepSpec
from gist_ray.sweep.trial import config_key


class MlflowSweepCallback(Callback):
    """A parent run per sweep, a child run per trial; never left RUNNING.

    ``continued``: unfinished trials of a killed driver (``gist_ray.sweep.ledger``); a new Tune trial with the same
    sampled config takes over the old trial's run (its epochs already logged are not logged again). ``role`` and
    ``protocol`` tag every child (``gist_ray.tracking``); ``tags_for(config)`` adds tags per trial."""

    def __init__(self, spec: SweepSpec, uri: str, experiment: str, role: str = tracking.TUNING,
                 protocol: str | None = None, continued: Iterable[Any] = (),
                 tags_for: Callable[[dict], dict[str, str]] | None = None) -> None:
        self.spec, self.uri, self.experiment = spec, uri, experiment
        self.role, self.protocol, self.tags_for = role, protocol or spec.protocol, tags_for
        self.continued: dict[str, list] = {}
        for t in continued:
            self.continued.setdefault(config_key(t.config), []).append(t)
        self.children: dict[str, str] = {}
        self.logged_epoch: dict[str, int] = {}  # per trial: the last epoch already in MLflow
        self.ended: set[str] = set()  # trials whose run already has its final status (and end time)
        self._c = None

    # -- helpers
    @property
    def c(self):
        if self._c is None:
            self._c = tracking.client(self.uri)
            self.exp_id = tracking.experiment_id(self._c, self.experiment)
        return self._c

    def open_parent(self) -> str:
        s = self.spec.search
        params = {
            "search.sampler": s.sampler, "search.scheduler": s.scheduler, "search.num_samples": s.num_samples,
            "search.metric": s.metric, "search.mode": s.mode, "search.objectives": s.objectives,
            "space": {k: [d.kind, d.args] for k, d in self.spec.space.items()} or "define-by-run",
        }
        self.parent_id, created = tracking.open_run(
            self.c, self.exp_id, {tracking.SWEEP_TAG: self.spec.name, tracking.KIND_TAG: "sweep"}, self.spec.name,
            extra_tags={tracking.PROTOCOL_TAG: self.protocol},
            params=params)
        if created and self.spec.source:
            self.c.log_artifact(self.parent_id, self.spec.source, "sweep")
        return self.parent_id

    def trial_config(self, trial) -> dict:
        return to_dict(self.spec.config_for(trial.config))

    def _child(self, trial) -> str:
        if trial.trial_id in self.children:
            return self.children[trial.trial_id]
        queue = self.continued.get(config_key(trial.config))
        trial_dir = _trial_dir(trial)
        if queue:  # a trial of a killed driver, continued: same run, one more trial directory
            old = queue.pop(0)
            run_id = old.run_id
            self.c.update_run(run_id, "RUNNING")
            self.c.set_tag(run_id, tracking.TRIAL_DIRS_TAG, tracking.json_tag([trial_dir, *old.trial_dirs]))
            self.logged_epoch[trial.trial_id] = tracking.last_epoch(self.c, run_id)
        else:
            cfg = self.trial_config(trial)
            tags = {tracking.SWEEP_TAG: self.spec.name, tracking.TRIAL_TAG: trial.trial_id,
                    tracking.KIND_TAG: "trial", tracking.PARENT_TAG: self.parent_id,
                    tracking.CONFIG_TAG: tracking.json_tag(trial.config),
                    tracking.TRIAL_DIRS_TAG: tracking.json_tag([trial_dir]),
                    **tracking.run_tags(cfg, role=self.role, protocol=self.protocol),
                    **(self.tags_for(trial.config) if self.tags_for else {})}
            run_id = self.c.create_run(self.exp_id, run_name=mlflow_ui.run_name(cfg, trial.config),
                                       tags=tags).info.run_id
            tracking.log_params(self.c, run_id, mlflow_ui.applicable_params(
                {**tracking.flatten(cfg), **{f"sampled.{k}": v for k, v in trial.config.items()}}))
            mlflow_ui.log_datasets(self.c, run_id, self.spec.config_for(trial.config))
        self.children[trial.trial_id] = run_id
        return run_id

    # -- Tune hooks
    def setup(self, **info: Any) -> None:
        self.open_parent()

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self._child(trial)

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        """Log one point per epoch; an epoch already logged (a continued or restored trial) is skipped."""
        run_id = self._child(trial)
        epoch = int(result.get("epoch", result.get("training_iteration", 0)))
        if epoch <= self.logged_epoch.get(trial.trial_id, 0):
            return
        tracking.log_metrics(self.c, run_id, tracking.numeric_metrics(result), step=epoch)
        self.logged_epoch[trial.trial_id] = epoch

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        # a trial stopped before its first report (e.g. the sweep was interrupted) did not finish anything
        status = "FINISHED" if self.logged_epoch.get(trial.trial_id, 0) > 0 else "KILLED"
        self.c.set_terminated(self._child(trial), status)
        self.ended.add(trial.trial_id)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        run_id = self._child(trial)
        self.c.set_tag(run_id, "error", error_message(trial))
        self.c.set_terminated(run_id, "FAILED")
        self.ended.add(trial.trial_id)

    def on_experiment_end(self, trials, **info) -> None:
        self.close(trials, status="FINISHED")

    def close(self, trials=(), status: str = "FINISHED") -> None:
        """Give every child not yet ended its trial's final status (unfinished ones KILLED, to be continued by
        ``--resume``; a run already ended keeps its status and end time), then close the parent."""
        final = {"TERMINATED": "FINISHED", "ERROR": "FAILED"}
        for trial in trials:
            run_id = self.children.get(trial.trial_id)
            if trial.trial_id in self.ended or run_id is None:
                continue
            reported = self.logged_epoch.get(trial.trial_id, 0) > 0
            self.c.set_terminated(run_id, final.get(trial.status, "KILLED") if reported else "KILLED")
            self.ended.add(trial.trial_id)
        close_sweep_runs(self.uri, self.experiment, self.spec.name, status)

    def not_taken_over(self) -> list:
        """Continued trials no new trial took over (none ran their config)."""
        return [t for queue in self.continued.values() for t in queue]

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_c"] = None  # the MLflow client is rebuilt after unpickling (Tune saves callbacks)
        return state


def _trial_dir(trial) -> str:
    """Where Tune keeps the trial's files and checkpoints, as a URI (a plain path on local storage)."""
    fs = trial.storage.storage_filesystem
    kind = getattr(fs, "type_name", "local")
    return trial.path if kind == "local" else f"{kind}://{trial.path}"


def close_sweep_runs(uri: str, experiment: str, sweep: str, status: str = "KILLED") -> None:
    """Close whatever of sweep ``sweep`` is still RUNNING in MLflow (children KILLED, the parent ``status``)."""
    c = tracking.client(uri)
    exp = tracking.experiment_id(c, experiment)
    tracking.close_open_runs(c, exp, {tracking.SWEEP_TAG: sweep, tracking.KIND_TAG: "trial"}, "KILLED")
    tracking.close_open_runs(c, exp, {tracking.SWEEP_TAG: sweep, tracking.KIND_TAG: "sweep"}, status)


def error_message(trial) -> str:
    """The last line of the trial's error (e.g. ``FloatingPointError: training loss became nan``)."""
    msg = getattr(trial, "error_msg", None) or ""
    path = getattr(trial, "error_file", None)
    if not msg and path:
        try:
            with open(path) as f:
                msg = f.read()
        except OSError:
            pass
    lines = [ln for ln in str(msg).strip().splitlines() if ln.strip()]
    return (lines[-1] if lines else "unknown error")[:4000]


class ProgressCallback(Callback):
    """One line per finished trial: done / running / errored and the best metric so far, counting the trials a
    resumed sweep had already done (``done_before``, ``errored_before``, ``best``)."""

    def __init__(self, metric: str, mode: str, total: int, done_before: int = 0, errored_before: int = 0,
                 best: float | None = None) -> None:
        self.metric, self.mode, self.total = metric, mode, total
        self.before, self.errored_before = done_before, errored_before
        self.best = best
        self.t0 = time.perf_counter()

    def _line(self, trials, ending, status: str) -> None:
        """``ending`` is the trial Tune is ending right now, with ``status``: the hook runs before Tune sets it."""
        statuses = [status if t is ending else t.status for t in trials]
        err = statuses.count("ERROR") + self.errored_before
        done = statuses.count("TERMINATED") + self.before - self.errored_before
        running = statuses.count("RUNNING")
        for t, st in zip(trials, statuses):
            v = (t.last_result or {}).get(self.metric)
            if st == "TERMINATED" and isinstance(v, (int, float)) and math.isfinite(v):
                if self.best is None or (v > self.best if self.mode == "max" else v < self.best):
                    self.best = v
        best = "-" if self.best is None else f"{self.best:.4f}"
        print(f"[sweep {time.perf_counter() - self.t0:6.0f}s] {done + err}/{self.total} finished "
              f"({err} errored), {running} running; best {self.metric} {best}", flush=True)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._line(trials, trial, "TERMINATED")

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._line(trials, trial, "ERROR")
