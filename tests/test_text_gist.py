"""The Gist token inside text encoders: placement, masking, parameter count, outputs (tiny random encoders)."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")

from gist_ray.losses import gist_objective  # noqa: E402
from gist_ray.text.backbones import load_text_backbone  # noqa: E402
from gist_ray.text.gist import TextGistModel  # noqa: E402
from gist_ray.text.splits import tokenize  # noqa: E402
from gist_ray.text.synthetic import synthetic_split  # noqa: E402

TINY = ["bert_test_tiny", "roberta_test_tiny", "t5_test_tiny"]


def _model(name: str, enabled: bool = True, seed: int = 0, **kw):
    torch.manual_seed(seed)
    loaded = load_text_backbone(name)
    return TextGistModel(loaded.encoder, 3, enabled=enabled, **kw), loaded


def _batch(loaded, task: str = "match", n: int = 6):
    return tokenize(synthetic_split(task, "train", n), loaded.tokenizer, 48)


def _first_layer_input(model: TextGistModel, inputs: dict) -> torch.Tensor:
    """The hidden states entering the first transformer layer (after the token was placed)."""
    seen = {}

    def grab(module, args, kwargs):
        seen.setdefault("x", args[0] if args else kwargs["hidden_states"])

    h = model.family.layers(model.backbone)[0].register_forward_pre_hook(grab, with_kwargs=True)
    with torch.no_grad():
        model(**inputs)
    h.remove()
    return seen["x"]


@pytest.mark.parametrize("name", TINY)
def test_padded_batch_gives_the_unpadded_prediction(name):
    model, loaded = _model(name)
    split = _batch(loaded)
    lens = split.lengths()
    short, long_ = int(lens.argmin()), int(lens.argmax())
    assert lens[short] < lens[long_]
    model.eval()
    with torch.no_grad():
        together = model(**split.inputs([short, long_]))
        alone = model(**split.inputs([short]))
    assert together.shape == (2, 3)
    torch.testing.assert_close(together[0], alone[0], rtol=0, atol=1e-5)
    # and the padding is what is masked: unmasking it changes the short row's prediction
    inputs = split.inputs([short, long_])
    inputs["attention_mask"] = torch.ones_like(inputs["attention_mask"])
    with torch.no_grad():
        unmasked = model.features(**inputs)[0][0]
        reference = model.features(**split.inputs([short]))[0][0]
    assert (unmasked - reference).abs().max() > 1e-3


@pytest.mark.parametrize("name", TINY)
def test_token_placement_after_the_embeddings(name):
    model, loaded = _model(name)
    plain, _ = _model(name, enabled=False)
    plain.backbone.load_state_dict(model.backbone.state_dict())
    model.eval(), plain.eval()
    inputs = _batch(loaded).inputs([0, 1])
    with_token, without = _first_layer_input(model, inputs), _first_layer_input(plain, inputs)
    at = model.family.gist_at
    assert at == (0 if name.startswith("t5") else 1)
    assert with_token.shape[1] == without.shape[1] + 1
    # the token's row is the token itself: no position or segment embedding was added to it
    torch.testing.assert_close(with_token[:, at], model.gist.tokens[0, 0].expand(2, -1))
    # every text row is exactly the embedding it has without GIST: pretrained positions do not shift
    torch.testing.assert_close(torch.cat([with_token[:, :at], with_token[:, at + 1 :]], 1), without)


@pytest.mark.parametrize("name", TINY)
def test_token_adds_exactly_hidden_size_parameters(name):
    on, loaded = _model(name)
    off, _ = _model(name, enabled=False)
    hidden = loaded.family.hidden_size(loaded.encoder)
    n_on = sum(p.numel() for p in on.parameters())
    n_off = sum(p.numel() for p in off.parameters())
    assert n_on - n_off == hidden
    assert dict(on.named_parameters())["gist.tokens"].shape == (1, 1, hidden)


@pytest.mark.parametrize("name", TINY)
def test_token_init_and_dropout_follow_the_official_code(name):
    model, _ = _model(name, seed=3)
    t = model.gist.tokens.detach()
    assert float(t.min()) >= -0.5 and float(t.max()) <= 0.5 and float(t.std()) > 0.2  # U(-0.5, 0.5)
    assert model.gist.drop.p == 0.1


@pytest.mark.parametrize("name", TINY)
def test_train_returns_cls_and_gist_logits_eval_cls_only(name):
    model, loaded = _model(name)
    inputs = _batch(loaded).inputs([0, 1, 2])
    model.train()
    cls_logits, gist_logits = model(**inputs)
    assert cls_logits.shape == gist_logits.shape == (3, 3)
    loss, parts = gist_objective(cls_logits, gist_logits, torch.tensor([0, 1, 2]))
    assert {"ce_cls", "ce_gist", "kl_cls_gist", "kl_gist_cls"} <= set(parts)
    loss.backward()
    assert model.gist.tokens.grad is not None and float(model.gist.tokens.grad.abs().sum()) > 0
    model.eval()
    out = model(**inputs)
    assert isinstance(out, torch.Tensor) and out.shape == (3, 3)


@pytest.mark.parametrize("name", TINY)
def test_gist_output_goes_through_the_same_head(name):
    model, loaded = _model(name)
    inputs = _batch(loaded).inputs([0, 1])
    seen: dict = {"head_in": [], "head_out": []}

    def grab_hidden(module, args, kwargs, out):
        seen["h"] = out.last_hidden_state

    def grab_head(module, args, out):
        seen["head_in"].append(args[0])
        seen["head_out"].append(out)

    model.backbone.register_forward_hook(grab_hidden, with_kwargs=True)
    model.head.register_forward_hook(grab_head)
    model.train()
    cls_logits, gist_logits = model(**inputs)
    h, at = seen["h"], model.family.gist_at
    assert len(seen["head_in"]) == 2  # one head, called for the [CLS] side and for the Gist token
    torch.testing.assert_close(seen["head_in"][1], h[:, at])
    if model.family.pooling == "first":
        torch.testing.assert_close(seen["head_in"][0], h[:, 0])
    else:  # masked mean over the text rows, the token's row left out
        m = inputs["attention_mask"].unsqueeze(-1).float()
        torch.testing.assert_close(seen["head_in"][0], (h[:, 1:] * m).sum(1) / m.sum(1))
    assert seen["head_out"][0] is cls_logits and seen["head_out"][1] is gist_logits


@pytest.mark.parametrize("name", TINY)
def test_the_cls_side_reads_the_token(name):
    """The text attends to the token: changing it changes the [CLS]-side prediction."""
    model, loaded = _model(name)
    model.eval()
    inputs = _batch(loaded).inputs([0])
    with torch.no_grad():
        before = model.features(**inputs)[0]
        model.gist.tokens.add_(1.0)
        after = model.features(**inputs)[0]
    assert (before - after).abs().max() > 1e-3


@pytest.mark.parametrize("name", TINY)
def test_disabled_is_a_pass_through(name):
    model, loaded = _model(name, enabled=False)
    inputs = _batch(loaded).inputs([0, 1])
    model.train()
    logits, none = model(**inputs)
    assert none is None and logits.shape == (2, 3)
    model.eval()
    with torch.no_grad():
        h = model.backbone(**inputs).last_hidden_state
        if model.family.pooling == "first":
            rep = h[:, 0]
        else:
            m = inputs["attention_mask"].unsqueeze(-1).float()
            rep = (h * m).sum(1) / m.sum(1)
        torch.testing.assert_close(model(**inputs), model.head(rep))
