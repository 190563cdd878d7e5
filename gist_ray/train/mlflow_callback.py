"""MLflow logging for a single ``gist-ray train`` run (and a sweep's VTAB refit).

The driver opens (or, on a rerun with the same name, reopens) the run and closes it; the callback, which Ray
Train runs in its controller process, logs rank 0's metrics after every report, each epoch once: a resumed run
re-reports the epochs after its last checkpoint, and those already in MLflow are skipped. One writer at a time.
"""

from __future__ import annotations

from typing import Any

from ray.train import UserCallback

from gist_ray import mlflow_ui, tracking
from gist_ray.config import build_config


def open_train_run(uri: str, experiment: str, run_name: str, cfg_dict: dict, role: str = tracking.SINGLE,
                   protocol: str = "none", extra_tags: dict[str, str] | None = None) -> str:
    """Find the run tagged ``run_name`` (resume) or create it with its role and protocol tags; returns its id,
    status RUNNING."""
    c = tracking.client(uri)
    exp = tracking.experiment_id(c, experiment)
    shown = mlflow_ui.run_name(cfg_dict, role=role) if role == tracking.REFIT else \
        f"{run_name} | {mlflow_ui.run_name(cfg_dict)}"
    run_id, _ = tracking.open_run(c, exp, {tracking.RUN_TAG: run_name, tracking.KIND_TAG: "train"}, shown,
                                  extra_tags={**tracking.run_tags(cfg_dict, role=role, protocol=protocol),
                                              **(extra_tags or {})},
                                  params=mlflow_ui.applicable_params(tracking.flatten(cfg_dict)))
    mlflow_ui.log_datasets(c, run_id, build_config(cfg_dict))
    return run_id


class MlflowTrainCallback(UserCallback):
    """Logs each report's metrics (step = epoch) to an already open run; an epoch already logged is skipped."""

    def __init__(self, uri: str, run_id: str) -> None:
        self.uri, self.run_id = uri, run_id
        self.logged_epoch: int | None = None  # read from MLflow at the first report (in the controller process)

    def after_report(self, run_context, metrics: list[dict[str, Any]], checkpoint) -> None:
        c = tracking.client(self.uri)
        if self.logged_epoch is None:
            self.logged_epoch = tracking.last_epoch(c, self.run_id)
        m = tracking.numeric_metrics(metrics[0])
        epoch = int(m.get("epoch", 0))
        if epoch and epoch <= self.logged_epoch:
            return
        tracking.log_metrics(c, self.run_id, m, step=epoch)
        self.logged_epoch = max(self.logged_epoch, epoch)

    def after_exception(self, run_context, worker_exceptions: dict) -> None:
        first = next(iter(worker_exceptions.values()), None)
        tracking.client(self.uri).set_tag(self.run_id, "error", repr(first)[:5000])
