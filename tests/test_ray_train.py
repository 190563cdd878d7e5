"""GIST on Ray Train: DDP over 2 CPU workers (gloo), resume by rerunning with the same name, the CLI + MLflow."""

import json

import pytest

from conftest import TINY_OVERRIDES
from gist_ray import tracking
from gist_ray.config import build_config, to_dict
from gist_ray.train.launch import make_trainer
from gist_ray.train.mlflow_callback import MlflowTrainCallback, open_train_run
from gist_ray.train.worker_log import WorkerMetricsLog

pytestmark = pytest.mark.slow


def read_log(path):
    return [json.loads(line) for line in open(path)]


def test_rerun_with_the_same_name_resumes_at_the_right_epoch_into_the_same_mlflow_run(ray_local, tmp_path):
    """Ray Train with the MLflow callback ``gist-ray train`` gives it, DDP over 2 CPU workers (gloo): both workers
    hold the same Gist token after every epoch (DDP applies identical updates; evaluation is sharded, then
    all-reduced); the rerun's workers train epochs 3-4 only (MLflow skips epochs it holds, so only the workers' own
    reports show a redo) and MLflow holds one run with each epoch once."""
    import mlflow

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    common = TINY_OVERRIDES + [f"output_dir={tmp_path}", "name=resume-me", "resources.use_gpu=false",
                               f"tracking.uri={uri}", "resources.num_workers=2"]
    norms = []
    for epochs, log, want in ((2, tmp_path / "first.jsonl", [1, 2]), (4, tmp_path / "second.jsonl", [3, 4])):
        cfg = build_config({}, common + [f"train.epochs={epochs}"])
        run_id = open_train_run(uri, cfg.tracking.experiment, cfg.name, to_dict(cfg))
        result = make_trainer(cfg, callbacks=[WorkerMetricsLog(str(log)), MlflowTrainCallback(uri, run_id)]).fit()
        tracking.client(uri).set_terminated(run_id, "FINISHED")
        reports = read_log(log)
        assert [r["workers"][0]["epoch"] for r in reports] == want
        for rep in reports:
            w0, w1 = rep["workers"]
            assert w0["gist/token_sum"] == w1["gist/token_sum"]  # bitwise: DDP applies identical updates
            assert w0["gist/token_norm"] == w1["gist/token_norm"]
            assert w0["val/acc"] == w1["val/acc"]  # evaluation is sharded then all-reduced
            norms.append(w0["gist/token_norm"])
    assert len(set(norms)) == 4  # the token really trained, and the rerun continued it
    assert result.metrics["epoch"] == 4 and "test/acc" in result.metrics
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=[cfg.tracking.experiment])
    assert len(runs) == 1 and runs.iloc[0]["status"] == "FINISHED"  # the rerun reused its run
    steps = [m.step for m in tracking.client(uri).get_metric_history(run_id, "train/loss")]
    assert steps == [1, 2, 3, 4]


def test_cli_train_logs_one_mlflow_run_and_resumes_it(ray_local, tmp_path, monkeypatch, capsys):
    """``gist-ray train`` of a one-worker CPU run trains in this process (Ray Train's path, with the same MLflow
    callback, is the test above and the README's ``configs/vtab_vit_b.yaml`` command)."""
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
