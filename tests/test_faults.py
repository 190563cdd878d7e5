"""Multi-node runs and faults on a local two-node Ray cluster (``ray.cluster_utils.Cluster``, 1 CPU per node).

* a 2-worker GIST training (DDP over gloo, with the MLflow callback ``gist-ray train`` gives it) spreads over both
  nodes; one Train worker process is SIGKILLed after epoch 2 and, with ``resources.max_failures=1``, the run
  resumes from its last checkpoint and finishes every epoch;
* the newest Ray Train checkpoint is then truncated: a rerun with the same name resumes from the one before it,
  into the same MLflow run, which holds each epoch once;
* a node hosting a sweep trial is removed mid-sweep: with ``search.trial_retries=1`` the trial is retried
  from its checkpoint on a surviving node and every trial ends TERMINATED.

The module owns its Ray cluster: it shuts down any Ray instance first (e.g. the session's ``ray_local``) and
restarts that one afterwards, so modules that run later still find the Ray they expect.
"""

import json
import os
import signal
import sys
from pathlib import Path

import pytest
import yaml
from ray.tune import Callback

from conftest import TINY_OVERRIDES
from gist_ray import tracking
from gist_ray.config import build_config, to_dict
from gist_ray.train.checkpoint import WEIGHTS_FILE
from gist_ray.train.launch import make_trainer
from gist_ray.train.mlflow_callback import MlflowTrainCallback, open_train_run
from gist_ray.train.worker_log import WorkerMetricsLog

pytestmark = pytest.mark.slow

# reached by the Tune callback below (Tune pickles callbacks with the experiment state: keep the cluster out)
STATE: dict = {}


@pytest.fixture(scope="module")
def cluster():
    import ray
    from ray.cluster_utils import Cluster

    was_up = ray.is_initialized()
    ray.shutdown()
    fast_failure_detection = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 1000,
                              "health_check_failure_threshold": 10}
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False,
                                                      "_system_config": fast_failure_detection})
    worker = c.add_node(num_cpus=1)
    c.wait_for_nodes()
    ray.init(address=c.address, logging_level="WARNING", log_to_driver=False)
    STATE.clear()
    STATE.update(cluster=c, head=c.head_node.node_id, worker=worker.node_id)
    try:
        yield c
    finally:
        STATE.clear()
        ray.shutdown()
        c.shutdown()
        if was_up:  # as tests/conftest.py's ray_local started it
            ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING",
                     log_to_driver=False)


def read_log(path):
    return [json.loads(line) for line in open(path)]


class KillWorkerAfter(WorkerMetricsLog):
    """Logs every report; after the report of epoch ``epoch`` SIGKILLs the process of Train worker ``rank``.

    Runs in the Train controller, between reports: the workers cannot be more than one report ahead.
    """

    def __init__(self, path: str, epoch: int, rank: int) -> None:
        super().__init__(path)
        self.epoch, self.rank, self.done = epoch, rank, False

    def after_report(self, run_context, metrics, checkpoint) -> None:
        super().after_report(run_context, metrics, checkpoint)
        if not self.done and int(metrics[0]["epoch"]) == self.epoch:
            self.done = True
            pid = int(metrics[self.rank]["worker.pid"])
            with open(self.path + ".killed", "w") as f:
                f.write(str(pid))
            os.kill(pid, signal.SIGKILL)


def train_cfg(tmp, *extra):
    return build_config({}, TINY_OVERRIDES + [f"output_dir={tmp}", "name=faulty", "resources.num_workers=2",
                                              "resources.use_gpu=false", "train.checkpoint_every=1",
                                              f"tracking.uri=sqlite:///{tmp}/mlflow.db", *extra])


def fit_logged(cfg, *callbacks):
    """Fit ``cfg`` on Ray Train as ``gist-ray train`` does: its MLflow run opened (a rerun: reopened) by name,
    the MLflow callback after ``callbacks``, the run closed FINISHED. Returns (result, run id)."""
    uri = cfg.tracking.uri
    run_id = open_train_run(uri, cfg.tracking.experiment, cfg.name, to_dict(cfg))
    result = make_trainer(cfg, callbacks=[*callbacks, MlflowTrainCallback(uri, run_id)]).fit()
    tracking.client(uri).set_terminated(run_id, "FINISHED")
    return result, run_id


@pytest.fixture(scope="module")
def killed_run(cluster, tmp_path_factory):
    """One 4-epoch, 2-worker training over both nodes whose rank-1 worker is killed after epoch 2."""
    tmp = tmp_path_factory.mktemp("killed")
    log = tmp / "workers.jsonl"
    cfg = train_cfg(tmp, "train.epochs=4", "resources.max_failures=1")
    # the Train controller unpickles the callback; Ray workers cannot import tests/ by name: ship it by value
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        result, run_id = fit_logged(cfg, KillWorkerAfter(str(log), epoch=2, rank=1))
    finally:
        ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    return {"tmp": tmp, "log": log, "result": result, "reports": read_log(log), "run_id": run_id, "cfg": cfg,
            "killed": int(Path(str(log) + ".killed").read_text())}


def test_two_workers_train_on_two_different_nodes(killed_run):
    reports = killed_run["reports"]
    for rep in reports:
        w0, w1 = rep["workers"]
        assert w0["worker.node_id"] != w1["worker.node_id"]
        assert {w0["worker.node_id"], w1["worker.node_id"]} == {STATE["head"], STATE["worker"]}
        assert w0["gist/token_sum"] == w1["gist/token_sum"]  # bitwise: DDP across nodes applies identical updates
        assert w0["gist/token_norm"] == w1["gist/token_norm"]
        assert w0["val/acc"] == w1["val/acc"]  # evaluation is sharded, then all-reduced
    assert len({r["workers"][0]["gist/token_norm"] for r in reports}) == 4  # the token trained every epoch


def test_a_killed_worker_resumes_from_the_last_checkpoint_and_finishes(killed_run):
    reports, killed = killed_run["reports"], killed_run["killed"]
    epochs = [r["workers"][0]["epoch"] for r in reports]
    # the worker was killed after the controller handled epoch 2's report; a worker may be one report ahead of
    # the controller, so epoch 3 may already have been reported (and checkpointed) by the killed group. Either
    # way the restart resumed from the last checkpoint: every epoch reported exactly once, in order
    assert epochs == [1, 2, 3, 4]
    rank1_pids = [r["workers"][1]["worker.pid"] for r in reports]
    n_old = rank1_pids.count(killed)
    assert n_old in (2, 3) and rank1_pids[:n_old] == [killed] * n_old, rank1_pids
    assert len(set(rank1_pids[n_old:])) == 1 and n_old < len(rank1_pids), rank1_pids  # a new worker group went on
    assert all(r["checkpoint"] for r in reports)
    result = killed_run["result"]
    assert result.error is None and result.metrics["epoch"] == 4 and "test/acc" in result.metrics


def test_a_truncated_newest_ray_checkpoint_falls_back_to_the_previous_one(killed_run):
    """The rerun (same name, one epoch more) resumes from epoch 3 and retrains epoch 4, which its MLflow run,
    reopened by name, already holds: the run keeps the first fit's epoch 4 and gains epoch 5, each epoch once."""
    tmp = killed_run["tmp"]
    newest = Path(killed_run["result"].checkpoint.path)
    # num_to_keep=2 keeps epochs 3 and 4 (plus, here, the orphaned upload of the killed attempt's epoch 3)
    assert max(p for p in newest.parent.glob("checkpoint_*") if p.is_dir()) == newest
    w = newest / WEIGHTS_FILE
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    uri = killed_run["cfg"].tracking.uri
    c = tracking.client(uri)
    first = {m.step: m.value for m in c.get_metric_history(killed_run["run_id"], "train/loss")}
    assert sorted(first) == [1, 2, 3, 4]  # the killed worker's restart logged no epoch twice
    log = tmp / "rerun.jsonl"
    result, run_id = fit_logged(train_cfg(tmp, "train.epochs=5"), WorkerMetricsLog(str(log)))
    assert [r["workers"][0]["epoch"] for r in read_log(log)] == [4, 5]  # resumed from epoch 3, not 4 (or 0)
    assert result.error is None and result.metrics["epoch"] == 5 and "test/acc" in result.metrics
    assert run_id == killed_run["run_id"]  # the rerun reopened its run
    (run,) = c.search_runs([tracking.experiment_id(c, killed_run["cfg"].tracking.experiment)])
    assert run.info.status == "FINISHED"
    after = [(m.step, m.value) for m in c.get_metric_history(run_id, "train/loss")]
    assert [step for step, _ in after] == [1, 2, 3, 4, 5]  # each epoch once
    assert dict(after[:4]) == first  # the retrained epoch 4 was not logged again
    # and the workers said why (their stderr is in the Ray session's log files)
    import ray

    logs = Path(ray._private.worker._global_node.get_session_dir_path()) / "logs"
    said = [f for f in logs.rglob("*") if f.is_file() and f"{newest.name} is unusable" in f.read_text(errors="ignore")]
    assert said, f"no worker log in {logs} mentions the skipped checkpoint"


class RemoveNodeOfTrial(Callback):
    """A Tune callback: once a trial reports epoch 2 from a non-head node, remove that node (once); records events.

    Not at epoch 1: Tune takes a function trainable's checkpoint from the trial's process in a separate call made
    right after the callbacks, so removing the node at a trial's first report can lose that call, and with it the
    only checkpoint (the trial then restarts from epoch 1). By epoch 2 the epoch-1 checkpoint is registered: Tune
    schedules the next training step only after the save."""

    def __init__(self) -> None:
        STATE.setdefault("results", [])
        STATE.setdefault("recovered", [])

    def on_trial_result(self, iteration, trials, trial, result, **info):
        node = result.get("worker.node_id")
        STATE["results"].append((trial.trial_id, int(result["epoch"]), node))
        if "removed" not in STATE and node != STATE["head"] and int(result["epoch"]) >= 2:
            victim = next(n for n in STATE["cluster"].worker_nodes if n.node_id == node)
            STATE.update(removed=node, victim_trial=trial.trial_id)
            STATE["cluster"].remove_node(victim, allow_graceful=False)

    def on_trial_recover(self, iteration, trials, trial, **info):
        STATE["recovered"].append(trial.trial_id)


def test_removing_a_node_mid_sweep_retries_its_trial_and_the_sweep_completes(cluster, tmp_path):
    import mlflow

    from gist_ray.sweep.driver import run_sweep
    from gist_ray.sweep.space import load_sweep

    cluster.add_node(num_cpus=1)  # 3 nodes: after losing one, the retry need not wait for a free CPU
    cluster.wait_for_nodes()

    base: dict = {}
    for text in TINY_OVERRIDES:
        key, value = text.split("=", 1)
        sec, fld = key.split(".")
        base.setdefault(sec, {})[fld] = yaml.safe_load(value)
    base["train"].update(epochs=4, checkpoint_every=1)
    # epochs long enough (~100 steps) that the node is gone before the victim's last epoch: with the default 6
    # steps an epoch, a trial could finish all 4 epochs before the driver handled its epoch-1 result
    base["data"]["n_train"] = 1600
    base.update(output_dir=str(tmp_path / "runs"), resources={"use_gpu": False, "address": cluster.address},
                tracking={"uri": f"sqlite:///{tmp_path}/mlflow.db", "experiment": "faults"})
    doc = {"name": "node-loss", "base": base, "space": {"gist.lam": {"choice": [0.25, 0.75]}},
           "search": {"num_samples": 2, "max_concurrent_trials": 2, "sampler": "grid", "scheduler": "none",
                      "trial_retries": 1}}
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(doc))
    result = run_sweep(load_sweep(tmp_path / "sweep.yaml"), callbacks=[RemoveNodeOfTrial()])

    assert "removed" in STATE, "no trial ran on a worker node"
    assert STATE["removed"] not in {n.node_id for n in cluster.worker_nodes} and len(cluster.worker_nodes) == 1
    assert [r.status for r in result.rows] == ["TERMINATED", "TERMINATED"]
    assert all(r.metrics["epoch"] == 4 and "val/acc" in r.metrics and "test/acc" not in r.metrics for r in result.rows)
    victim = STATE["victim_trial"]
    assert STATE["recovered"] == [victim]  # retried once, the other trial untouched
    seen = [(e, n) for t, e, n in STATE["results"] if t == victim]
    cut = next(i for i, (_, n) in enumerate(seen) if n == STATE["removed"])
    after = [(e, n) for e, n in seen[cut:] if n != STATE["removed"]]
    assert after and after[-1][0] == 4
    assert after[0][0] >= 2  # resumed from a checkpoint (epoch 1's at least), not from epoch 1
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    runs = mlflow.search_runs(experiment_names=["faults"])
    assert sorted(runs["tags.gist_ray.kind"]) == ["sweep", "trial", "trial"]  # the retry reused its MLflow run
    assert set(runs["status"]) == {"FINISHED"}
