"""NOAH's VTAB-1k "Adapter" baseline (Zhang, Zhou & Liu, "Neural Prompt Search", arXiv 2206.04673), the
Adapter row that NOAH, FacT, RepAdapter and GIST's Table 2 quote. Not Houlsby's design (see :mod:`adapter_houlsby`).

Reference: ZhangYuanhan-AI/NOAH, ``model/supernet_vision_transformer_timm.py`` (``Block.forward``,
``VisionTransformer.init_weights``), ``model/module/adapter_super.py`` (``AdapterSuper``),
``experiments/Adapter/ViT-B_prompt_adapter_8.yaml`` (bottleneck 8 in every block) and ``supernet_train_prompt.py``
(``--drop_rate_adapter 0.1``). One adapter per block, on the MLP branch's output after drop-path, with its own skip::

    x = x + attn(norm1(x))
    x = x + A(drop_path(mlp(norm2(x))))      A(h) = h + up(dropout(quick_gelu(down(h))))

Init: ``AdapterSuper`` sets xavier weights, but the model's ``init_weights`` runs afterwards over every
``nn.Linear`` (timm's ``_init_vit_weights``): weights trunc_normal(std 0.02), zero biases, which is what trains.
Activation QuickGELU, dropout 0.1 after it. Trains: the adapters.
"""

from dataclasses import dataclass

import torch

from gist_ray.methods._bottleneck import Bottleneck, QuickGELU, trunc_normal_
from gist_ray.methods.adapter_houlsby import Residual
from gist_ray.methods.base import (
    AdapterBlock,
    attn_out,
    block_dim,
    per_block,
    register_method,
    residual1,
    residual2,
    wrap_blocks,
)
from gist_ray.typed_config import setting

TIMM_VIT_STD = 0.02


@dataclass
class NoahAdapterConfig:
    bottleneck: int = setting(8, ge=1)
    dropout: float = setting(0.1, ge=0.0, lt=1.0)


class PostMlpAdapterBlock(AdapterBlock):
    """A timm Block whose MLP branch (after layer scale and drop-path) passes through ``adapter``."""

    def forward(self, x: torch.Tensor, **kw) -> torch.Tensor:
        b = self.inner
        x = x + residual1(b, attn_out(b, b.norm1(x)))
        return x + self.adapter(residual2(b, b.mlp(b.norm2(x))))


def noah_adapter(dim: int, cfg: NoahAdapterConfig) -> Residual:
    adapter = Bottleneck(dim, cfg.bottleneck, act=QuickGELU, dropout=cfg.dropout)
    trunc_normal_(adapter.down, TIMM_VIT_STD)
    trunc_normal_(adapter.up, TIMM_VIT_STD)
    return Residual(adapter)


def _count(vit, cfg: NoahAdapterConfig) -> int:
    return per_block(vit, lambda d: 2 * d * cfg.bottleneck + cfg.bottleneck + d)


@register_method("adapter_noah", NoahAdapterConfig, count=_count, paper="NOAH's Adapter baseline, arXiv 2206.04673",
                 families=("vit", "swin"))
def apply(vit, cfg: NoahAdapterConfig) -> None:
    wrap_blocks(vit, lambda i, b: PostMlpAdapterBlock(b, noah_adapter(block_dim(b), cfg)))
