"""LoRA on the fused ``qkv`` (Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models", ICLR 2022,
arXiv 2106.09685), in the two forms that ViT baselines use.

``lora`` follows loralib (microsoft/LoRA, ``loralib/layers.py``, ``MergedLinear`` with
``enable_lora=[True, False, True]``): q and v of timm's fused ``qkv`` (output rows ``[q; k; v]``) each get
``(alpha / rank) * B @ A``; ``A`` kaiming_uniform(a=sqrt(5)) (U(+-1/sqrt(in))), ``B`` zeros, optional dropout on the
input of ``A`` (``lora_dropout``, default 0). Defaults rank 8 and ``alpha = rank`` (the LoRA paper sets alpha to
the first rank tried and does not tune it).

``lora_noah`` follows NOAH's VTAB-1k LoRA baseline (ZhangYuanhan-AI/NOAH,
``model/supernet_vision_transformer_timm.py`` ``Attention``, ``experiments/LoRA/ViT-B_prompt_lora_8.yaml``,
``supernet_train_prompt.py --drop_rate_LoRA 0.1``): one pair on the whole ``qkv``, ``A: d -> r`` and
``B: r -> 3d``, bias-free, dropout 0.1 on the input, no ``alpha / r`` scaling. The constructor inits ``A``
kaiming and ``B`` zeros, but the model's ``init_weights`` runs afterwards over every ``nn.Linear``: both start
trunc_normal(std 0.02), so ``B`` is non-zero at the start. Rank 8.

Both read ``qkv``'s input (``norm1``'s output) and train only their pairs. ``merge`` folds the increments into the
``qkv`` weight (exact in eval mode).
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from gist_ray.methods.base import blocks, get_site, merge_wrappers, plain_linear, register_method, set_site, site_linear
from gist_ray.typed_config import setting

NOAH_STD = 0.02  # timm's _init_vit_weights over NOAH's LoRA_a / LoRA_b


@dataclass
class LoRAConfig:
    rank: int = setting(8, ge=1)
    alpha: float = 8.0
    dropout: float = setting(0.0, ge=0.0, lt=1.0)


@dataclass
class NoahLoRAConfig:
    rank: int = setting(8, ge=1)
    dropout: float = setting(0.1, ge=0.0, lt=1.0)


class LoRAQV(nn.Module):
    """A fused ``qkv`` linear plus loralib's low-rank increments on its q and v rows."""

    def __init__(self, inner: nn.Module, in_features: int, attn_dim: int, rank: int, alpha: float,
                 dropout: float) -> None:
        super().__init__()
        self.inner = inner
        self.scale = alpha / rank
        self.dropout = nn.Dropout(dropout)
        self.q_down, self.v_down = (nn.Parameter(torch.empty(rank, in_features)) for _ in range(2))
        for a in (self.q_down, self.v_down):
            nn.init.kaiming_uniform_(a, a=math.sqrt(5))
        self.q_up = nn.Parameter(torch.zeros(attn_dim, rank))
        self.v_up = nn.Parameter(torch.zeros(attn_dim, rank))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.dropout(x)
        dq = F.linear(F.linear(h, self.q_down), self.q_up)
        dv = F.linear(F.linear(h, self.v_down), self.v_up)
        return self.inner(x) + self.scale * torch.cat([dq, torch.zeros_like(dq), dv], dim=-1)

    def delta(self) -> torch.Tensor:
        dq, dv = self.q_up @ self.q_down, self.v_up @ self.v_down
        return self.scale * torch.cat([dq, torch.zeros_like(dq), dv], dim=0)

    @torch.no_grad()
    def merged(self) -> nn.Linear:
        lin = plain_linear(self.inner)
        lin.weight += self.delta()
        return lin


class LoRAQKV(nn.Module):
    """A fused ``qkv`` linear plus NOAH's unscaled ``B @ A`` on all its rows."""

    def __init__(self, inner: nn.Module, in_features: int, out_features: int, rank: int, dropout: float) -> None:
        super().__init__()
        self.inner = inner
        self.dropout = nn.Dropout(dropout)
        self.down = nn.Parameter(nn.init.trunc_normal_(torch.empty(rank, in_features), std=NOAH_STD, a=-2, b=2))
        self.up = nn.Parameter(nn.init.trunc_normal_(torch.empty(out_features, rank), std=NOAH_STD, a=-2, b=2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x) + F.linear(F.linear(self.dropout(x), self.down), self.up)

    @torch.no_grad()
    def merged(self) -> nn.Linear:
        lin = plain_linear(self.inner)
        lin.weight += self.up @ self.down
        return lin


def _qkvs(vit) -> list[nn.Linear]:
    return [site_linear(b, "qkv") for b in blocks(vit)]


def _count(vit, cfg: LoRAConfig) -> int:
    return sum(2 * cfg.rank * (qkv.in_features + qkv.out_features // 3) for qkv in _qkvs(vit))


def _count_noah(vit, cfg: NoahLoRAConfig) -> int:
    return sum(cfg.rank * (qkv.in_features + qkv.out_features) for qkv in _qkvs(vit))


def merge(vit) -> None:
    merge_wrappers(vit, (LoRAQV, LoRAQKV))


@register_method("lora", LoRAConfig, count=_count, merge=merge, paper="LoRA (loralib, q and v), arXiv 2106.09685",
                 families=("vit", "swin"))
def apply(vit, cfg: LoRAConfig) -> None:
    for block in blocks(vit):
        qkv = site_linear(block, "qkv")
        wrapper = LoRAQV(get_site(block, "qkv"), qkv.in_features, qkv.out_features // 3, cfg.rank, cfg.alpha,
                         cfg.dropout)
        set_site(block, "qkv", wrapper)


@register_method("lora_noah", NoahLoRAConfig, count=_count_noah, merge=merge,
                 paper="LoRA as NOAH's baseline (q, k, v), arXiv 2206.04673", families=("vit", "swin"))
def apply_noah(vit, cfg: NoahLoRAConfig) -> None:
    for block in blocks(vit):
        qkv = site_linear(block, "qkv")
        set_site(block, "qkv", LoRAQKV(get_site(block, "qkv"), qkv.in_features, qkv.out_features, cfg.rank,
                                       cfg.dropout))
