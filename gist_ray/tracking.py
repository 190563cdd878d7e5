"""MLflow: experiments, runs found again by tags, paging, roles and protocols, closing runs.

All writes happen in one process (the Tune driver, or the Train controller for ``gist-ray train``), so the
default SQLite store never sees concurrent writers. Runs are found again by tags (``gist_ray.sweep``,
``gist_ray.trial_id``, ``gist_ray.run``), so a resumed sweep or run reuses them instead of duplicating.

Every run that carries a number says what the number is:

- ``gist_ray.role``: ``tuning`` (a trial of a search: a selection score, never a result), ``refit`` (the
  selected configuration retrained and tested once, VTAB protocol), ``repeat`` (a selected configuration rerun
  over seeds), ``cell`` (a study cell), ``single`` (one ``gist-ray train`` run);
- ``gist_ray.protocol``: how its test number was produced: ``vtab`` (select on val200, refit on train800val200,
  test once), ``none`` (train, test once at the end), or any other value a later protocol writes (reports group
  by it and never mix two).
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Any

from gist_ray.mlflow_store import seed_sqlite_store
from gist_ray.mlflow_ui import EXPERIMENT_KIND_TAG, MODEL_TRAINING
from gist_ray.text.config_check import modality_of

KIND_TAG = "gist_ray.kind"  # what the run is in the hierarchy: sweep (parent), trial, train, study
SWEEP_TAG = "gist_ray.sweep"
TRIAL_TAG = "gist_ray.trial_id"
RUN_TAG = "gist_ray.run"
STUDY_TAG = "gist_ray.study"  # written by the study on every run of its sweeps
PARENT_TAG = "mlflow.parentRunId"
ROLE_TAG = "gist_ray.role"
PROTOCOL_TAG = "gist_ray.protocol"
RANK_TAG = "gist_ray.selection_rank"  # 1 = the best configuration of the search that selected it
CONFIG_TAG = "gist_ray.config"  # a trial's sampled overrides, JSON (typed, for resuming its searcher)
TRIAL_DIRS_TAG = "gist_ray.trial_dirs"  # JSON list of the Tune trial directories that trained it, newest first

TUNING, REFIT, REPEAT, CELL, SINGLE = "tuning", "refit", "repeat", "cell", "single"
ROLES = (TUNING, REFIT, REPEAT, CELL, SINGLE)
FINAL_ROLES = (REFIT, REPEAT, CELL, SINGLE)  # runs whose number is a result (tuning trials select, not report)
PROTOCOLS = {
    "vtab": "VTAB-1k protocol: selected on val200, refit on train800val200, tested once",
    "none": "trained on the train split, tested once at the end (no selection on test)",
    "paper": "test evaluated every epoch, best epoch reported as the official GIST code does (not a clean test)",
}
DONE = ("FINISHED", "FAILED")  # final MLflow statuses: the run's work is over (KILLED / RUNNING: unfinished)


def client(uri: str):
    import mlflow
    from mlflow.tracking import MlflowClient

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # "View run ... at" per closed run
    seed_sqlite_store(uri)  # a new local SQLite store: a copy of a migrated empty one (gist_ray.mlflow_store)
    mlflow.set_tracking_uri(uri)
    return MlflowClient(tracking_uri=uri)


def experiment_id(c, name: str) -> str:
    """The experiment's id (created if missing), recorded as model training (``gist_ray.mlflow_ui``)."""
    exp = c.get_experiment_by_name(name)
    if exp is None:
        return c.create_experiment(name, tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING})
    if exp.tags.get(EXPERIMENT_KIND_TAG) != MODEL_TRAINING:
        c.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING)
    return exp.experiment_id


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def run_tags(cfg_dict: dict, role: str | None = None, protocol: str | None = None) -> dict[str, str]:
    """The tags researchers filter on (method, backbone, gist on/off, dataset, seed) and, when given, the run's
    role (one of ``ROLES``) and protocol (free text: ``vtab``, ``none``, ...)."""
    data = cfg_dict["data"]
    dataset = data["task"] if data["name"] in ("synthetic", "vtab", "fgvc", "synthetic_text") else data["name"]
    if data["name"] == "glue":
        dataset = f"glue/{data['task']}"
    tags = {
        "method": cfg_dict["method"]["name"],
        "backbone": cfg_dict["model"]["backbone"],
        "gist": str(bool(cfg_dict["gist"]["enabled"])).lower(),
        "dataset": dataset,
        "data_source": data["name"],
        "seed": str(cfg_dict["train"]["seed"]),
        "modality": modality_of(cfg_dict["model"]["backbone"]),
    }
    if role is not None:
        if role not in ROLES:
            raise ValueError(f"role {role!r}: one of {', '.join(ROLES)}")
        tags[ROLE_TAG] = role
    if protocol is not None:
        tags[PROTOCOL_TAG] = str(protocol)
    return tags


def role_of(tags: dict[str, str]) -> str | None:
    """A run's role: a trial of a study's sweep (tag ``gist_ray.study``) is a cell; else its ``gist_ray.role`` tag,
    else inferred for runs logged before roles existed (sweep parents and study runs have none)."""
    kind = tags.get(KIND_TAG)
    if kind == "trial" and tags.get(STUDY_TAG):
        return CELL
    if tags.get(ROLE_TAG):
        return tags[ROLE_TAG]
    if kind == "trial":
        return REPEAT if tags.get(SWEEP_TAG, "").endswith("-seeds") else TUNING
    if kind == "train":
        return REFIT if tags.get(KIND_TAG + "_phase") == "refit" else SINGLE
    return None


def protocol_of(tags: dict[str, str]) -> str:
    """A run's protocol tag; runs logged before the tag existed: ``vtab`` for refits, else ``none``."""
    if tags.get(PROTOCOL_TAG):
        return tags[PROTOCOL_TAG]
    return "vtab" if role_of(tags) == REFIT else "none"


def finite(v: Any) -> bool:
    """A real number (not a bool) that is neither NaN nor infinite: what a metric must be to count."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def numeric_metrics(result: dict) -> dict[str, float]:
    """Our metrics from a Tune/Train result (``a/b`` keys and a few timing keys), finite numbers only."""
    keep = ("epoch", "lr", "epoch_time_s", "time_total_s")
    return {k: float(v) for k, v in result.items() if ("/" in k or k in keep) and finite(v)}


def tag_filter(tags: dict[str, str], *extra: str) -> str:
    return " and ".join([f"tags.`{k}` = '{v}'" for k, v in tags.items()] + list(extra))


def search_all(c, exp_id: str, filter_string: str = "", deleted: bool = False) -> list:
    """Every run matching ``filter_string`` (all pages), oldest first; ``deleted`` also returns deleted runs."""
    from mlflow.entities import ViewType

    view = ViewType.ALL if deleted else ViewType.ACTIVE_ONLY
    runs, token = [], None
    while True:
        page = c.search_runs([exp_id], filter_string=filter_string, run_view_type=view, max_results=1000,
                             order_by=["attributes.start_time ASC"], page_token=token)
        runs += list(page)
        token = page.token
        if not token:
            return runs


def find_run(c, exp_id: str, tags: dict[str, str]):
    """The oldest active run carrying all of ``tags``, or None."""
    runs = c.search_runs([exp_id], filter_string=tag_filter(tags), max_results=1,
                         order_by=["attributes.start_time ASC"])
    return runs[0] if runs else None


def open_run(c, exp_id: str, tags: dict[str, str], name: str, extra_tags: dict[str, str] | None = None,
             params: dict[str, Any] | None = None) -> tuple[str, bool]:
    """Reopen (status RUNNING) the run identified by ``tags`` or create it with ``extra_tags`` and ``params``.
    Returns ``(run_id, created)``. Tags in ``extra_tags`` that a reopened run lacks are added."""
    found = find_run(c, exp_id, tags)
    if found is not None:
        run_id = found.info.run_id
        if found.info.status != "RUNNING":
            c.update_run(run_id, "RUNNING")
        for k, v in (extra_tags or {}).items():
            if k not in found.data.tags:
                c.set_tag(run_id, k, v)
        return run_id, False
    run_id = c.create_run(exp_id, run_name=name, tags={**tags, **(extra_tags or {})}).info.run_id
    if params:
        log_params(c, run_id, params)
    return run_id, True


def last_epoch(c, run_id: str) -> int:
    """The highest epoch the run has logged (0: none)."""
    return max((int(m.step) for m in c.get_metric_history(run_id, "epoch")), default=0)


def log_params(c, run_id: str, params: dict[str, Any]) -> None:
    from mlflow.entities import Param

    existing = c.get_run(run_id).data.params
    batch = [Param(k, str(v)[:6000]) for k, v in params.items() if k not in existing]
    for i in range(0, len(batch), 100):
        c.log_batch(run_id, params=batch[i : i + 100])


def log_metrics(c, run_id: str, metrics: dict[str, float], step: int) -> None:
    from mlflow.entities import Metric

    ts = int(time.time() * 1000)
    c.log_batch(run_id, metrics=[Metric(k, v, ts, step) for k, v in metrics.items()])


def close_open_runs(c, exp_id: str, tags: dict[str, str], status: str = "KILLED") -> int:
    """Terminate runs matching ``tags`` still marked RUNNING (e.g. after a crash); returns how many."""
    runs = search_all(c, exp_id, tag_filter(tags, "attributes.status = 'RUNNING'"))
    for r in runs:
        c.set_terminated(r.info.run_id, status)
    return len(runs)


def retire_run(c, run_id: str, reason: str) -> None:
    """Take a run out of every count: tagged with ``reason``, KILLED, soft-deleted (``mlflow runs restore --run-id``
    brings it back)."""
    c.set_tag(run_id, "gist_ray.orphaned", reason)
    c.set_terminated(run_id, "KILLED")
    c.delete_run(run_id)


def json_tag(value: Any) -> str:
    """A JSON tag value (MLflow tags hold up to 8000 characters)."""
    text = json.dumps(value, sort_keys=True)
    if len(text) > 8000:
        raise ValueError(f"tag value too long for MLflow ({len(text)} > 8000 characters)")
    return text


def read_json_tag(tags: dict[str, str], key: str, default: Any = None) -> Any:
    try:
        return json.loads(tags[key])
    except (KeyError, TypeError, ValueError):
        return default

