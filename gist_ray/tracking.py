"""MLflow: experiments, a parent run per sweep, a child run per trial, tags, and closing runs.

All writes happen in one process (the Tune driver, or the Train controller for ``gist-ray train``), so the
default SQLite store never sees concurrent writers. Runs are found again by tags (``gist_ray.sweep``,
``gist_ray.trial_id``, ``gist_ray.run``), so a resumed sweep or run reuses them instead of duplicating.
"""

from __future__ import annotations

import math
import os
from typing import Any, Iterable

KIND_TAG = "gist_ray.kind"
SWEEP_TAG = "gist_ray.sweep"
TRIAL_TAG = "gist_ray.trial_id"
RUN_TAG = "gist_ray.run"
PARENT_TAG = "mlflow.parentRunId"


def client(uri: str):
    import mlflow
    from mlflow.tracking import MlflowClient

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    mlflow.set_tracking_uri(uri)
    return MlflowClient(tracking_uri=uri)


def experiment_id(c, name: str) -> str:
    exp = c.get_experiment_by_name(name)
    return exp.experiment_id if exp else c.create_experiment(name)


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def run_tags(cfg_dict: dict) -> dict[str, str]:
    """The tags researchers filter on: method, backbone, gist on/off, dataset, seed."""
    data = cfg_dict["data"]
    dataset = data["task"] if data["name"] in ("synthetic", "vtab", "fgvc") else data["name"]
    return {
        "method": cfg_dict["method"]["name"],
        "backbone": cfg_dict["model"]["backbone"],
        "gist": str(bool(cfg_dict["gist"]["enabled"])).lower(),
        "dataset": dataset,
        "data_source": data["name"],
        "seed": str(cfg_dict["train"]["seed"]),
    }


def numeric_metrics(result: dict) -> dict[str, float]:
    """Our metrics from a Tune/Train result (``a/b`` keys and a few timing keys), finite numbers only."""
    keep = ("epoch", "lr", "epoch_time_s", "time_total_s")
    out = {}
    for k, v in result.items():
        if ("/" in k or k in keep) and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            out[k] = float(v)
    return out


def find_run(c, exp_id: str, tags: dict[str, str]):
    flt = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
    runs = c.search_runs([exp_id], filter_string=flt, max_results=1)
    return runs[0] if runs else None


def log_params(c, run_id: str, params: dict[str, Any]) -> None:
    from mlflow.entities import Param

    existing = c.get_run(run_id).data.params
    batch = [Param(k, str(v)[:6000]) for k, v in params.items() if k not in existing]
    for i in range(0, len(batch), 100):
        c.log_batch(run_id, params=batch[i : i + 100])


def log_metrics(c, run_id: str, metrics: dict[str, float], step: int) -> None:
    import time

    from mlflow.entities import Metric

    ts = int(time.time() * 1000)
    c.log_batch(run_id, metrics=[Metric(k, v, ts, step) for k, v in metrics.items()])


def close_open_runs(c, exp_id: str, tags: dict[str, str], status: str = "KILLED") -> int:
    """Terminate runs matching ``tags`` still marked RUNNING (e.g. after a crash); returns how many."""
    flt = " and ".join([f"tags.`{k}` = '{v}'" for k, v in tags.items()] + ["attributes.status = 'RUNNING'"])
    runs = c.search_runs([exp_id], filter_string=flt, max_results=10_000)
    for r in runs:
        c.set_terminated(r.info.run_id, status)
    return len(runs)


def ids(runs: Iterable) -> list[str]:
    return [r.info.run_id for r in runs]
