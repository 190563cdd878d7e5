"""Kill a `gist-ray` driver at chosen moments (SIGKILL to its process group) and read what MLflow holds after.

Moments: ``progress:N`` (after the N-th progress line this driver prints, read from its stdout), ``final:E`` (in
the driver, right after the MLflow callback logged a trial's epoch-E report: the trial's last report, before Tune
ends it), ``start`` (as the first trial of this driver starts), ``refit:E`` (in the Ray Train controller of the
VTAB refit, right after epoch E is logged), ``train:E`` (the same in a `gist-ray train` run, in-process or Ray
Train), ``""`` (no kill).
The in-process moments are hooks installed by a tiny driver script (``killhook``) around the real callbacks.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

KILLHOOK = '''
import os, signal

from gist_ray.sweep import callbacks
from gist_ray.train import mlflow_callback


def die():
    os.killpg(int(os.environ["KILL_PGID"]), signal.SIGKILL)  # the driver, and Ray's processes in its group
    os.kill(os.getpid(), signal.SIGKILL)  # this one too, if it is a Ray process outside that group


class KillingTrainCallback(mlflow_callback.MlflowTrainCallback):
    def after_report(self, run_context, metrics, checkpoint):
        super().after_report(run_context, metrics, checkpoint)
        if int(metrics[0].get("epoch", 0)) == int(os.environ["KILL_EPOCH"]):
            die()


def install(kill_at):
    kind, _, arg = kill_at.partition(":")
    cls = callbacks.MlflowSweepCallback
    if kind == "final":
        orig = cls.on_trial_result

        def on_trial_result(self, iteration, trials, trial, result, **info):
            orig(self, iteration, trials, trial, result, **info)
            if int(result.get("epoch", 0)) == int(arg):
                die()

        cls.on_trial_result = on_trial_result
    elif kind == "start":
        orig_start = cls.on_trial_start

        def on_trial_start(self, iteration, trials, trial, **info):
            orig_start(self, iteration, trials, trial, **info)
            die()

        cls.on_trial_start = on_trial_start
    elif kind in ("refit", "train"):
        os.environ["KILL_EPOCH"] = arg
        mlflow_callback.MlflowTrainCallback = KillingTrainCallback  # Ray Train runs (the refit, multi-worker)
        import gist_ray.sweep.driver as driver
        if hasattr(driver, "MlflowTrainCallback"):
            driver.MlflowTrainCallback = KillingTrainCallback
        try:  # a one-worker `gist-ray train` trains in the driver process and logs through EpochLog
            from gist_ray.train import inprocess
        except ImportError:
            return
        orig_log = inprocess.EpochLog.__call__

        def log_epoch(self, metrics):
            orig_log(self, metrics)
            if int(metrics.get("epoch", 0)) == int(arg):
                die()

        inprocess.EpochLog.__call__ = log_epoch
'''

DRIVE = '''
import os, sys
os.environ["KILL_PGID"] = str(os.getpgid(0))
import killhook
killhook.install(os.environ.get("KILL_AT", ""))
from gist_ray.cli import main
sys.exit(main(sys.argv[1:]))
'''


def drive(work: Path, args: list[str], kill_at: str = "", code: str | None = None, timeout: float = 400) -> dict:
    """Run ``gist-ray ARGS`` in ``work``, killed at ``kill_at``; returns {killed, rc, out, seconds}."""
    (work / "killhook.py").write_text(KILLHOOK)
    (work / "drive.py").write_text(DRIVE)
    code = code or str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "KILL_AT": kill_at,
           "PYTHONPATH": os.pathsep.join([code, str(work)])}
    t0 = time.time()
    proc = subprocess.Popen([sys.executable, str(work / "drive.py"), *args], cwd=work, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    want = int(kill_at.split(":")[1]) if kill_at.startswith("progress:") else None
    out, lines = [], 0
    for line in proc.stdout:
        out.append(line)
        if line.startswith("[sweep ") and " finished " in line:
            lines += 1
            if lines == want:
                os.killpg(proc.pid, signal.SIGKILL)
                break
        if time.time() - t0 > timeout:
            os.killpg(proc.pid, signal.SIGKILL)
            break
    rc = proc.wait()
    try:  # whatever the driver's process group still holds (Ray's processes) goes with it
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return {"killed": rc == -signal.SIGKILL, "rc": rc, "out": "".join(out), "seconds": time.time() - t0}


def snapshot(db: Path, experiment: str) -> dict[str, dict]:
    """Every run (deleted ones too): tags, status, stage, sampled config, per-epoch history of epoch_time_s."""
    from mlflow.entities import ViewType
    from mlflow.tracking import MlflowClient

    c = MlflowClient(f"sqlite:///{db}")
    exp = c.get_experiment_by_name(experiment)
    if exp is None:
        return {}
    out = {}
    for r in c.search_runs([exp.experiment_id], run_view_type=ViewType.ALL, max_results=1000):
        t = r.data.tags
        hist = sorted(c.get_metric_history(r.info.run_id, "epoch_time_s"), key=lambda m: (m.step, m.timestamp))
        cfg = t.get("gist_ray.config") or json.dumps(
            {k[8:]: v for k, v in sorted(r.data.params.items()) if k.startswith("sampled.")}, sort_keys=True)
        out[r.info.run_id] = {
            "sweep": t.get("gist_ray.sweep"), "kind": t.get("gist_ray.kind"), "phase": t.get("gist_ray.kind_phase"),
            "run": t.get("gist_ray.run"), "role": t.get("gist_ray.role"), "status": r.info.status,
            "stage": r.info.lifecycle_stage, "trial_id": t.get("gist_ray.trial_id"), "config": cfg,
            "steps": [m.step for m in hist], "times": [m.value for m in hist], "metrics": dict(r.data.metrics),
        }
    return out


def trial_dirs(work: Path, sweep: str) -> dict[str, str]:
    """Tune trial directory -> its sampled config (params.json), for every trial Tune ever scheduled."""
    root = work / "runs" / "sweeps" / sweep
    out = {}
    for p in sorted(root.glob("run_trial_*/params.json")) if root.is_dir() else []:
        out[p.parent.name] = json.dumps(json.loads(p.read_text()), sort_keys=True)
    return out


def counts(snap: dict[str, dict], sweep: str) -> dict:
    """The figures a kill moment is judged by, for sweep ``sweep`` (its trial runs) and what hangs off it."""
    trials = [r for r in snap.values() if r["sweep"] == sweep and r["kind"] == "trial"]
    active = [r for r in trials if r["stage"] == "active"]
    by_cfg = Counter(r["config"] for r in active if r["status"] == "FINISHED")
    bad_epochs = [r["trial_id"] for r in active
                  if r["steps"] and (len(r["steps"]) != len(set(r["steps"])) or r["steps"] != list(range(1, len(r["steps"]) + 1)))]
    return {
        "active": len(active),
        "finished": sum(r["status"] == "FINISHED" for r in active),
        "running": sum(r["status"] == "RUNNING" for r in snap.values() if r["stage"] == "active"),
        "deleted": len(trials) - len(active),
        "finished_twice": sum(n - 1 for n in by_cfg.values()),
        "epochs_not_once": len(bad_epochs),
        "parents": sum(r["sweep"] == sweep and r["kind"] == "sweep" and r["stage"] == "active" for r in snap.values()),
    }


def rescheduled(snap_before: dict[str, dict], dirs_before: dict[str, str], dirs_after: dict[str, str],
                sweep: str) -> list[str]:
    """Trials FINISHED before a kill that Tune scheduled again afterwards (by their sampled config)."""
    done = {r["config"] for r in snap_before.values()
            if r["sweep"] == sweep and r["kind"] == "trial" and r["status"] == "FINISHED" and r["stage"] == "active"}
    return [d for d, cfg in dirs_after.items() if d not in dirs_before and cfg in done]


def changed_history(snap_before: dict[str, dict], snap_after: dict[str, dict]) -> list[str]:
    """Runs FINISHED before whose per-epoch history (or status, or stage) is not the same after."""
    out = []
    for run_id, r in snap_before.items():
        if r["status"] == "FINISHED" and r["kind"] in ("trial", "train") and r["stage"] == "active":
            a = snap_after[run_id]
            if (a["status"], a["stage"], a["steps"], a["times"]) != (r["status"], r["stage"], r["steps"], r["times"]):
                out.append(run_id)
    return out


def optuna_counts(work: Path, sweep: str) -> dict[str, int]:
    """States of the trials in the newest Optuna study Tune saved for the sweep."""
    from ray.tune.search.optuna import OptunaSearch

    s = OptunaSearch()
    s.restore_from_dir(str(work / "runs" / "sweeps" / sweep))
    return dict(Counter(t.state.name for t in s._ot_study.trials))
