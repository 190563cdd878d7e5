"""The adapter of the paper's Table 3 "Adapter" row: ATTEMPT's (Asai et al., EMNLP 2022, arXiv 2205.11961)
adapter baseline, itself Compacter's (Karimi Mahabadi et al., NeurIPS 2021) Houlsby-style adapter for T5.

Reference: github.com/AkariAsai/ATTEMPT, ``attempt/adapters/adapter_modeling.py`` (``Adapter``),
``attempt/adapters/adapter_controller.py`` (``AdapterController.forward``: ``A(y) + y``, no layer norms),
``attempt/third_party/models/t5/modeling_t5.py`` (``T5LayerFF.forward`` and ``T5LayerSelfAttention.forward``: the
adapter reads the sublayer's output *before* the sublayer's dropout), ``attempt/configs/baselines/adapter.json``
(``task_reduction_factor`` 32, ``non_linearity`` gelu_new, ``unfreeze_layer_norms`` true) and
``attempt/utils/utils.py`` (which layer norms unfreeze). Table 3's Adapter numbers (86.5 / 90.2 / 93.2 / 93.8 /
90.7 / 85.3 / 71.9 / 64.0, 1.9M parameters) are ATTEMPT's Table 1 row for this adapter on T5-base, encoder and
decoder: 48 adapters of 37,656 parameters plus the layer norms = 1.86M.

Placement, per layer, at the self-attention and the feed-forward sublayer::

    y = sublayer(LN(x));  x = x + dropout(y + A(y))      A(y) = up(act(down(y))),  down: d -> d // 32

done by replacing each sublayer's dropout with :class:`AdapterThenDropout`. ``down`` / ``up`` keep PyTorch's
default ``nn.Linear`` initialisation (ATTEMPT applies no other). On the BERT family the same position exists
(``attention.output`` / ``output``: dense, then this adapter, then dropout, then the post-LayerNorm); ATTEMPT's code
is T5-only, so that use is an extension. Here only the encoder exists (see docs/text.md): 24 adapters on T5-base.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from gist_ray.errors import ConfigError
from gist_ray.text.families import TextFamily
from gist_ray.text.methods.base import register_text_method


@dataclass
class AttemptAdapterConfig:
    reduction_factor: int = 32
    non_linearity: str = "gelu_new"
    train_layer_norms: bool = True  # ATTEMPT's adapter baseline: "unfreeze_layer_norms": true

    def check(self, where: str) -> None:
        from transformers.activations import ACT2FN

        if self.reduction_factor < 1:
            raise ConfigError(f"{where}.reduction_factor: must be >= 1, got {self.reduction_factor}")
        if self.non_linearity.lower() not in ACT2FN:
            raise ConfigError(f"{where}.non_linearity: unknown {self.non_linearity!r}; known: {', '.join(ACT2FN)}")


class AttemptAdapter(nn.Module):
    """``up(act(down(y)))`` with PyTorch's default Linear init (ATTEMPT's ``Adapter``)."""

    def __init__(self, dim: int, cfg: AttemptAdapterConfig) -> None:
        from transformers.activations import get_activation

        super().__init__()
        self.down = nn.Linear(dim, dim // cfg.reduction_factor)
        self.act = get_activation(cfg.non_linearity.lower())
        self.up = nn.Linear(dim // cfg.reduction_factor, dim)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.up(self.act(self.down(y)))


class AdapterThenDropout(nn.Module):
    """Replaces a sublayer's dropout: ``dropout(y + A(y))``."""

    def __init__(self, dropout: nn.Module, adapter: AttemptAdapter) -> None:
        super().__init__()
        self.dropout = dropout
        self.adapter = adapter

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.dropout(y + self.adapter(y))


def _sublayers(layer: nn.Module, family: TextFamily) -> list[nn.Module]:
    """The modules whose ``dropout`` follows the attention output and the feed-forward output."""
    return [layer.layer[0], layer.layer[1]] if family.name == "t5" else [layer.attention.output, layer.output]


def _layer_norms(encoder: nn.Module) -> list[nn.Module]:
    """The encoder's own layer norms (T5LayerNorm / nn.LayerNorm), not those of any added module."""
    return [m for m in encoder.modules() if isinstance(m, nn.LayerNorm) or type(m).__name__ == "T5LayerNorm"]


def _count(encoder: nn.Module, family: TextFamily, cfg: AttemptAdapterConfig) -> int:
    d = family.hidden_size(encoder)
    b = d // cfg.reduction_factor
    adapters = 2 * len(family.layers(encoder)) * (2 * d * b + b + d)
    norms = sum(p.numel() for m in _layer_norms(encoder) for p in m.parameters()) if cfg.train_layer_norms else 0
    return adapters + norms


@register_text_method("adapter_attempt", AttemptAdapterConfig, count=_count,
                      paper="ATTEMPT/Compacter adapter baseline (GIST Table 3 'Adapter'), arXiv 2205.11961",
                      reference="AkariAsai/ATTEMPT attempt/adapters/adapter_modeling.py, "
                                "attempt/third_party/models/t5/modeling_t5.py")
def apply(encoder: nn.Module, family: TextFamily, cfg: AttemptAdapterConfig) -> None:
    norms = _layer_norms(encoder)  # before adding anything
    d = family.hidden_size(encoder)
    for layer in family.layers(encoder):
        for sub in _sublayers(layer, family):
            sub.dropout = AdapterThenDropout(sub.dropout, AttemptAdapter(d, cfg))
    if cfg.train_layer_norms:
        for m in norms:
            for p in m.parameters():
                p.requires_grad_(True)
