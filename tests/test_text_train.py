"""Something that learns: the plain-PyTorch GIST trainer on the synthetic text task, and the text quickstart."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")

from gist_ray.text import quickstart  # noqa: E402
from gist_ray.text.data import TextDataConfig, load_text_split  # noqa: E402
from gist_ray.text.model import build_text_model  # noqa: E402
from gist_ray.text.splits import RawSplit, tokenize  # noqa: E402
from gist_ray.text.synthetic import word_tokenizer  # noqa: E402
from gist_ray.text.train import GistLoss, evaluate_text, train_text  # noqa: E402


@pytest.mark.parametrize("backbone", ["bert_test_tiny", "t5_test_tiny"])
def test_gist_objective_loss_falls_and_the_model_learns(backbone, tmp_path, monkeypatch):
    monkeypatch.setenv("GIST_RAY_CACHE", str(tmp_path))
    torch.manual_seed(0)
    model, tok = build_text_model(backbone, 4, "full")
    cfg = TextDataConfig(task="topic", n_train=512, n_val=128, max_length=32)
    train, val = load_text_split(cfg, "train", tok), load_text_split(cfg, "val", tok)
    history = train_text(model, train, epochs=6, batch_size=32, lr=1e-2, warmup_steps=8, device="cpu")
    assert len(history) == 96
    first, last = history[0], history[-8:]
    assert {"loss", "ce_cls", "ce_gist", "kl_cls_gist", "kl_gist_cls"} <= set(first)
    mean = {k: sum(r[k] for r in last) / len(last) for k in ("loss", "ce_cls", "ce_gist")}
    assert mean["loss"] < 0.5 * first["loss"]
    assert mean["ce_cls"] < 0.5 * first["ce_cls"] and mean["ce_gist"] < 0.5 * first["ce_gist"]
    assert evaluate_text(model, val, ("acc",))["acc"] > 0.6  # chance: 0.25


def test_gist_off_trains_plain_cross_entropy():
    torch.manual_seed(0)
    model, tok = build_text_model("bert_test_tiny", 2, "linear", gist_enabled=False)
    split = tokenize(RawSplit(["rain", "goal", "snow", "team"], None, [0, 1, 0, 1], 2), tok, 8)
    history = train_text(model, split, epochs=1, batch_size=4, loss=GistLoss(lam=0.5))
    assert set(history[0]) == {"step", "loss", "ce_cls"} and history[0]["loss"] == history[0]["ce_cls"]


def test_unlabelled_split_is_refused():
    model, tok = build_text_model("bert_test_tiny", 2, "linear")
    split = tokenize(RawSplit(["rain"], None, [-1], 2), word_tokenizer(), 8)
    with pytest.raises(ValueError, match="unlabelled"):
        train_text(model, split)


@pytest.mark.slow
def test_text_quickstart_runs_offline_with_gist_off_and_on(tmp_path, monkeypatch):
    monkeypatch.setenv("GIST_RAY_CACHE", str(tmp_path))
    rows = quickstart.main(["--backbone", "bert_test_tiny", "--method", "full", "--task", "similarity",
                            "--epochs", "1", "--n-train", "64"])
    assert [r["gist"] for r in rows] == [False, True]
    assert all({"val/pearson", "test/pearson", "params", "seconds"} <= set(r) for r in rows)
    assert rows[1]["params"] - rows[0]["params"] == 32  # the token


@pytest.mark.slow
def test_glue_driver_runs_resumes_and_prints_table3(tmp_path, monkeypatch):
    from text_fixtures import write_glue_tsv

    from gist_ray.text import glue_run

    monkeypatch.setenv("GIST_RAY_CACHE", str(tmp_path / "cache"))
    write_glue_tsv(tmp_path / "glue", 40)
    out = tmp_path / "runs.jsonl"
    argv = ["--root", str(tmp_path / "glue"), "--tasks", "rte", "stsb", "--backbone", "bert_test_tiny",
            "--method", "linear", "--gist", "off", "on", "--lam", "0.5", "0.75", "--epochs", "2", "--batch-size", "8",
            "--max-length", "32", "--warmup-steps", "0", "--device", "cpu", "--out", str(out)]
    rows = glue_run.main(argv)
    assert len(rows) == 6 and len(out.read_text().splitlines()) == 6  # 2 tasks x (off + on at 2 lambdas)
    assert {r["metric"] for r in rows} == {"acc", "pearson"} and all(r["best_epoch"] in (1, 2) for r in rows)
    assert {r["spec"]["lam"] for r in rows if r["spec"]["gist"]} == {0.5, 0.75}

    def no_training(*a, **k):
        raise AssertionError("a finished run must not train again")

    monkeypatch.setattr(glue_run, "run_glue", no_training)
    assert glue_run.main(argv) == rows  # resumed: everything already in the file
    table = glue_run.table3(rows)
    assert "| stsb | rte |" in table and "GIST delta (bert_test_tiny, linear)" in table
