"""Binary adapters (Jie, Wang & Deng, "Revisiting the Parameter Efficiency of Adapters from the Perspective of
Precision Redundancy", ICCV 2023, arXiv 2307.16867; "Bi-Adapter" in GIST's Table 2): Bi-AdaptFormer.

Reference: JieShibo/PETL-ViT, ``binary_adapter/adaptformer.py`` (``Adapter``, ``forward_block``),
``binary_adapter/utils.py`` (``QLinear``) and ``binary_adapter/configs/adaptformer/<task>-bit1-dim32.yaml`` (the
per-dataset scale). An AdaptFormer-style adapter in parallel to the MLP branch, reading the un-normalised stream
after the attention branch, times a per-dataset scale ``s``::

    x = x + attn(norm1(x))
    x = x + mlp(norm2(x)) + s * up(dropout(relu(down(x))))

Both projections are bias-free and quantised to ``bits`` bits in every forward pass: ``w`` is standardised,
``(w - mean) / (std + 1e-5)``, each value is replaced by its level of a ``2**bits``-level quantiser for N(0, 1)
(levels and thresholds from the reference's fixed-point iteration), and the result is mapped back,
``q * std + mean``; the gradient passes straight through the rounding (and through ``mean`` and ``std``).
``bits: 32`` is the reference's full-precision variant (plain linears, zero up-projection). Init: down-projection
nn.Linear's own (kaiming_uniform(a=sqrt(5))), up-projection trunc_normal(std 1e-3, cut at +-2e-3) (32 bits: zeros).
Dropout 0.1 after the ReLU. Defaults: bottleneck 32, 1 bit, scale 1 (``main.py``; the per-dataset scales are in
``search_spaces/vtab_bi_adapter.yaml``). Trains: the full-precision weights behind the quantised ones; storage
after training is ``weights * bits / 32`` float32 equivalents plus a mean and a std per matrix.
"""

from dataclasses import dataclass
from functools import lru_cache, partial

import torch
import torch.nn.functional as F
from torch import nn

from gist_ray.errors import ConfigError
from gist_ray.methods._bottleneck import Bottleneck, zeros_
from gist_ray.methods.adaptformer import ParallelMlpAdapterBlock
from gist_ray.methods.base import block_dim, per_block, register_method, wrap_blocks
from gist_ray.typed_config import setting

BITS = (1, 2, 4, 8, 32)  # the reference's --bit choices; 32 is full precision
UP_STD = 1e-3  # trunc_normal_(std=0.001, a=-0.002, b=0.002)


@dataclass
class BiAdapterConfig:
    bottleneck: int = setting(32, ge=1)
    bits: int = 1
    scale: float = 1.0
    dropout: float = setting(0.1, ge=0.0, lt=1.0)

    def check(self, where: str) -> None:
        if self.bits not in BITS:
            raise ConfigError(f"{where}.bits: must be one of {list(BITS)}, got {self.bits}")


@lru_cache(maxsize=None)
def quantizer(bits: int, iterations: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """(levels, thresholds) of the reference's ``QLinear.quantize``: thresholds halfway between levels, each level
    the N(0, 1) quantile at the middle of its cell's probability mass, iterated from all-zero levels."""
    values = torch.zeros(2**bits, dtype=torch.float64)
    for _ in range(iterations):
        ranges = (values[1:] + values[:-1]) / 2
        pv = torch.cat([torch.zeros(1, dtype=torch.float64), torch.special.ndtr(ranges),
                        torch.ones(1, dtype=torch.float64)])
        values = torch.special.ndtri((pv[1:] + pv[:-1]) / 2)
    return values.float(), ((values[1:] + values[:-1]) / 2).float()


def quantize(w: torch.Tensor, bits: int) -> torch.Tensor:
    """``w`` standardised, quantised to ``bits`` bits and mapped back, with the reference's straight-through
    gradient (the rounding passes the gradient unchanged; ``mean`` and ``std`` carry theirs)."""
    levels, thresholds = quantizer(bits)
    levels, thresholds = levels.to(w.device, w.dtype), thresholds.to(w.device, w.dtype)
    mean, std = w.mean(), w.std()
    wn = (w - mean) / (std + 1e-5)
    half_steps = (levels[1:] - levels[:-1]) / 2
    q = (torch.sign(wn.detach().unsqueeze(-1) - thresholds) * half_steps).sum(-1)
    return (q + wn - wn.detach()) * std + mean


class QuantLinear(nn.Linear):
    """A bias-free linear layer whose weight is quantised to ``bits`` bits in the forward pass."""

    def __init__(self, in_features: int, out_features: int, bias: bool = False, bits: int = 1) -> None:
        super().__init__(in_features, out_features, bias=False)
        self.bits = bits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, quantize(self.weight, self.bits))


def bi_adapter(dim: int, cfg: BiAdapterConfig) -> Bottleneck:
    if cfg.bits == 32:
        adapter = Bottleneck(dim, cfg.bottleneck, cfg.scale, act=nn.ReLU, dropout=cfg.dropout, bias=False)
        zeros_(adapter.up)
        return adapter
    linear = partial(QuantLinear, bits=cfg.bits)
    adapter = Bottleneck(dim, cfg.bottleneck, cfg.scale, act=nn.ReLU, dropout=cfg.dropout, bias=False, linear=linear)
    with torch.no_grad():
        nn.init.trunc_normal_(adapter.up.weight, std=UP_STD, a=-2 * UP_STD, b=2 * UP_STD)
    return adapter


def _count(vit, cfg: BiAdapterConfig) -> int:
    return per_block(vit, lambda d: 2 * d * cfg.bottleneck)


@register_method("bi_adapter", BiAdapterConfig, count=_count, paper="Bi-Adapter, ICCV 2023, arXiv 2307.16867",
                 families=("vit", "swin"))
def apply(vit, cfg: BiAdapterConfig) -> None:
    wrap_blocks(vit, lambda i, b: ParallelMlpAdapterBlock(b, bi_adapter(block_dim(b), cfg)))
