"""GIST on Ray Train: DDP over 2 CPU workers (gloo), resume by rerunning with the same name, the CLI + MLflow."""

import json

import pytest

from conftest import TINY_OVERRIDES
from gist_ray.config import build_config
from gist_ray.train.launch import make_trainer
from gist_ray.train.worker_log import WorkerMetricsLog

pytestmark = pytest.mark.slow


def read_log(path):
    return [json.loads(line) for line in open(path)]


def test_two_workers_keep_the_gist_token_identical(ray_local, tmp_path):
    cfg = build_config({}, TINY_OVERRIDES + [f"output_dir={tmp_path}", "name=ddp", "train.epochs=3",
                                             "resources.num_workers=2", "resources.use_gpu=false"])
    log = tmp_path / "workers.jsonl"
    make_trainer(cfg, callbacks=[WorkerMetricsLog(str(log))]).fit()
    reports = read_log(log)
    assert len(reports) == 3
    norms = []
    for rep in reports:
        w0, w1 = rep["workers"]
        assert w0["gist/token_sum"] == w1["gist/token_sum"]  # bitwise: DDP applies identical updates
        assert w0["gist/token_norm"] == w1["gist/token_norm"]
        assert w0["val/acc"] == w1["val/acc"]  # evaluation is sharded then all-reduced
        norms.append(w0["gist/token_norm"])
    assert len(set(norms)) == 3  # the token really trained


def test_rerun_with_the_same_name_resumes_at_the_right_epoch(ray_local, tmp_path):
    common = TINY_OVERRIDES + [f"output_dir={tmp_path}", "name=resume-me", "resources.use_gpu=false"]
    log = tmp_path / "first.jsonl"
    make_trainer(build_config({}, common + ["train.epochs=2"]), callbacks=[WorkerMetricsLog(str(log))]).fit()
    assert [r["workers"][0]["epoch"] for r in read_log(log)] == [1, 2]
    log2 = tmp_path / "second.jsonl"
    result = make_trainer(build_config({}, common + ["train.epochs=4"]), callbacks=[WorkerMetricsLog(str(log2))]).fit()
    assert [r["workers"][0]["epoch"] for r in read_log(log2)] == [3, 4]
    assert result.metrics["epoch"] == 4 and "test/acc" in result.metrics


@pytest.mark.parametrize("backend", ["auto", "train"])
def test_cli_train_logs_one_mlflow_run_and_resumes_it(ray_local, tmp_path, monkeypatch, capsys, backend):
    """``auto`` trains one local worker in this process; ``train`` goes through Ray Train. Same records."""
    import mlflow

    from gist_ray.cli import main

    monkeypatch.chdir(tmp_path)
    args = ["train", *TINY_OVERRIDES, "name=cli-run", "resources.use_gpu=false", f"resources.backend={backend}"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "result:" in out
    if backend == "auto":  # one line per epoch, checkpoints under <output_dir>/<name>
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
