"""RepAdapter (Luo et al., "Towards Efficient Visual Adaption via Structural Re-parameterization",
arXiv 2302.08106; "ReAdapter" in GIST's Table 2), the ``repblock`` variant.

Reference: luogen1996/RepAdapter, ``repadapter.py`` (``RepAdapter``, ``forward_vit_block_adapter``,
``forward_swin_block_adapter``, ``set_RepWeight``) and ``configs/repblock/<task>.yaml`` (the per-dataset scale).
A *linear* adapter (no activation) on the normalised input of the attention (``norm1``'s output, read by ``qkv``)
and of the MLP (``norm2``'s output, read by ``fc1``): a dense down-projection ``d -> hidden`` (``conv_A``), dropout,
a group-wise up-projection ``hidden -> d`` (``conv_B``, ``groups`` independent blocks), times ``s``, with its own
skip connection::

    qkv(x)  ->  qkv(x + s * up_g(dropout(down(x))))

Init: down-projection xavier_uniform, zero bias; up-projection zero weight and bias. Dropout 0.1. Defaults: hidden
8, groups 2, scale 1 (``RepAdapter.__init__``; the per-dataset scales are in ``search_spaces/vtab_readapter.yaml``).
Trains: the adapters. Being linear, it re-parameterises exactly into the following layer (in eval mode, where the
dropout is the identity): ``merge`` folds ``I + s * B @ A`` into the ``qkv`` / ``fc1`` weights and bias, leaving a
plain ViT.
"""

from dataclasses import dataclass

import torch
from torch import nn

from gist_ray.errors import ConfigError
from gist_ray.methods.base import (
    block_dim,
    blocks,
    get_site,
    merge_wrappers,
    per_block,
    plain_linear,
    register_method,
    set_site,
)
from gist_ray.typed_config import setting


@dataclass
class RepAdapterConfig:
    hidden: int = setting(8, ge=1)
    groups: int = 2
    scale: float = 1.0
    dropout: float = setting(0.1, ge=0.0, lt=1.0)

    def check(self, where: str) -> None:
        if self.groups < 1 or self.hidden % self.groups:
            raise ConfigError(f"{where}.groups: must be >= 1 and divide hidden ({self.hidden}), got {self.groups}")


class LinearAdapter(nn.Module):
    """``x + s * (B @ dropout(A @ x + a) + b)`` with a block-diagonal ``B`` of ``groups`` blocks."""

    def __init__(self, dim: int, hidden: int, groups: int, scale: float, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % groups:
            raise ValueError(f"readapter: groups={groups} must divide the embedding width {dim}")
        self.down = nn.Linear(dim, hidden)
        nn.init.xavier_uniform_(self.down.weight)
        nn.init.zeros_(self.down.bias)
        self.dropout = nn.Dropout(dropout)
        self.up_weight = nn.Parameter(torch.zeros(groups, dim // groups, hidden // groups))
        self.up_bias = nn.Parameter(torch.zeros(dim))
        self.scale = scale

    def up_dense(self) -> torch.Tensor:
        """The (dim, hidden) block-diagonal up-projection."""
        return torch.block_diag(*self.up_weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g, _, hg = self.up_weight.shape
        h = self.dropout(self.down(x)).unflatten(-1, (g, hg))
        up = torch.einsum("...gi,goi->...go", h, self.up_weight).flatten(-2) + self.up_bias
        return x + self.scale * up

    def affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(M, c) with ``forward(x) == x + M @ x + c`` (in eval mode)."""
        b = self.up_dense()
        return self.scale * b @ self.down.weight, self.scale * (b @ self.down.bias + self.up_bias)


class PreAdapterLinear(nn.Module):
    """``inner(adapter(x))``: a linear layer reading an adapted input."""

    def __init__(self, inner: nn.Module, adapter: LinearAdapter) -> None:
        super().__init__()
        self.inner = inner
        self.adapter = adapter

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(self.adapter(x))

    @torch.no_grad()
    def merged(self) -> nn.Linear:
        """``W (x + M x + c) + b == (W + W M) x + (W c + b)``."""
        lin = plain_linear(self.inner)
        m, c = self.adapter.affine()
        shift = lin.weight @ c
        lin.weight += lin.weight @ m
        if lin.bias is None:
            lin.bias = nn.Parameter(shift, requires_grad=False)
        else:
            lin.bias += shift
        return lin


def _count(vit, cfg: RepAdapterConfig) -> int:
    return per_block(vit, lambda d: 2 * (d * cfg.hidden + cfg.hidden + d * cfg.hidden // cfg.groups + d))


def merge(vit) -> None:
    merge_wrappers(vit, PreAdapterLinear)


@register_method("readapter", RepAdapterConfig, count=_count, merge=merge, paper="RepAdapter, arXiv 2302.08106",
                 families=("vit", "swin"))
def apply(vit, cfg: RepAdapterConfig) -> None:
    for block in blocks(vit):
        for site in ("qkv", "fc1"):
            adapter = LinearAdapter(block_dim(block), cfg.hidden, cfg.groups, cfg.scale, cfg.dropout)
            set_site(block, site, PreAdapterLinear(get_site(block, site), adapter))
