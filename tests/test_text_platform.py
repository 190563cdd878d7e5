"""Text runs through the platform: the run config's text rules, and ``gist-ray train`` of a tiny text config
(in-process path) logging an MLflow run with ``val/score``."""

from __future__ import annotations

import mlflow
import pytest

from gist_ray.config import ConfigError, build_config
from gist_ray.model import build_from_config, trainable_counts
from gist_ray.text.gist import TextGistModel

TEXT = ["model.backbone=bert_test_tiny", "method.name=adapter_houlsby", "data.name=synthetic_text",
        "data.task=match", "data.n_train=64", "data.n_val=32", "data.n_test=32", "train.epochs=2",
        "train.batch_size=16"]


def test_a_text_config_builds_and_derives_its_modality() -> None:
    cfg = build_config({}, TEXT)
    assert cfg.modality == "text" and cfg.data.max_length is None
    assert build_config({}, []).modality == "image"
    model = build_from_config(cfg, 2)
    assert isinstance(model, TextGistModel)
    counts = trainable_counts(model)
    assert counts["token"] == 32 and counts["head"] > 0 and counts["method"] > 0  # hidden 32: one token row


@pytest.mark.parametrize("overrides, field", [
    (["data.name=synthetic", "data.task=shapes"], "data.name"),  # text backbone, image dataset
    (["data.image_size=32"], "data.image_size"),  # image-only field
    (["data.shots=4"], "data.shots"),
    (["model.drop_path=0.1"], "model.drop_path"),
    (["data.task=shapes"], "data.task"),
    (["method.name=gist_adapter"], "method.name"),  # a vision-only method
    (["method.name=adapter_houlsby", "method.no_such_knob=1"], "method.no_such_knob"),
    (["model.backbone=t5_test_tiny", "method.name=bitfit"], "method.name"),  # bitfit: no biases in T5
    (["model.backbone=t5_test_tiny", "method.name=peft_lora", "train.precision=fp16"], "train.precision"),
    (["objective.name=byot"], "objective.name"),
    (["train.schedule=epoch_cosine", "train.warmup_epochs=1"], "train.schedule"),
    (["data.max_length=1"], "data.max_length"),
])
def test_text_config_errors_name_the_field(overrides: list[str], field: str) -> None:
    with pytest.raises(ConfigError) as exc:
        build_config({}, TEXT + overrides)
    assert field in str(exc.value), str(exc.value)


def test_an_image_backbone_refuses_a_text_dataset_and_text_fields() -> None:
    with pytest.raises(ConfigError, match="data.name"):
        build_config({}, ["data.name=synthetic_text", "data.task=match"])
    with pytest.raises(ConfigError, match="data.max_length"):
        build_config({}, ["data.max_length=64"])


def test_gist_ray_train_of_a_text_config_logs_val_score_to_mlflow(tmp_path, monkeypatch, capsys) -> None:
    from gist_ray.cli import main

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    rc = main(["train", "name=text-run", *TEXT, f"tracking.uri={uri}", "tracking.experiment=text"])
    out = capsys.readouterr().out
    assert rc == 0 and "val/score=" in out and "test/score=" in out, out
    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name("text")
    (run,) = client.search_runs([exp.experiment_id])
    m = run.data.metrics
    assert {"val/score", "val/acc", "val/loss", "test/score", "test/acc", "train/loss", "gist/token_norm"} <= set(m)
    assert m["val/score"] == m["val/acc"] and 0.0 <= m["test/score"] <= 1.0
    assert run.data.tags["modality"] == "text" and run.data.tags["dataset"] == "match"
    assert run.data.params["data.name"] == "synthetic_text" and run.info.status == "FINISHED"
    assert len(client.get_metric_history(run.info.run_id, "val/score")) == 2  # one per epoch


def test_gist_ray_data_check_covers_a_glue_root(tmp_path, capsys) -> None:
    from gist_ray.cli import main
    from text_fixtures import write_glue_tsv

    root = tmp_path / "glue"
    write_glue_tsv(root)
    assert main(["data", "check", str(root), "--kind", "glue"]) == 0  # QQP's malformed row: a warning only
    out = capsys.readouterr().out
    assert f"{root}: OK (1 warning(s))" in out and "skipped by the loader" in out, out
    assert main(["data", "check", str(root), "--kind", "glue", "--task", "rte", "cola"]) == 0
    assert capsys.readouterr().out.strip() == f"{root}: OK"
    (root / "RTE" / "dev.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tmaybe\n")
    assert main(["data", "check", str(root), "--kind", "glue", "--task", "rte"]) == 1
    out = capsys.readouterr().out
    assert "RTE/dev.tsv:2: unknown label 'maybe'" in out and "1 problem(s)" in out, out


def test_test_at_best_val_tests_the_best_val_epoch_and_keeps_it_in_checkpoints(tmp_path) -> None:
    from gist_ray.train.loop import GistRun, LocalReporter

    cfg = build_config({}, [*TEXT, "train.epochs=4", "train.test_at=best_val", "train.lr=3e-3",
                            f"output_dir={tmp_path}"])
    rep = LocalReporter(tmp_path / "a")
    final = GistRun(cfg, rep).fit()
    scores = [m["val/score"] for m in rep.history]
    best = scores.index(max(scores)) + 1  # the first epoch reaching the best val/score
    assert final["test/epoch"] == best
    # the best epoch's weights travel in the checkpoints: a run restored from the last one tests them again
    run = GistRun(cfg, LocalReporter(tmp_path / "a"))
    run.resume()
    assert run.best_epoch == best and run.test()["test/score"] == pytest.approx(final["test/score"])
    with pytest.raises(ConfigError, match="train.test_at"):
        build_config({}, [*TEXT, "train.test_at=best_val", "data.eval_split=null"])


def _eval_similarity(rank: int = 0, world: int = 1) -> dict:
    """The metrics of a fixed random tiny model on the similarity task's val split, this worker's shard."""
    import torch

    from gist_ray.run_data import run_splits, split_metrics
    from gist_ray.train.evaluate import evaluate_text

    cfg = build_config({}, [*TEXT, "data.task=similarity"])
    torch.manual_seed(0)
    model = build_from_config(cfg, 26)
    split = run_splits(cfg, ["val"])["val"]
    return evaluate_text(model, split, split_metrics(cfg), 8, torch.device("cpu"), None, rank, world)


def _sharded_eval(rank: int, world: int, init_file: str, out: str) -> None:
    import torch
    import torch.distributed as dist

    # a file store, as test_objectives_ddp.py: with tcp:// rank 0 hosts the store, and when it exited first the
    # other rank aborted in its teardown ("terminate called without an active exception", 1 run in 15 here)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        ev = _eval_similarity(rank, world)
        if rank == 0:
            torch.save(ev, out)
        dist.barrier()  # nobody tears down while another rank still talks
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_text_evaluation_sharded_over_workers_equals_one_worker(tmp_path) -> None:
    """Each worker predicts its shard; the gathered logits, in row order, give one worker's metrics exactly (the
    CE loss pairs every row's logits with its own label)."""
    import torch
    import torch.multiprocessing as mp

    mp.spawn(_sharded_eval, args=(2, str(tmp_path / "init"), str(tmp_path / "two.pt")), nprocs=2, join=True)
    two, one = torch.load(tmp_path / "two.pt"), _eval_similarity()
    assert set(one) == {"pearson", "spearman", "loss", "score"} and one["score"] == one["pearson"]
    assert two == pytest.approx(one, abs=1e-6)


def test_both_split_types_offer_the_batch_interface() -> None:
    import torch

    from gist_ray.run_data import run_splits

    image = run_splits(build_config({}, ["data.n_train=8"]), ["train"])["train"]
    idx = torch.tensor([3, 0, 5])
    assert torch.equal(image.inputs(idx)["x"], image.images[idx])
    text = run_splits(build_config({}, TEXT), ["train"])["train"]
    batch = text.inputs(idx)
    assert set(batch) >= {"input_ids", "attention_mask"} and batch["input_ids"].shape[0] == 3
    assert batch["input_ids"].shape[1] == int(text.lengths()[idx].max())  # padded to the batch's longest row


@pytest.mark.slow
def test_an_image_run_never_imports_transformers() -> None:
    """The config, model and loop import gist_ray.text; transformers / peft / datasets load only for text."""
    import subprocess
    import sys

    code = ("import sys; import gist_ray.cli, gist_ray.train.loop, gist_ray.run_data, gist_ray.report_table3\n"
            "from gist_ray.config import build_config; from gist_ray.model import build_from_config\n"
            "cfg = build_config({}, ['model.backbone=vit_test_tiny', 'model.weights=none'])\n"
            "build_from_config(cfg, 3)\n"
            "print(sorted(m for m in ('transformers', 'peft', 'datasets') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out
