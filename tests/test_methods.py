"""Every registered PEFT method, with the Gist token on and off, on the tiny test ViT.

Table-driven over ``METHODS.names()``: a new method file is tested without touching this file.
"""

from __future__ import annotations

import re

import pytest
import torch

from gist_ray.backbones import create_backbone, vit_of
from gist_ray.config import ConfigError, GistConfig, from_dict
from gist_ray.methods import METHODS
from gist_ray.model import build_model, load_trainable, param_part, save_trainable, trainable_counts

BACKBONE, CLASSES = "vit_test_tiny", 5
NAMES = METHODS.names()
CASES = [(name, gist) for name in NAMES for gist in (True, False)]
IDS = [f"{n}-{'gist' if g else 'nogist'}" for n, g in CASES]


def build(name: str, gist: bool, seed: int = 0):
    torch.manual_seed(seed)
    return build_model(BACKBONE, CLASSES, name, {}, GistConfig(enabled=gist), weights="none")


def images(seed: int = 1) -> torch.Tensor:
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def perturb(model, seed: int = 2) -> None:
    """Move every trainable parameter off its init (zero-initialised branches would make checks trivial)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn(p.shape, generator=g))


def default_cfg(name: str):
    return from_dict(METHODS.get(name).config_cls, {}, "method")


@pytest.mark.parametrize("name,gist", CASES, ids=IDS)
def test_forward_backward_grads(name: str, gist: bool) -> None:
    model = build(name, gist)
    model.train()
    cls_logits, gist_logits = model(images())
    assert cls_logits.shape == (2, CLASSES)
    assert (gist_logits is not None) == gist
    loss = cls_logits.logsumexp(1).mean() + (gist_logits.logsumexp(1).mean() if gist else 0)
    loss.backward()
    for n, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, f"trainable {n} got no grad"
            assert param_part(n) in ("method", "token", "head")
        else:
            assert p.grad is None, f"frozen {n} got a grad"
    parts = {param_part(n) for n, p in model.named_parameters() if p.requires_grad}
    assert "head" in parts and (("token" in parts) == gist)
    assert all(n.startswith("backbone.head.") for n, p in model.named_parameters() if param_part(n) == "head")


@pytest.mark.parametrize("name", NAMES)
def test_closed_form_count(name: str) -> None:
    spec, cfg = METHODS.get(name), default_cfg(name)
    fresh = create_backbone(BACKBONE, CLASSES, weights="none")
    model = build(name, True)
    counts = trainable_counts(model)
    assert counts["method"] == spec.count(vit_of(model), cfg) == spec.count(fresh, cfg)
    assert counts["token"] == 32 and counts["head"] == 33 * CLASSES
    if name not in ("linear",):
        assert counts["method"] > 0


@pytest.mark.parametrize("name,gist", CASES, ids=IDS)
def test_save_load_roundtrip(name: str, gist: bool, tmp_path) -> None:
    model = build(name, gist)
    perturb(model)
    model.eval()
    x = images()
    with torch.no_grad():
        expected = model(x)
    save_trainable(model, tmp_path / "trained.safetensors")
    other = build(name, gist)  # same seed: same frozen backbone, trainable parts at their init
    other.eval()
    with torch.no_grad():
        assert not torch.allclose(other(x), expected)
    load_trainable(other, tmp_path / "trained.safetensors")
    with torch.no_grad():
        torch.testing.assert_close(other(x), expected, rtol=0, atol=0)


MERGEABLE = [(n, g) for n, g in CASES if METHODS.get(n).merge is not None]


@pytest.mark.parametrize("name,gist", MERGEABLE, ids=[f"{n}-{'gist' if g else 'nogist'}" for n, g in MERGEABLE])
def test_merge_preserves_outputs(name: str, gist: bool) -> None:
    model = build(name, gist)
    perturb(model)
    model.eval()
    x = images()
    with torch.no_grad():
        before = model(x)
        METHODS.get(name).merge(vit_of(model))
        after = model(x)
    torch.testing.assert_close(after, before, rtol=0, atol=1e-4)
    assert trainable_counts(model)["method"] == 0
    assert not any(hasattr(m, "inner") or hasattr(m, "base_layer") for m in vit_of(model).blocks.modules())


def test_merge_removes_wrappers_for_plain_timm_modules() -> None:
    from torch import nn

    model = build("lora", False)
    METHODS.get("lora").merge(vit_of(model))
    assert type(vit_of(model).blocks[0].attn.qkv) is nn.Linear


@pytest.mark.parametrize(
    "name,options,field",
    [
        ("lora", {"rank": 0}, "rank"),
        ("readapter", {"hidden": 8, "groups": 3}, "groups"),
        ("bi_adapter", {"bits": 0}, "bits"),
        ("gift", {"targets": ["nope"]}, "targets"),
        ("fact_tk", {"rank": -1}, "rank"),
        ("combo", {"methods": [{"name": "nope"}]}, "methods[0].name"),
        ("combo", {"methods": [{"name": "lora", "rank": 0}]}, "methods[0].rank"),
    ],
)
def test_config_errors_name_the_field(name: str, options: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"method.{field}:")):
        from_dict(METHODS.get(name).config_cls, options, "method")


def test_combo_is_the_sum_of_its_parts() -> None:
    opts = {"methods": [{"name": "lora", "rank": 2}, {"name": "ssf"}]}
    torch.manual_seed(0)
    model = build_model(BACKBONE, CLASSES, "combo", opts, weights="none")
    vit = vit_of(model)
    lora, ssf = METHODS.get("lora"), METHODS.get("ssf")
    expected = lora.count(vit, from_dict(lora.config_cls, {"rank": 2})) + ssf.count(vit, default_cfg("ssf"))
    assert trainable_counts(model)["method"] == expected


def test_bi_adapter_forward_uses_quantised_weights() -> None:
    from gist_ray.methods.bi_adapter import quantize

    w = torch.randn(4, 6, requires_grad=True)
    q = quantize(w, 1)
    assert q.unique().numel() <= 2 and torch.allclose(q.abs(), w.abs().mean().expand_as(q))
    assert quantize(w, 2).detach().unique().numel() <= 4
    q.sum().backward()
    assert torch.equal(w.grad, torch.ones_like(w))  # straight-through


def test_gift_shares_one_pair_across_layers() -> None:
    model = build("gift", False)
    vit = vit_of(model)
    pairs = {id(vit.blocks[i].attn.proj.pair.module) for i in range(len(vit.blocks))}
    assert len(pairs) == 1


def test_peft_keeps_head_trainable_and_unfreezes_nothing_else() -> None:
    pytest.importorskip("peft")
    model = build("peft_lora", True)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert "backbone.head.weight" in trainable and "gist.tokens" in trainable
    assert all(".lora_" in n for n in trainable if param_part(n) == "method")


def test_gist_adapter_token_on_vit_b16_is_768() -> None:
    model = build_model("vit_base_patch16_224", 100, "gist_adapter", {}, weights="none")
    counts = trainable_counts(model)
    assert counts["token"] == 768
    assert counts["head"] == 768 * 100 + 100
    assert counts["method"] == METHODS.get("gist_adapter").count(vit_of(model), default_cfg("gist_adapter"))
