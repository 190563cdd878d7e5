"""Sequential bottleneck adapters (Houlsby et al., "Parameter-Efficient Transfer Learning for NLP", ICML 2019).

Two adapters per block, one after the attention output and one after the MLP output, each applied before the
residual addition and with its own skip connection; the up-projection starts at zero (near-identity init)::

    x = x + A1(attn(norm1(x)))      A(h) = h + up(act(down(h)))
    x = x + A2(mlp(norm2(x)))
"""

from dataclasses import dataclass

import torch
from torch import nn

from gist_ray.methods.base import attn_out, block_dim, per_block, register_method, residual1, residual2, wrap_blocks
from gist_ray.methods.gist_adapter import Bottleneck


@dataclass
class HoulsbyConfig:
    bottleneck: int = 8

    def check(self, where: str) -> None:
        from gist_ray.config import ConfigError

        if self.bottleneck < 1:
            raise ConfigError(f"{where}.bottleneck: must be >= 1, got {self.bottleneck}")


class SequentialAdapterBlock(nn.Module):
    """A timm Block with an adapter after each branch, before the residual addition."""

    def __init__(self, inner: nn.Module, after_attn: Bottleneck, after_mlp: Bottleneck) -> None:
        super().__init__()
        self.inner = inner
        self.after_attn = after_attn
        self.after_mlp = after_mlp

    def forward(self, x: torch.Tensor, **kw) -> torch.Tensor:
        b = self.inner
        h = attn_out(b, b.norm1(x))
        x = x + residual1(b, h + self.after_attn(h))
        h = b.mlp(b.norm2(x))
        return x + residual2(b, h + self.after_mlp(h))


def _count(vit, cfg: HoulsbyConfig) -> int:
    return per_block(vit, lambda d: 2 * (2 * d * cfg.bottleneck + cfg.bottleneck + d))


@register_method("adapter_houlsby", HoulsbyConfig, count=_count, paper="Houlsby et al., ICML 2019, arXiv 1902.00751",
                 families=("vit", "swin"))
def apply(vit, cfg: HoulsbyConfig) -> None:
    def adapter(d: int) -> Bottleneck:
        return Bottleneck(d, cfg.bottleneck, scale=1.0, zero_init_up=True)

    wrap_blocks(vit, lambda i, b: SequentialAdapterBlock(b, adapter(block_dim(b)), adapter(block_dim(b))))
