"""MLflow logging for a single ``gist-ray train`` run.

The driver opens (or, on a rerun with the same name, reopens) the run and closes it; the callback, which Ray
Train runs in its controller process, logs rank 0's metrics after every report. One writer at a time.
"""

from __future__ import annotations

from typing import Any

from ray.train import UserCallback

from gist_ray import tracking


def open_train_run(uri: str, experiment: str, run_name: str, cfg_dict: dict) -> str:
    """Find the run tagged ``run_name`` (resume) or create it; returns its id, status RUNNING."""
    c = tracking.client(uri)
    exp = tracking.experiment_id(c, experiment)
    found = tracking.find_run(c, exp, {tracking.RUN_TAG: run_name, tracking.KIND_TAG: "train"})
    if found:
        c.update_run(found.info.run_id, "RUNNING")
        return found.info.run_id
    tags = {tracking.RUN_TAG: run_name, tracking.KIND_TAG: "train", **tracking.run_tags(cfg_dict)}
    run_id = c.create_run(exp, run_name=run_name, tags=tags).info.run_id
    tracking.log_params(c, run_id, tracking.flatten(cfg_dict))
    return run_id


class MlflowTrainCallback(UserCallback):
    """Logs each report's metrics (step = epoch) to an already open run."""

    def __init__(self, uri: str, run_id: str) -> None:
        self.uri, self.run_id = uri, run_id

    def after_report(self, run_context, metrics: list[dict[str, Any]], checkpoint) -> None:
        m = tracking.numeric_metrics(metrics[0])
        tracking.log_metrics(tracking.client(self.uri), self.run_id, m, step=int(m.get("epoch", 0)))

    def after_exception(self, run_context, worker_exceptions: dict) -> None:
        first = next(iter(worker_exceptions.values()), None)
        tracking.client(self.uri).set_tag(self.run_id, "error", repr(first)[:5000])
