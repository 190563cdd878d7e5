"""The plain-torch run: it learns, checkpoints, resumes at the right epoch, and stops on NaN."""


import pytest

from conftest import TINY_OVERRIDES
from gist_ray.config import build_config
from gist_ray.train.loop import GistRun, LocalReporter, run_training


def test_run_reports_every_epoch_with_loss_parts(tmp_path):
    cfg = build_config({}, TINY_OVERRIDES + ["train.epochs=3", "train.checkpoint_every=2"])
    rep = LocalReporter(tmp_path)
    final = run_training(cfg, rep)
    assert [m["epoch"] for m in rep.history] == [1, 2, 3]
    for key in ("train/loss", "train/ce_cls", "train/ce_gist", "train/kl_cls_gist", "train/kl_gist_cls",
                "train/agreement", "val/acc", "epoch_time_s", "gist/token_norm"):
        assert key in rep.history[0], key
    assert "test/acc" in final and "test/acc" not in rep.history[0]  # test once, at the end
    assert sorted(p.name for p in tmp_path.glob("checkpoint_*")) == ["checkpoint_000002", "checkpoint_000003"]


def test_resume_continues_at_the_right_epoch(tmp_path):
    cfg2 = build_config({}, TINY_OVERRIDES + ["train.epochs=2"])
    run_training(cfg2, LocalReporter(tmp_path))
    cfg4 = build_config({}, TINY_OVERRIDES + ["train.epochs=4"])
    rep = LocalReporter(tmp_path)
    run = GistRun(cfg4, rep)
    run.fit()
    assert run.start_epoch == 2
    assert [m["epoch"] for m in rep.history] == [3, 4]


def test_resumed_run_equals_uninterrupted_run(tmp_path):
    base = TINY_OVERRIDES + ["train.epochs=3", "train.checkpoint_every=1", "gist.dropout=0", "data.n_test=8"]
    full = run_training(build_config({}, base), LocalReporter(tmp_path / "a"))
    # same run, cut after epoch 2 then resumed: schedule, optimizer state and data order continue exactly
    part = LocalReporter(tmp_path / "b")
    GistRun(build_config({}, base), part).fit()
    import shutil
    shutil.rmtree(tmp_path / "b" / "checkpoint_000003")
    again = LocalReporter(tmp_path / "b")
    resumed = GistRun(build_config({}, base), again).fit()
    assert again.history[0]["epoch"] == 3
    assert resumed["train/loss"] == pytest.approx(full["train/loss"], rel=1e-5)
    assert resumed["val/acc"] == pytest.approx(full["val/acc"])


def test_nan_loss_stops_the_run_with_a_reason(tmp_path):
    cfg = build_config({}, TINY_OVERRIDES + ["train.lr=1e30", "train.warmup_epochs=0", "method.name=full"])
    with pytest.raises(FloatingPointError, match="training loss became"):
        run_training(cfg, LocalReporter(tmp_path))


def test_pretrained_backbone_beats_random_backbone_linear_probe(tmp_path):
    """The quickstart's premise: the synthetic-pretrained backbone carries transferable knowledge."""
    common = ["model.backbone=vit_synth_s", "method.name=linear", "data.task=shapes", "train.epochs=6",
              "train.lr=1e-2", "train.batch_size=32", "data.n_train=800", "data.n_val=200", "data.test_split=null"]
    pre = run_training(build_config({}, common + ["model.weights=auto"]), LocalReporter(tmp_path / "p"))
    rnd = run_training(build_config({}, common + ["model.weights=none"]), LocalReporter(tmp_path / "r"))
    chance = 1 / 15
    assert pre["val/acc"] > 2 * chance
    assert pre["val/acc"] > rnd["val/acc"] + 0.1, (pre["val/acc"], rnd["val/acc"])
