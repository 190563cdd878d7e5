"""A sweep whose driver is SIGKILLed mid-way resumes with `--resume`: nothing rerun, nothing duplicated."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
import yaml

from test_sweep import tiny_base

pytestmark = pytest.mark.slow


def test_killed_driver_resumes_without_rerunning_or_duplicating(tmp_path):
    base = tiny_base(tmp_path)
    base["train"].update({"epochs": 4, "checkpoint_every": 1})
    doc = {"name": "resumable", "base": base,
           "search": {"num_samples": 6, "max_concurrent_trials": 2, "sampler": "tpe", "scheduler": "none"},
           "space": {"gist.lam": {"uniform": [0.1, 1.0]}, "train.lr": {"loguniform": [1e-3, 1e-2]}}}
    space = tmp_path / "resumable.yaml"
    space.write_text(yaml.safe_dump(doc))
    cmd = [sys.executable, "-m", "gist_ray.cli", "sweep", str(space)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    deadline = time.time() + 300
    log = []
    for line in proc.stdout:
        log.append(line)
        if "2/6 finished" in line or "3/6 finished" in line or time.time() > deadline:
            break
    assert any("finished" in ln for ln in log), "".join(log[-30:])
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and the local Ray it started
    proc.wait()

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    client = mlflow.tracking.MlflowClient()
    before = mlflow.search_runs(experiment_names=["tests"])
    done_before = before[(before["tags.gist_ray.kind"] == "trial") & (before["status"] == "FINISHED")]
    assert len(done_before) >= 2
    history_before = {r: len(client.get_metric_history(r, "train/loss")) for r in done_before.run_id}

    out = subprocess.run(cmd + ["--resume"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]

    after = mlflow.search_runs(experiment_names=["tests"])
    trials = after[after["tags.gist_ray.kind"] == "trial"]
    assert len(trials) == 6 and len(after[after["tags.gist_ray.kind"] == "sweep"]) == 1
    assert set(after["status"]) == {"FINISHED"}, after["status"].value_counts()
    assert trials["tags.gist_ray.trial_id"].nunique() == 6
    for run_id, n in history_before.items():  # finished trials were not rerun
        assert len(client.get_metric_history(run_id, "train/loss")) == n == 4
    for run_id in trials.run_id:  # every trial has each epoch exactly once, resumed ones included
        steps = [m.step for m in client.get_metric_history(run_id, "train/loss")]
        assert sorted(set(steps)) == [1, 2, 3, 4], steps

    from ray.tune.search.optuna import OptunaSearch

    searcher = OptunaSearch()
    searcher.restore_from_dir(str(tmp_path / "runs" / "sweeps" / "resumable"))
    study = searcher._ot_study
    assert len(study.trials) == 6
    assert all(t.state.name == "COMPLETE" for t in study.trials)
