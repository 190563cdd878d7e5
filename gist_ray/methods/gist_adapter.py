"""The adapter of the official GIST code (Ruan et al., "GIST", arXiv 2312.07255).

One bottleneck adapter per block (down-projection, GELU, up-projection, times a fixed scale) added in parallel to
*both* residual branches and shared by them; it reads the block's un-normalised input::

    x = x + attn(norm1(x)) + s * A(x)
    x = x + mlp(norm2(x))  + s * A(x)
"""

from dataclasses import dataclass

import torch
from torch import nn

from gist_ray.methods.base import attn_out, block_dim, per_block, register_method, residual1, residual2, wrap_blocks


@dataclass
class GistAdapterConfig:
    bottleneck: int = 4
    scale: float = 0.1
    zero_init_up: bool = False  # the official code keeps PyTorch's default init for both projections

    def check(self, where: str) -> None:
        from gist_ray.config import ConfigError

        if self.bottleneck < 1:
            raise ConfigError(f"{where}.bottleneck: must be >= 1, got {self.bottleneck}")


class Bottleneck(nn.Module):
    """``up(act(down(x))) * scale``; with ``zero_init_up`` training starts exactly at the pretrained function."""

    def __init__(
        self, dim: int, hidden: int, scale: float, act: type[nn.Module] = nn.GELU, zero_init_up: bool = False
    ) -> None:
        super().__init__()
        self.down = nn.Linear(dim, hidden)
        self.act = act()
        self.up = nn.Linear(hidden, dim)
        self.scale = scale
        if zero_init_up:
            nn.init.zeros_(self.up.weight)
            nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.act(self.down(x))) * self.scale


class SharedParallelAdapterBlock(nn.Module):
    """A timm Block with one adapter added in parallel to both branches."""

    def __init__(self, inner: nn.Module, adapter: Bottleneck) -> None:
        super().__init__()
        self.inner = inner
        self.adapter = adapter

    def forward(self, x: torch.Tensor, **kw) -> torch.Tensor:
        b = self.inner
        x = x + residual1(b, attn_out(b, b.norm1(x))) + self.adapter(x)
        return x + residual2(b, b.mlp(b.norm2(x))) + self.adapter(x)


def _count(vit, cfg: GistAdapterConfig) -> int:
    return per_block(vit, lambda d: 2 * d * cfg.bottleneck + cfg.bottleneck + d)


@register_method("gist_adapter", GistAdapterConfig, count=_count, paper="GIST official adapter, arXiv 2312.07255",
                 families=("vit", "swin"))
def apply(vit, cfg: GistAdapterConfig) -> None:
    def adapter(d: int) -> Bottleneck:
        return Bottleneck(d, cfg.bottleneck, cfg.scale, zero_init_up=cfg.zero_init_up)

    wrap_blocks(vit, lambda i, b: SharedParallelAdapterBlock(b, adapter(block_dim(b))))
