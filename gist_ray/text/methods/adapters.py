"""Sequential bottleneck adapters on text encoders, placed as AdapterHub places them:

- ``adapter_houlsby``: Houlsby et al., "Parameter-Efficient Transfer Learning for NLP", ICML 2019,
  arXiv 1902.00751; AdapterHub's ``DoubleSeqBnConfig``: an adapter after the attention output and one after
  the feed-forward output of every layer, SiLU ("swish"), reduction factor 16.
- ``adapter_pfeiffer``: Pfeiffer et al., "AdapterFusion", EACL 2021, arXiv 2005.00247; AdapterHub's
  ``SeqBnConfig``: one adapter after the feed-forward output of every layer, ReLU, reduction factor 16.

Reference: github.com/adapter-hub/adapters, ``src/adapters/configuration/adapter_config.py`` (the two configs),
``src/adapters/methods/modeling.py`` (``Adapter``: ``pre_forward``, ``forward``, ``post_forward``,
``init_bert_weights``), ``src/adapters/models/bert/modeling_bert.py`` and ``.../t5/modeling_t5.py`` (where
``bottleneck_layer_forward`` is called). AdapterHub itself pins transformers ~=4.57 and so cannot be installed next
to the transformers 5 that gist-ray uses; this file follows its code for these two configurations.

With ``h`` the sublayer's output after its dropout, ``x`` the sublayer's residual input and ``LN`` the
sublayer's own post-LayerNorm (BERT family; none on pre-LN T5), both configs take the adapter's residual from
``h`` (``residual_before_ln=True``) and end with ``LN(out + x)`` (``original_ln_after=True``)::

    Houlsby:  out = A(h) + h                            -> LN(out + x)
    Pfeiffer: out = A(LN(h + x)) + h                    -> LN(out + x)   (original_ln_before=True)
    A(z) = dropout(up(act(down(z))) * scaling),  down: d -> d // reduction_factor

Initialisation ``bert`` (AdapterHub's default): down and up weights N(0, 0.02), biases zero; ``houlsby``:
weights truncated N(0, 1e-2) in +-2e-2, biases zero. On T5 the attention-side adapter is applied by replacing that
sublayer's dropout (``h + A(h)`` is exactly Houlsby with no LayerNorm), the feed-forward one by wrapping
``T5LayerFF``; on the BERT family ``attention.output`` and ``output`` are wrapped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from gist_ray.errors import ConfigError
from gist_ray.text.families import TextFamily
from gist_ray.text.methods.base import register_text_method


@dataclass
class BottleneckConfig:
    """Knobs shared by both placements (AdapterHub's defaults)."""

    reduction_factor: float = 16.0
    non_linearity: str = "swish"
    init_weights: Literal["bert", "houlsby"] = "bert"
    dropout: float = 0.0
    scaling: float = 1.0

    def check(self, where: str) -> None:
        from transformers.activations import ACT2FN

        if self.reduction_factor <= 0:
            raise ConfigError(f"{where}.reduction_factor: must be > 0, got {self.reduction_factor}")
        if self.non_linearity.lower() not in ACT2FN:
            raise ConfigError(f"{where}.non_linearity: unknown {self.non_linearity!r}; known: {', '.join(ACT2FN)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"{where}.dropout: must be in [0, 1), got {self.dropout}")

    def bottleneck(self, hidden: int) -> int:
        return max(1, int(hidden // self.reduction_factor))


@dataclass
class HoulsbyConfig(BottleneckConfig):
    non_linearity: str = "swish"


@dataclass
class PfeifferConfig(BottleneckConfig):
    non_linearity: str = "relu"


class Bottleneck(nn.Module):
    """AdapterHub's ``Adapter`` without layer norms, gating or PHM: ``dropout(up(act(down(z))) * s) + residual``."""

    def __init__(self, dim: int, cfg: BottleneckConfig) -> None:
        from transformers.activations import get_activation

        super().__init__()
        b = cfg.bottleneck(dim)
        self.down = nn.Linear(dim, b)
        self.act = get_activation(cfg.non_linearity.lower())
        self.up = nn.Linear(b, dim)
        self.drop = nn.Dropout(cfg.dropout)
        self.scaling = cfg.scaling
        for lin in (self.down, self.up):
            if cfg.init_weights == "bert":
                nn.init.normal_(lin.weight, mean=0.0, std=0.02)
            else:
                nn.init.trunc_normal_(lin.weight, mean=0.0, std=1e-2, a=-2e-2, b=2e-2)
            nn.init.zeros_(lin.bias)

    def forward(self, z: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.drop(self.up(self.act(self.down(z))) * self.scaling) + residual


def adapted(adapter: Bottleneck, h: torch.Tensor, x: torch.Tensor, norm: nn.Module | None,
            ln_before: bool) -> torch.Tensor:
    """AdapterHub's pre_forward -> Adapter.forward -> post_forward for ``residual_before_ln=True``."""
    residual = h
    if ln_before:
        h = norm(h + x) if norm is not None else h + x
    out = adapter(h, residual)
    return norm(out + x) if norm is not None else out + x


class AdaptedBertOutput(nn.Module):
    """A BERT-family ``attention.output`` / ``output`` (dense, dropout, LayerNorm) with an adapter inside."""

    def __init__(self, inner: nn.Module, adapter: Bottleneck, ln_before: bool) -> None:
        super().__init__()
        self.inner = inner
        self.adapter = adapter
        self.ln_before = ln_before

    def forward(self, hidden_states: torch.Tensor, input_tensor: torch.Tensor) -> torch.Tensor:
        h = self.inner.dropout(self.inner.dense(hidden_states))
        return adapted(self.adapter, h, input_tensor, self.inner.LayerNorm, self.ln_before)


class AdaptedT5FF(nn.Module):
    """A ``T5LayerFF`` (pre-LayerNorm, residual) with an adapter on its output."""

    def __init__(self, inner: nn.Module, adapter: Bottleneck, ln_before: bool) -> None:
        super().__init__()
        self.inner = inner
        self.adapter = adapter
        self.ln_before = ln_before

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        h = self.inner.dropout(self.inner.DenseReluDense(self.inner.layer_norm(hidden_states)))
        return adapted(self.adapter, h, hidden_states, None, self.ln_before)


class DropoutThenAdapter(nn.Module):
    """Replaces a T5 sublayer's dropout: ``h = dropout(a); return A(h) + h`` (T5 then adds the residual x)."""

    def __init__(self, dropout: nn.Module, adapter: Bottleneck) -> None:
        super().__init__()
        self.dropout = dropout
        self.adapter = adapter

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        h = self.dropout(a)
        return self.adapter(h, h)


def _apply(encoder: nn.Module, family: TextFamily, cfg: BottleneckConfig, after_attention: bool,
           ln_before: bool) -> None:
    d = family.hidden_size(encoder)
    for layer in family.layers(encoder):
        if family.name == "t5":
            if after_attention:
                attn = layer.layer[0]
                attn.dropout = DropoutThenAdapter(attn.dropout, Bottleneck(d, cfg))
            layer.layer[1] = AdaptedT5FF(layer.layer[1], Bottleneck(d, cfg), ln_before)
        else:
            if after_attention:
                layer.attention.output = AdaptedBertOutput(layer.attention.output, Bottleneck(d, cfg), ln_before)
            layer.output = AdaptedBertOutput(layer.output, Bottleneck(d, cfg), ln_before)


def _count(per_layer: int):
    def count(encoder: nn.Module, family: TextFamily, cfg: BottleneckConfig) -> int:
        d = family.hidden_size(encoder)
        b = cfg.bottleneck(d)
        return per_layer * len(family.layers(encoder)) * (2 * d * b + b + d)

    return count


REFERENCE = "adapter-hub/adapters src/adapters/methods/modeling.py (Adapter), configuration/adapter_config.py"


@register_text_method("adapter_houlsby", HoulsbyConfig, count=_count(2), paper="Houlsby et al., arXiv 1902.00751",
                      reference=REFERENCE + " (DoubleSeqBnConfig)")
def apply_houlsby(encoder: nn.Module, family: TextFamily, cfg: HoulsbyConfig) -> None:
    _apply(encoder, family, cfg, after_attention=True, ln_before=False)


@register_text_method("adapter_pfeiffer", PfeifferConfig, count=_count(1), paper="Pfeiffer et al., arXiv 2005.00247",
                      reference=REFERENCE + " (SeqBnConfig)")
def apply_pfeiffer(encoder: nn.Module, family: TextFamily, cfg: PfeifferConfig) -> None:
    _apply(encoder, family, cfg, after_attention=False, ln_before=True)
