"""The bottleneck the adapter methods share, and the initialisations their reference codes give it.

Not a method (the leading underscore keeps it out of the registry's discovery). Each adapter builds a
:class:`Bottleneck` and initialises it as its reference does, with the helpers below.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn


class QuickGELU(nn.Module):
    """``x * sigmoid(1.702 x)`` (CLIP's GELU approximation; NOAH's adapter activation)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class Bottleneck(nn.Module):
    """``scale * up(dropout(act(down(x))))``; ``linear(in, out, bias=...)`` builds the two projections."""

    def __init__(
        self,
        dim: int,
        hidden: int,
        scale: float = 1.0,
        act: Callable[[], nn.Module] = nn.GELU,
        dropout: float = 0.0,
        bias: bool = True,
        linear: Callable[..., nn.Module] = nn.Linear,
    ) -> None:
        super().__init__()
        self.down = linear(dim, hidden, bias=bias)
        self.act = act()
        self.dropout = nn.Dropout(dropout)
        self.up = linear(hidden, dim, bias=bias)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.dropout(self.act(self.down(x)))) * self.scale


@torch.no_grad()
def trunc_normal_(lin: nn.Linear, std: float, bound: float = 2.0) -> nn.Linear:
    """Weight ~ N(0, std) truncated to [-bound, bound] (absolute, as timm's and torch's ``trunc_normal_``), zero
    bias. timm's ViT ``init_weights`` is ``std=0.02, bound=2``; TensorFlow's truncated normal cuts at 2 std."""
    nn.init.trunc_normal_(lin.weight, std=std, a=-bound, b=bound)
    if lin.bias is not None:
        nn.init.zeros_(lin.bias)
    return lin


@torch.no_grad()
def kaiming_(lin: nn.Linear, zero_bias: bool = True) -> nn.Linear:
    """nn.Linear's own weight init, U(+-1/sqrt(fan_in)) (``kaiming_uniform_(a=sqrt(5))``), and a zero bias."""
    nn.init.kaiming_uniform_(lin.weight, a=math.sqrt(5))
    if lin.bias is not None and zero_bias:
        nn.init.zeros_(lin.bias)
    return lin


@torch.no_grad()
def zeros_(lin: nn.Linear) -> nn.Linear:
    """Zero weight and bias."""
    nn.init.zeros_(lin.weight)
    if lin.bias is not None:
        nn.init.zeros_(lin.bias)
    return lin
