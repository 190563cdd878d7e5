"""The Gist token: where it sits, what trains, what it costs, and that GIST off changes nothing."""

import copy

import pytest
import torch

from gist_ray.config import GistConfig
from gist_ray.model import build_model, trainable_counts, unwrap


def make(method="gist_adapter", enabled=True, length=1, seed=0, num_classes=5):
    torch.manual_seed(seed)
    return build_model("vit_test_tiny", num_classes, method, gist=GistConfig(enabled=enabled, length=length), weights="none")


X = torch.randn(4, 3, 32, 32)
Y = torch.tensor([0, 1, 2, 3])


@pytest.mark.parametrize("method", ["linear", "gist_adapter", "vpt_shallow", "vpt_deep"])
def test_gradients_reach_token_and_method_never_frozen_backbone(method):
    model = make(method)
    model.train()
    cls_logits, gist_logits = model(X)
    (torch.nn.functional.cross_entropy(cls_logits, Y) + torch.nn.functional.cross_entropy(gist_logits, Y)).backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, f"{name} got no gradient"
        else:
            assert p.grad is None, f"frozen {name} got a gradient"
    assert model.gist.tokens.grad.abs().sum() > 0
    if method != "linear":
        assert trainable_counts(model)["method"] > 0


@pytest.mark.parametrize("length", [1, 3])
def test_token_adds_exactly_embed_dim_times_length(length):
    on, off = make(length=length), make(enabled=False)
    c_on, c_off = trainable_counts(on), trainable_counts(off)
    dim = unwrap(on).backbone.embed_dim
    assert c_on["token"] == dim * length
    assert c_on["total"] - c_off["total"] == dim * length
    assert c_on["method"] == c_off["method"] and c_on["head"] == c_off["head"]


def test_token_sits_right_after_cls():
    model = make("linear")
    vit = model.backbone
    seen = {}
    vit.blocks[0].register_forward_pre_hook(lambda m, a: seen.setdefault("x", a[0]))
    model.eval()
    model(X[:1])
    x = seen["x"]
    assert x.shape[1] == 1 + 1 + vit.patch_embed.num_patches
    torch.testing.assert_close(x[0, 1], model.gist.tokens[0, 0])  # eval: no dropout, token verbatim at index 1


@pytest.mark.parametrize("method", ["linear", "gist_adapter", "vpt_deep"])
def test_gist_off_equals_backbone_plus_method(method):
    model = make(method, enabled=False)
    model.eval()
    raw = copy.deepcopy(model.backbone)  # the same backbone + method, without the wrapper
    with torch.no_grad():
        torch.testing.assert_close(model(X), raw(X), rtol=0, atol=0)
    model.train()
    out = model(X)
    assert isinstance(out, tuple) and out[1] is None


def test_evaluation_uses_cls_only():
    model = make("gist_adapter")
    model.gist.drop.p = 0.0
    model.train()
    with torch.no_grad():
        cls_logits, gist_logits = model(X)
        model.eval()
        pred = model(X)
    assert isinstance(pred, torch.Tensor)
    torch.testing.assert_close(pred, cls_logits)
    assert not torch.allclose(pred, gist_logits)
    # the eval output is the head applied to the [CLS] position of the token sequence
    vit = model.backbone
    with torch.no_grad():
        tokens = vit.forward_features(X)
        torch.testing.assert_close(pred, vit.head(tokens[:, 0]))


def test_token_init_range_and_dropout_defaults():
    model = make(length=4)
    t = model.gist.tokens
    assert t.abs().max() <= 0.5 and t.std() > 0.1
    assert model.gist.drop.p == pytest.approx(0.1)
