"""The official GIST recipe (JCruan519/GIST train.py + train_scripts/vit/train_vtab.sh): timm's per-epoch cosine
schedule, timm's weight-decay rule (the Gist token decays), drop_last, and the paper-comparable protocol's
best-test-over-epochs number."""

from __future__ import annotations

import math

import pytest
import torch
from timm.scheduler import create_scheduler_v2

from conftest import TINY_OVERRIDES
from gist_ray.config import build_config
from gist_ray.train.loop import GistRun, LocalReporter
from gist_ray.train.optim import decays, make_optimizer, param_groups


def official_lrs(epochs: int, warmup: int, lr: float, warmup_lr: float, min_lr: float, cooldown: int) -> list[float]:
    """What the official train.py sets each epoch: timm's scheduler, step(0) at creation, step(epoch + 1) after."""
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    sched, num_epochs = create_scheduler_v2(opt, sched="cosine", num_epochs=epochs, warmup_epochs=warmup,
                                            warmup_lr=warmup_lr, min_lr=min_lr, cooldown_epochs=cooldown)
    out = []
    for epoch in range(num_epochs):
        out.append(opt.param_groups[0]["lr"])
        sched.step(epoch + 1)
    return out


@pytest.mark.parametrize("epochs, warmup, cooldown", [(100, 10, 10), (12, 3, 2), (5, 0, 0)])
def test_epoch_cosine_reproduces_timms_per_epoch_values(epochs, warmup, cooldown):
    lr, warmup_lr, min_lr = 5e-3, 1e-7, 1e-8
    want = official_lrs(epochs, warmup, lr, warmup_lr, min_lr, cooldown)
    cfg = build_config({}, [f"train.epochs={epochs + cooldown}", f"train.warmup_epochs={warmup}", f"train.lr={lr}",
                            "train.schedule=epoch_cosine", f"train.cooldown_epochs={cooldown}",
                            f"train.warmup_lr={warmup_lr}", f"train.min_lr={min_lr}"])
    steps = 3
    opt, sched = make_optimizer(torch.nn.Linear(2, 2), cfg.train, steps)
    got = []
    for _ in range(cfg.train.epochs):
        lrs = []
        for _ in range(steps):
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        assert max(lrs) == min(lrs)  # set once per epoch, like timm's t_in_epochs schedulers
        got.append(lrs[0])
    assert len(got) == len(want) == epochs + cooldown
    assert got == pytest.approx(want, rel=1e-9, abs=1e-15)


def test_the_paper_config_is_the_official_recipe():
    cfg = build_config({}, [])  # defaults are not the recipe; the shipped VTAB config is
    assert cfg.train.schedule == "step_cosine"
    from pathlib import Path

    from gist_ray.config import load_config

    vtab = load_config(Path(__file__).resolve().parents[1] / "configs" / "vtab_vit_b.yaml")
    t = vtab.train
    assert (t.schedule, t.epochs, t.cooldown_epochs, t.warmup_epochs, t.warmup_lr, t.min_lr) == \
        ("epoch_cosine", 110, 10, 10, 1e-7, 1e-8)
    assert (t.batch_size * vtab.resources.num_workers, t.drop_last, t.precision) == (64, True, "fp16")
    assert (t.lr, t.weight_decay, vtab.model.drop_path) == (5e-3, 5e-5, 0.0)  # the official dtd line


def test_weight_decay_follows_timms_rule_and_decays_the_gist_token(tmp_path):
    run = GistRun(build_config({}, [*TINY_OVERRIDES, "method.name=vpt_shallow", "train.weight_decay=0.05"]),
                  LocalReporter(tmp_path))
    model = run.model
    named = {n: p for n, p in model.named_parameters() if p.requires_grad}
    decayed = {n for n, p in named.items() if decays(n, p)}
    assert "gist.tokens" in decayed and any(n.endswith("prompts") for n in decayed)
    assert not any(n.endswith(".bias") or named[n].ndim <= 1 for n in decayed)
    assert decays("x.cls_token", torch.zeros(1, 1, 4)) is False and decays("pos_embed", torch.zeros(1, 5, 4)) is False
    groups = param_groups(model, 0.05)
    assert {id(p) for p in groups[0]["params"]} == {id(named[n]) for n in decayed}
    assert groups[0]["weight_decay"] == 0.05 and groups[1]["weight_decay"] == 0.0


def test_drop_last_drops_the_partial_batch(tmp_path):
    seen = {}
    for drop in (False, True):
        run = GistRun(build_config({}, [*TINY_OVERRIDES, "data.n_train=100", "train.batch_size=16",
                                        f"train.drop_last={str(drop).lower()}"]), LocalReporter(tmp_path / str(drop)))
        sizes: list[int] = []
        run.model.register_forward_hook(lambda m, args, out: sizes.append(args[0].shape[0]))
        run.train_epoch(0)
        seen[drop] = (run.steps_per_epoch, sizes)
    assert seen[False] == (7, [16] * 6 + [4])
    assert seen[True] == (6, [16] * 6)  # the 4 left-over images wait for another epoch's shuffle


def test_evaluating_test_every_epoch_reports_the_best_epoch_and_resumes_it(tmp_path):
    over = [*TINY_OVERRIDES, "data.train_split=train", "data.eval_split=test", "data.test_split=null",
            "train.epochs=3", "train.lr=0.05"]
    rep = LocalReporter(tmp_path)
    GistRun(build_config({}, over), rep).fit()
    accs = [m["test/acc"] for m in rep.history]
    assert all("val/acc" not in m for m in rep.history)
    assert [m["test/best_acc"] for m in rep.history] == [max(accs[: i + 1]) for i in range(3)]
    again = LocalReporter(tmp_path)
    final = GistRun(build_config({}, over[:-2] + ["train.epochs=4", "train.lr=0.05"]), again).fit()
    assert final["test/best_acc"] == max(max(accs), final["test/acc"])  # the best survives the resume
    assert math.isfinite(final["train/loss"])


def test_the_paper_protocol_evaluates_test_every_epoch_and_selects_on_its_best(tmp_path):
    from pathlib import Path

    import yaml

    from gist_ray.errors import ConfigError
    from gist_ray.sweep.space import load_sweep

    root = Path(__file__).resolve().parents[1] / "search_spaces"
    spec = load_sweep(root / "paper_vtab_as_published.yaml", ["data.task=svhn"])
    d, t = spec.base.data, spec.base.train
    assert (spec.protocol, d.train_split, d.eval_split, d.test_split) == ("paper", "trainval", "test", None)
    assert t.eval_every == 1 and spec.search.metric == "test/best_acc"
    assert (t.lr, spec.base.model.drop_path) == (1e-2, 0.0)  # svhn's line of the shared recipe file
    honest = load_sweep(root / "paper_vtab.yaml", ["data.task=svhn"])
    assert honest.protocol == "vtab" and honest.base.data.eval_split == "val" and honest.base.train.lr == 1e-2
    doc = yaml.safe_load((root / "paper_vtab_as_published.yaml").read_text())
    doc["search"]["metric"] = "val/acc"
    doc["per_task"] = str(root / "recipes" / "gist_vtab.yaml")
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError, match="search.metric: protocol paper reports test/best_acc"):
        load_sweep(tmp_path / "bad.yaml")
