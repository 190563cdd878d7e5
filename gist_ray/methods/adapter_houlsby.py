"""Sequential bottleneck adapters (Houlsby et al., "Parameter-Efficient Transfer Learning for NLP", ICML 2019,
arXiv 1902.00751).

Reference: google-research/adapter-bert, ``modeling.py`` (``feedforward_adapter`` and its two calls in
``transformer_model``) and ``optimization.py`` (the trained variables). Two adapters per block, one on the output
of the attention branch and one on the output of the MLP branch, each applied before the residual addition and with
its own skip connection::

    x = x + A1(attn(norm1(x)))      A(h) = h + up(gelu(down(h)))
    x = x + A2(mlp(norm2(x)))

Init: both projections trunc_normal(std 1e-3, cut at 2 std, TensorFlow's ``truncated_normal_initializer``), zero
biases. GELU is BERT's tanh approximation. No dropout inside the adapter. Trains: the adapters and every LayerNorm
of the backbone (adapter-bert's ``layer_norm`` collection; ``train_layernorms: false`` trains the adapters only).
Default bottleneck 64 (``feedforward_adapter(hidden_size=64)``). BERT is post-norm; on a pre-norm ViT the adapter
sits where it does in BERT, on the branch output before the residual addition.
"""

from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

from gist_ray.methods._bottleneck import Bottleneck, trunc_normal_
from gist_ray.methods.base import attn_out, block_dim, per_block, register_method, residual1, residual2, wrap_blocks
from gist_ray.typed_config import setting

INIT_STD = 1e-3  # feedforward_adapter(init_scale=1e-3)


@dataclass
class HoulsbyConfig:
    bottleneck: int = setting(64, ge=1)
    train_layernorms: bool = True


class Residual(nn.Module):
    """``h + fn(h)``."""

    def __init__(self, fn: nn.Module) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.fn(h)


class SequentialAdapterBlock(nn.Module):
    """A timm Block with ``after_attn`` on the attention output and ``after_mlp`` on the MLP output, each applied
    before the residual addition (and under the branch's layer scale and drop-path)."""

    def __init__(self, inner: nn.Module, after_attn: nn.Module, after_mlp: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.after_attn = after_attn
        self.after_mlp = after_mlp

    def forward(self, x: torch.Tensor, **kw) -> torch.Tensor:
        b = self.inner
        x = x + residual1(b, self.after_attn(attn_out(b, b.norm1(x))))
        return x + residual2(b, self.after_mlp(b.mlp(b.norm2(x))))


def houlsby_adapter(dim: int, hidden: int) -> Residual:
    adapter = Bottleneck(dim, hidden, act=partial(nn.GELU, approximate="tanh"))
    trunc_normal_(adapter.down, INIT_STD, bound=2 * INIT_STD)
    trunc_normal_(adapter.up, INIT_STD, bound=2 * INIT_STD)
    return Residual(adapter)


def layernorms(vit: nn.Module) -> list[nn.LayerNorm]:
    """Every LayerNorm of the backbone (under any method wrappers)."""
    return [m for m in vit.modules() if isinstance(m, nn.LayerNorm)]


def _count(vit, cfg: HoulsbyConfig) -> int:
    adapters = per_block(vit, lambda d: 2 * (2 * d * cfg.bottleneck + cfg.bottleneck + d))
    norms = sum(p.numel() for m in layernorms(vit) for p in m.parameters()) if cfg.train_layernorms else 0
    return adapters + norms


@register_method("adapter_houlsby", HoulsbyConfig, count=_count, paper="Houlsby et al., ICML 2019, arXiv 1902.00751",
                 families=("vit", "swin"))
def apply(vit, cfg: HoulsbyConfig) -> None:
    if cfg.train_layernorms:
        for norm in layernorms(vit):
            norm.requires_grad_(True)

    def wrap(i: int, b: nn.Module) -> SequentialAdapterBlock:
        d = block_dim(b)
        return SequentialAdapterBlock(b, houlsby_adapter(d, cfg.bottleneck), houlsby_adapter(d, cfg.bottleneck))

    wrap_blocks(vit, wrap)
