"""Where things live in each supported Hugging Face encoder architecture (a *family*).

Two families cover the paper's and the common GLUE encoders:

- ``bert``: post-LayerNorm encoders with ``embeddings`` and ``encoder.layer[i]`` holding ``attention.self``
  (query/key/value), ``attention.output`` (dense, LayerNorm, dropout), ``intermediate`` and ``output``:
  BERT, RoBERTa, XLM-R, ELECTRA, CamemBERT and MiniLM (all-MiniLM-L6-v2 is a ``BertModel``).
- ``t5``: the pre-LayerNorm T5 encoder (``T5EncoderModel``): ``encoder.block[i].layer[0]`` self-attention
  (q, k, v, o) and ``layer[1]`` feed-forward (wi or wi_0/wi_1, wo), relative position bias, no biases.

Methods address linear layers by family-independent *site* names (``q``, ``k``, ``v``, ``attn_out``,
``ffn_in``, ``ffn_out``); :data:`TextFamily.site_patterns` turns them into full-match regexes of module names
relative to the encoder (the form ``peft`` takes). An optional ``inner.`` admits a wrapper method applied first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from torch import nn

SITES = ("q", "k", "v", "attn_out", "ffn_in", "ffn_out")

_BERT_LAYER = r"encoder\.layer\.\d+\."
_T5_BLOCK = r"encoder\.block\.\d+\.layer\."


@dataclass(frozen=True)
class TextFamily:
    """One architecture family: its model types, where the Gist token goes, how the [CLS]-side is pooled."""

    name: str
    model_types: tuple[str, ...]
    gist_at: int  # sequence index the Gist token takes
    pooling: Literal["first", "mean"]  # first token ([CLS] / <s>) or masked mean over the text tokens
    site_patterns: dict[str, str] = field(default_factory=dict)

    def layers(self, encoder: nn.Module) -> list[nn.Module]:
        """The transformer layers of ``encoder`` in order."""
        return list(encoder.encoder.layer if self.name == "bert" else encoder.encoder.block)

    def hidden_size(self, encoder: nn.Module) -> int:
        cfg = encoder.config
        return int(cfg.hidden_size if self.name == "bert" else cfg.d_model)

    def target_regex(self, sites: list[str]) -> str:
        """One full-match regex for the linear layers at ``sites`` of every layer."""
        return "(?:" + "|".join(self.site_patterns[s] for s in sites) + ")"


BERT = TextFamily(
    name="bert",
    model_types=("bert", "roberta", "xlm-roberta", "electra", "camembert"),
    gist_at=1,
    pooling="first",
    site_patterns={
        "q": _BERT_LAYER + r"attention\.self\.query",
        "k": _BERT_LAYER + r"attention\.self\.key",
        "v": _BERT_LAYER + r"attention\.self\.value",
        "attn_out": _BERT_LAYER + r"attention\.output\.(?:inner\.)?dense",
        "ffn_in": _BERT_LAYER + r"intermediate\.dense",
        "ffn_out": _BERT_LAYER + r"output\.(?:inner\.)?dense",
    },
)

T5 = TextFamily(
    name="t5",
    model_types=("t5", "mt5"),
    gist_at=0,
    pooling="mean",
    site_patterns={
        "q": _T5_BLOCK + r"0\.SelfAttention\.q",
        "k": _T5_BLOCK + r"0\.SelfAttention\.k",
        "v": _T5_BLOCK + r"0\.SelfAttention\.v",
        "attn_out": _T5_BLOCK + r"0\.SelfAttention\.o",
        "ffn_in": _T5_BLOCK + r"1\.(?:inner\.)?DenseReluDense\.wi(?:_0|_1)?",
        "ffn_out": _T5_BLOCK + r"1\.(?:inner\.)?DenseReluDense\.wo",
    },
)

FAMILIES: dict[str, TextFamily] = {f.name: f for f in (BERT, T5)}


def family_for_model_type(model_type: str) -> TextFamily:
    """The family of a Hugging Face ``config.model_type``; a ValueError naming the supported types otherwise."""
    for fam in FAMILIES.values():
        if model_type in fam.model_types:
            return fam
    known = ", ".join(t for f in FAMILIES.values() for t in f.model_types)
    raise ValueError(f"text encoder model_type {model_type!r} is not supported; supported: {known}")


def family_of(encoder: nn.Module) -> TextFamily:
    """The family of a loaded encoder (from its ``config.model_type``)."""
    return family_for_model_type(str(encoder.config.model_type))
