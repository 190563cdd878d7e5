"""LoRA on the query and value projections (Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models",
ICLR 2022, arXiv 2106.09685).

timm fuses q, k and v into one ``qkv`` linear whose output rows are ``[q; k; v]``; the wrapper adds
``(alpha / rank) * B @ A`` to the q rows and to the v rows only (B starts at zero, A Kaiming-uniform).
``merge`` folds the increments into the ``qkv`` weight.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from gist_ray.methods.base import blocks, get_site, merge_wrappers, plain_linear, register_method, set_site, site_linear


@dataclass
class LoRAConfig:
    rank: int = 8
    alpha: float = 8.0

    def check(self, where: str) -> None:
        from gist_ray.config import ConfigError

        if self.rank < 1:
            raise ConfigError(f"{where}.rank: must be >= 1, got {self.rank}")


class LoRAQV(nn.Module):
    """A fused ``qkv`` linear plus low-rank increments on its q and v rows."""

    def __init__(self, inner: nn.Module, in_features: int, attn_dim: int, rank: int, alpha: float) -> None:
        super().__init__()
        self.inner = inner
        self.scale = alpha / rank
        self.q_down, self.v_down = (nn.Parameter(torch.empty(rank, in_features)) for _ in range(2))
        for a in (self.q_down, self.v_down):
            nn.init.kaiming_uniform_(a, a=math.sqrt(5))
        self.q_up = nn.Parameter(torch.zeros(attn_dim, rank))
        self.v_up = nn.Parameter(torch.zeros(attn_dim, rank))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dq = F.linear(F.linear(x, self.q_down), self.q_up)
        dv = F.linear(F.linear(x, self.v_down), self.v_up)
        return self.inner(x) + self.scale * torch.cat([dq, torch.zeros_like(dq), dv], dim=-1)

    def delta(self) -> torch.Tensor:
        dq, dv = self.q_up @ self.q_down, self.v_up @ self.v_down
        return self.scale * torch.cat([dq, torch.zeros_like(dq), dv], dim=0)

    @torch.no_grad()
    def merged(self) -> nn.Linear:
        lin = plain_linear(self.inner)
        lin.weight += self.delta()
        return lin


def _count(vit, cfg: LoRAConfig) -> int:
    qkvs = [site_linear(b, "qkv") for b in blocks(vit)]
    return sum(2 * cfg.rank * (qkv.in_features + qkv.out_features // 3) for qkv in qkvs)


def merge(vit) -> None:
    merge_wrappers(vit, LoRAQV)


@register_method("lora", LoRAConfig, count=_count, merge=merge, paper="LoRA, ICLR 2022, arXiv 2106.09685",
                 families=("vit", "swin"))
def apply(vit, cfg: LoRAConfig) -> None:
    for block in blocks(vit):
        qkv = site_linear(block, "qkv")
        wrapper = LoRAQV(get_site(block, "qkv"), qkv.in_features, qkv.out_features // 3, cfg.rank, cfg.alpha)
        set_site(block, "qkv", wrapper)
