"""Low-bit adapters (Jie, Wang & Deng, "Revisiting the Parameter Efficiency of Adapters from the Perspective of
Precision Redundancy", ICCV 2023, arXiv 2307.16867; "Bi-Adapter" in GIST's Table 2).

An AdaptFormer-style adapter (parallel to the MLP branch, see :mod:`adaptformer`) whose two weight matrices are
quantised to ``bits`` bits in every forward pass; gradients reach the full-precision weights through a
straight-through estimator. 1 bit: ``sign(w) * mean|w|`` (the scaled sign with least squared error);
more bits: a uniform symmetric grid of ``2**bits`` levels over ``[-max|w|, max|w|]``. Biases stay in full
precision. The count is the full-precision trainable parameters; storage after training is
``weights * bits / 32 + biases`` float32 equivalents.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from gist_ray.methods.adaptformer import ParallelMlpAdapterBlock
from gist_ray.methods.base import block_dim, per_block, register_method, wrap_blocks


@dataclass
class BiAdapterConfig:
    bottleneck: int = 32
    bits: int = 1
    scale: float = 0.1

    def check(self, where: str) -> None:
        from gist_ray.config import ConfigError

        if self.bottleneck < 1:
            raise ConfigError(f"{where}.bottleneck: must be >= 1, got {self.bottleneck}")
        if not 1 <= self.bits <= 16:
            raise ConfigError(f"{where}.bits: must be in [1, 16], got {self.bits}")


def quantize(w: torch.Tensor, bits: int) -> torch.Tensor:
    """``w`` quantised to ``bits`` bits, with a straight-through gradient (d out / d w = 1)."""
    with torch.no_grad():
        if bits == 1:
            q = torch.sign(w) * w.abs().mean()
        else:
            top = w.abs().max().clamp_min(1e-12)
            step = 2 * top / (2**bits - 1)
            q = torch.round((w + top) / step) * step - top
    return w + (q - w).detach()


class QuantBottleneck(nn.Module):
    """``scale * up(relu(down(x)))`` with both weight matrices quantised to ``bits`` bits."""

    def __init__(self, dim: int, hidden: int, bits: int, scale: float) -> None:
        super().__init__()
        self.down = nn.Linear(dim, hidden)
        self.up = nn.Linear(hidden, dim)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)
        self.bits = bits
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(F.linear(x, quantize(self.down.weight, self.bits), self.down.bias))
        return F.linear(h, quantize(self.up.weight, self.bits), self.up.bias) * self.scale


def _count(vit, cfg: BiAdapterConfig) -> int:
    return per_block(vit, lambda d: 2 * d * cfg.bottleneck + cfg.bottleneck + d)


@register_method("bi_adapter", BiAdapterConfig, count=_count, paper="Bi-Adapter, ICCV 2023, arXiv 2307.16867",
                 families=("vit", "swin"))
def apply(vit, cfg: BiAdapterConfig) -> None:
    def adapter(d: int) -> QuantBottleneck:
        return QuantBottleneck(d, cfg.bottleneck, cfg.bits, cfg.scale)

    wrap_blocks(vit, lambda i, b: ParallelMlpAdapterBlock(b, adapter(block_dim(b))))
