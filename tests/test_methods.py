"""Every registered PEFT method, with the Gist token on and off, on the tiny test ViT and (for the methods defined
on Swin) the tiny test Swin.

Table-driven over ``METHODS.names()``: a new method file is tested without touching this file.
"""

from __future__ import annotations

import re

import pytest
import torch

from gist_ray.backbones import create_backbone, vit_of
from gist_ray.config import ConfigError, GistConfig, from_dict
from gist_ray.methods import METHODS, method_families
from gist_ray.model import build_model, load_trainable, param_part, save_trainable, trainable_counts

BACKBONE, CLASSES = "vit_test_tiny", 5
TINY_BY_FAMILY = {"vit": "vit_test_tiny", "swin": "swin_test_tiny"}
# knobs other than the defaults, per backbone (the default combination holds VPT, which is ViT-only)
OPTIONS = {("swin_test_tiny", "combo"): {"methods": [{"name": "gist_adapter"}, {"name": "ssf"}]}}
NAMES = METHODS.names()


def options(backbone: str, name: str) -> dict:
    return OPTIONS.get((backbone, name), {})


def runs_on(backbone: str, name: str) -> bool:
    cfg = from_dict(METHODS.get(name).config_cls, options(backbone, name), "method")
    return backbone.split("_")[0] in method_families(name, cfg)


PAIRS = [(bb, name) for name in NAMES for bb in TINY_BY_FAMILY.values() if runs_on(bb, name)]
CASES = [(bb, name, gist) for bb, name in PAIRS for gist in (True, False)]


def ids(cases: list[tuple]) -> list[str]:
    return ["-".join(str(c) if not isinstance(c, bool) else ("gist" if c else "nogist") for c in case) for case in cases]


def build(name: str, gist: bool, seed: int = 0, backbone: str = BACKBONE):
    torch.manual_seed(seed)
    return build_model(backbone, CLASSES, name, options(backbone, name), GistConfig(enabled=gist), weights="none")


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


@pytest.mark.parametrize("backbone,name,gist", CASES, ids=ids(CASES))
def test_forward_backward_grads(backbone: str, name: str, gist: bool) -> None:
    model = build(name, gist, backbone=backbone)
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


@pytest.mark.parametrize("backbone,name", PAIRS, ids=ids(PAIRS))
def test_closed_form_count(backbone: str, name: str) -> None:
    spec = METHODS.get(name)
    if spec.count is None:
        pytest.skip(f"{name} gives no closed form (optional): its count comes from the built model only")
    cfg = from_dict(spec.config_cls, options(backbone, name), "method")
    fresh = create_backbone(backbone, CLASSES, weights="none")
    model = build(name, True, backbone=backbone)
    counts = trainable_counts(model)
    assert counts["method"] == spec.count(vit_of(model), cfg) == spec.count(fresh, cfg)
    assert counts["token"] == 32 and counts["head"] == 33 * CLASSES
    if name not in ("linear",):
        assert counts["method"] > 0


@pytest.mark.parametrize("backbone,name,gist", CASES, ids=ids(CASES))
def test_save_load_roundtrip(backbone: str, name: str, gist: bool, tmp_path) -> None:
    model = build(name, gist, backbone=backbone)
    perturb(model)
    model.eval()
    x = images()
    with torch.no_grad():
        expected = model(x)
    save_trainable(model, tmp_path / "trained.safetensors")
    other = build(name, gist, backbone=backbone)  # same seed: same frozen backbone, trainable parts at their init
    other.eval()
    with torch.no_grad():
        assert not torch.allclose(other(x), expected)
    load_trainable(other, tmp_path / "trained.safetensors")
    with torch.no_grad():
        torch.testing.assert_close(other(x), expected, rtol=0, atol=0)


MERGEABLE = [(bb, n, g) for bb, n, g in CASES if METHODS.get(n).merge is not None]


@pytest.mark.parametrize("backbone,name,gist", MERGEABLE, ids=ids(MERGEABLE))
def test_merge_preserves_outputs(backbone: str, name: str, gist: bool) -> None:
    model = build(name, gist, backbone=backbone)
    perturb(model)
    model.eval()
    x = images()
    with torch.no_grad():
        before = model(x)
        METHODS.get(name).merge(vit_of(model))
        after = model(x)
    torch.testing.assert_close(after, before, rtol=0, atol=1e-4)
    assert trainable_counts(model)["method"] == 0
    from gist_ray.blocks import SequenceBlock
    from gist_ray.gist.token_rows import TokenRowSite

    wrappers = [m for m in vit_of(model).modules() if hasattr(m, "inner") or hasattr(m, "base_layer")]
    assert all(isinstance(m, (SequenceBlock, TokenRowSite)) for m in wrappers), wrappers  # GIST's own wrappers stay


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
        ("vera", {"rank": 0}, "rank"),
        ("vera", {"targets": []}, "targets"),
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
    assert q.detach().round(decimals=5).unique().numel() == 2  # up to the reference's rounding of (q + w) - w
    assert quantize(w, 2).detach().round(decimals=5).unique().numel() <= 4
    q.sum().backward()
    assert w.grad is not None and torch.isfinite(w.grad).all()  # the rounding passes the gradient through
    model = build("bi_adapter", False)
    up = vit_of(model).blocks[0].adapter.up
    x = torch.randn(3, up.in_features)
    torch.testing.assert_close(up(x), x @ quantize(up.weight, 1).T)


def test_gift_shares_one_pair_across_layers() -> None:
    model = build("gift", False)
    vit = vit_of(model)
    pairs = {id(vit.blocks[i].attn.proj.pair.module) for i in range(len(vit.blocks))}
    assert len(pairs) == 1


def test_vera_shares_one_frozen_pair_and_saves_only_its_vectors() -> None:
    model = build("vera", False)
    layers = [b.attn.qkv for b in vit_of(model).blocks]
    assert len({id(layer.shared.module) for layer in layers}) == 1
    trained = {n.rsplit(".", 2)[-2] for n, p in model.named_parameters() if p.requires_grad and "head" not in n}
    assert trained == {"d", "b"}  # VeRA's vectors (per adapted part: q and v), then only the head
    assert not any("vera_projections" in k for k in model.state_dict())  # rebuilt from the seed, never saved
    again = build("vera", False, seed=5)  # another torch seed: the projections come from projection_seed
    torch.testing.assert_close(vit_of(again).vera_projections.A, vit_of(model).vera_projections.A, rtol=0, atol=0)


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


def gist_pair(name: str):
    """The same model twice (GIST on, no token dropout): with and without the token-rows input gradient."""
    from gist_ray.gist import GistModel
    from gist_ray.methods import apply_method

    models = []
    for rows in (True, False):
        torch.manual_seed(0)
        vit = create_backbone(BACKBONE, CLASSES, weights="none")
        apply_method(vit, name, {})
        models.append(GistModel(vit, True, dropout=0.0, token_row_grad=rows))
    for m in models:
        perturb(m)
        m.train()
        for d in m.modules():  # methods with dropout: no random masks, so both models compute the same function
            if isinstance(d, torch.nn.Dropout):
                d.eval()
    return models


@pytest.mark.parametrize("name", NAMES)
def test_token_row_gradient_is_exact(name: str) -> None:
    fast, reference = gist_pair(name)
    grads = []
    for model in (fast, reference):
        cls_logits, gist_logits = model(images())
        (cls_logits.logsumexp(1).mean() + 0.5 * gist_logits.logsumexp(1).mean()).backward()
        grads.append({n.replace(".inner", ""): p.grad for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for n in grads[0]:
        torch.testing.assert_close(grads[0][n], grads[1][n], rtol=1e-5, atol=1e-6, msg=n)
    # constant input to block 0 -> the token-rows path ran; VPT prompts, SSF, BitFit, full fine-tuning, Houlsby
    # (trains the LayerNorms, block 0's norm1 too) -> it did not
    constant = name not in ("vpt_shallow", "vpt_deep", "ssf", "bitfit", "full", "combo", "adapter_houlsby")
    splits = fast._rows.splits if fast._rows is not None else 0
    assert (splits > 0) == constant, splits
