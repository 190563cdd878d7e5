"""AdaptFormer (Chen et al., "AdaptFormer: Adapting Vision Transformers for Scalable Visual Recognition",
NeurIPS 2022, arXiv 2205.13535).

A ReLU bottleneck added in parallel to the MLP branch, reading the same normalised input, times a fixed scale;
the up-projection starts at zero::

    x = x + attn(norm1(x))
    x = x + mlp(norm2(x)) + s * up(relu(down(norm2(x))))
"""

from dataclasses import dataclass

import torch
from torch import nn

from gist_ray.methods.base import attn_out, block_dim, per_block, register_method, residual1, residual2, wrap_blocks
from gist_ray.methods.gist_adapter import Bottleneck


@dataclass
class AdaptFormerConfig:
    bottleneck: int = 8
    scale: float = 0.1

    def check(self, where: str) -> None:
        from gist_ray.config import ConfigError

        if self.bottleneck < 1:
            raise ConfigError(f"{where}.bottleneck: must be >= 1, got {self.bottleneck}")


class ParallelMlpAdapterBlock(nn.Module):
    """A timm Block with ``adapter(norm2(x))`` added next to the MLP branch."""

    def __init__(self, inner: nn.Module, adapter: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.adapter = adapter

    def forward(self, x: torch.Tensor, **kw) -> torch.Tensor:
        b = self.inner
        x = x + residual1(b, attn_out(b, b.norm1(x)))
        h = b.norm2(x)
        return x + residual2(b, b.mlp(h)) + self.adapter(h)


def _count(vit, cfg: AdaptFormerConfig) -> int:
    return per_block(vit, lambda d: 2 * d * cfg.bottleneck + cfg.bottleneck + d)


@register_method("adaptformer", AdaptFormerConfig, count=_count, paper="AdaptFormer, NeurIPS 2022, arXiv 2205.13535",
                 families=("vit", "swin"))
def apply(vit, cfg: AdaptFormerConfig) -> None:
    def adapter(d: int) -> Bottleneck:
        return Bottleneck(d, cfg.bottleneck, cfg.scale, nn.ReLU, zero_init_up=True)

    wrap_blocks(vit, lambda i, b: ParallelMlpAdapterBlock(b, adapter(block_dim(b))))
