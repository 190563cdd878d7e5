"""The adapter of the official GIST code (Ruan et al., "GIST", arXiv 2312.07255).

Reference: JCruan519/GIST, ``models/vision_transformer.py`` (``gist_Adapter`` and ``Block.forward`` with
``tuning_mode='gist_adapter'``). One bottleneck adapter per block (down-projection ``d -> 4``, GELU, up-projection,
times 0.1) added in parallel to *both* residual branches and shared by them; each call reads the un-normalised
stream at that point (the block input, then the stream after the attention branch), outside drop-path::

    x = x + attn(norm1(x)) + s * A(x)
    x = x + mlp(norm2(x))  + s * A(x)

Init: the official adapters are built inside ``VisionTransformer.__init__``, before timm's ``init_weights``, so
both projections get timm's ViT init, weights trunc_normal(std 0.02) and zero biases (the pretrained checkpoint
has no adapter keys, so loading it leaves them so). No dropout. Trains: the adapters (and the Gist token and head,
which GIST adds).
"""

from dataclasses import dataclass

import torch
from torch import nn

from gist_ray.methods._bottleneck import Bottleneck, trunc_normal_, zeros_
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

TIMM_VIT_STD = 0.02  # timm's init_weights_vit_timm: trunc_normal_(std=.02), zero bias


@dataclass
class GistAdapterConfig:
    bottleneck: int = setting(4, ge=1)
    scale: float = 0.1
    zero_init_up: bool = False  # not in the official code (which inits both projections trunc_normal(0.02)):
    # True starts training exactly at the pretrained function


class SharedParallelAdapterBlock(AdapterBlock):
    """A timm Block with one adapter added in parallel to both branches."""

    def forward(self, x: torch.Tensor, **kw) -> torch.Tensor:
        b = self.inner
        x = x + residual1(b, attn_out(b, b.norm1(x))) + self.adapter(x)
        return x + residual2(b, b.mlp(b.norm2(x))) + self.adapter(x)


def make_adapter(dim: int, cfg: GistAdapterConfig) -> Bottleneck:
    """One official GIST adapter with timm's ViT init."""
    adapter = Bottleneck(dim, cfg.bottleneck, cfg.scale, act=nn.GELU)
    trunc_normal_(adapter.down, TIMM_VIT_STD)
    if cfg.zero_init_up:
        zeros_(adapter.up)
    else:
        trunc_normal_(adapter.up, TIMM_VIT_STD)
    return adapter


def _count(vit, cfg: GistAdapterConfig) -> int:
    return per_block(vit, lambda d: 2 * d * cfg.bottleneck + cfg.bottleneck + d)


@register_method("gist_adapter", GistAdapterConfig, count=_count, paper="GIST official adapter, arXiv 2312.07255",
                 families=("vit", "swin"))
def apply(vit, cfg: GistAdapterConfig) -> None:
    wrap_blocks(vit, lambda i, b: SharedParallelAdapterBlock(b, make_adapter(block_dim(b), cfg)))
