"""AdaptFormer (Chen et al., "AdaptFormer: Adapting Vision Transformers for Scalable Visual Recognition",
NeurIPS 2022, arXiv 2205.13535).

Reference: ShoufaChen/AdaptFormer, ``models/adapter.py`` (``Adapter``), ``models/custom_modules.py``
(``Block.forward``) and ``main_image.py`` (``ffn_option="parallel"``, ``ffn_adapter_layernorm_option="none"``,
``ffn_adapter_init_option="lora"``, ``ffn_adapter_scalar="0.1"``, ``ffn_num`` 64, dropout 0.1). A ReLU bottleneck
in parallel to the MLP branch, reading the un-normalised stream after the attention branch (no LayerNorm of its
own, not ``norm2``'s output), times a fixed scale, added outside drop-path::

    x = x + attn(norm1(x))
    x = x + mlp(norm2(x)) + s * up(dropout(relu(down(x))))

Init ("lora"): down-projection weight kaiming_uniform(a=sqrt(5)) (nn.Linear's own), zero down bias, zero
up-projection weight and bias. Dropout 0.1 after the ReLU. Trains: the adapters.
"""

from dataclasses import dataclass

import torch
from torch import nn

from gist_ray.methods._bottleneck import Bottleneck, kaiming_, zeros_
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


@dataclass
class AdaptFormerConfig:
    bottleneck: int = setting(64, ge=1)
    scale: float = 0.1
    dropout: float = setting(0.1, ge=0.0, lt=1.0)


class ParallelMlpAdapterBlock(AdapterBlock):
    """A timm Block with ``adapter(x)`` added next to the MLP branch, ``x`` the stream after the attention branch."""

    def forward(self, x: torch.Tensor, **kw) -> torch.Tensor:
        b = self.inner
        x = x + residual1(b, attn_out(b, b.norm1(x)))
        return x + residual2(b, b.mlp(b.norm2(x))) + self.adapter(x)


def adaptformer_adapter(dim: int, cfg: AdaptFormerConfig) -> Bottleneck:
    adapter = Bottleneck(dim, cfg.bottleneck, cfg.scale, act=nn.ReLU, dropout=cfg.dropout)
    kaiming_(adapter.down)
    zeros_(adapter.up)
    return adapter


def _count(vit, cfg: AdaptFormerConfig) -> int:
    return per_block(vit, lambda d: 2 * d * cfg.bottleneck + cfg.bottleneck + d)


@register_method("adaptformer", AdaptFormerConfig, count=_count, paper="AdaptFormer, NeurIPS 2022, arXiv 2205.13535",
                 families=("vit", "swin"))
def apply(vit, cfg: AdaptFormerConfig) -> None:
    wrap_blocks(vit, lambda i, b: ParallelMlpAdapterBlock(b, adaptformer_adapter(block_dim(b), cfg)))
