"""``gist-ray train``: one local worker in this process, resumed by rerunning with the same name, into one MLflow run.

Ray Train's path (DDP over 2 CPU workers with gloo, a worker killed, a rerun that resumes into the same MLflow run)
is in ``tests/test_faults.py``, on two nodes; the README's ``configs/vtab_vit_b.yaml`` command runs it with 4 workers.
"""

import pytest

from conftest import TINY_OVERRIDES

pytestmark = pytest.mark.slow


def test_cli_train_logs_one_mlflow_run_and_resumes_it(ray_local, tmp_path, monkeypatch, capsys):
    """``gist-ray train`` of a one-worker CPU run trains in this process (Ray Train's path, with the same MLflow
    callback: ``tests/test_faults.py`` and the README's ``configs/vtab_vit_b.yaml`` command)."""
    import mlflow

    from gist_ray.cli import main

    monkeypatch.chdir(tmp_path)
    args = ["train", *TINY_OVERRIDES, "name=cli-run", "resources.use_gpu=false", "resources.backend=auto"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "result:" in out
    # one line per epoch, checkpoints under <output_dir>/<name>
    assert [ln.split()[1] for ln in out.splitlines() if ln.startswith("epoch ")] == ["1/2", "2/2"]
    assert sorted(p.name for p in (tmp_path / "runs" / "cli-run").glob("checkpoint_*")) == \
        ["checkpoint_000001", "checkpoint_000002"]
    assert main(args + ["train.epochs=3"]) == 0
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    runs = mlflow.search_runs(experiment_names=["gist-ray"])
    assert len(runs) == 1  # the rerun reused its run
    run = runs.iloc[0]
    assert run["status"] == "FINISHED"
    assert run["tags.method"] == "gist_adapter" and run["tags.gist"] == "true" and run["tags.dataset"] == "shapes"
    client = mlflow.tracking.MlflowClient()
    steps = [m.step for m in client.get_metric_history(run.run_id, "train/loss")]
    assert steps == [1, 2, 3]


def test_cli_rejects_bad_config_before_ray(tmp_path, monkeypatch, capsys):
    from gist_ray.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["train", "train.lr=-1"]) == 2
    assert "train.lr" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
