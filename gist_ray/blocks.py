"""One view of the transformer blocks of the two backbone families gist-ray runs: timm's VisionTransformer
(``vit``: one flat ``blocks`` list, one width) and Swin Transformer (``swin``: ``layers[i].blocks``, a width per
stage, windowed attention on a (B, H, W, C) grid).

Methods that wrap a block write its two residual branches with :func:`attn_out`, :func:`residual1` and
:func:`residual2`, so the same wrapper runs on both families, and on the token sequences that a Swin stage
carries once the Gist token has joined it (see :mod:`gist_ray.gist.swin`).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

FAMILIES = ("vit", "swin")


def family(net: nn.Module) -> str:
    """``vit`` or ``swin`` for a (method-carrying) timm backbone; a clear error otherwise."""
    if hasattr(net, "blocks") and hasattr(net, "num_prefix_tokens"):
        return "vit"
    if hasattr(net, "layers") and all(hasattr(stage, "blocks") for stage in net.layers):
        return "swin"
    raise TypeError(f"{type(net).__name__} is neither a timm VisionTransformer nor a SwinTransformer")


def inner_block(block: nn.Module) -> nn.Module:
    """The timm block under any number of wrappers (each keeps the wrapped module as ``.inner``)."""
    while hasattr(block, "inner"):
        block = block.inner
    return block


def unwrap(module: nn.Module) -> nn.Module:
    """The original module under method wrappers (``.inner``) and peft tuner layers (``.base_layer``)."""
    while True:
        if hasattr(module, "inner"):
            module = module.inner
        elif isinstance(getattr(module, "base_layer", None), nn.Module):
            module = module.base_layer
        else:
            return module


def block_slots(net: nn.Module) -> list[tuple[nn.Sequential, int]]:
    """(container, index) of every transformer block, in forward order."""
    containers = [net.blocks] if family(net) == "vit" else [stage.blocks for stage in net.layers]
    return [(c, i) for c in containers for i in range(len(c))]


def blocks(net: nn.Module) -> list[nn.Module]:
    """Every transformer block (the outermost wrapper where a method wrapped it), in forward order."""
    return [c[i] for c, i in block_slots(net)]


def wrap_blocks(net: nn.Module, make: Callable[[int, nn.Module], nn.Module]) -> None:
    """Replace block ``i`` (counted over all stages) by ``make(i, block)``."""
    for i, (container, j) in enumerate(block_slots(net)):
        container[j] = make(i, container[j])


def block_dim(block: nn.Module) -> int:
    """The token width a block reads and writes."""
    return int(unwrap(inner_block(block).norm1).normalized_shape[-1])


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def residual1(b: nn.Module, h: torch.Tensor) -> torch.Tensor:
    """Layer scale (ViT only) and drop-path of the attention branch."""
    return b.drop_path1(getattr(b, "ls1", _identity)(h))


def residual2(b: nn.Module, h: torch.Tensor) -> torch.Tensor:
    """Layer scale (ViT only) and drop-path of the MLP branch."""
    return b.drop_path2(getattr(b, "ls2", _identity)(h))


def attn_out(b: nn.Module, h: torch.Tensor) -> torch.Tensor:
    """The attention of block ``b`` on normalised input ``h``: a ViT's attention; a Swin block's (shifted)
    window attention on a (B, H, W, C) grid; or, on a (B, N, C) sequence, one global window over its tokens
    (only for blocks whose window covers the whole grid: :func:`global_window_attention`)."""
    if not hasattr(b, "_attn"):
        return b.attn(h)
    if h.dim() == 4:
        return b._attn(h)
    return global_window_attention(b, h)


def global_window_attention(b: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Swin window attention over a (B, P + H*W, C) sequence: P extra tokens first, then the block's single
    window in row-major order. The window's relative position bias applies between grid tokens; the extra
    tokens get none (a zero bias), as they have no position. With P = 0 this equals the block's own attention."""
    attn = b.attn
    n = x.shape[1]
    prefix = n - b.window_area
    if prefix < 0 or any(b.shift_size):
        raise ValueError(f"global window attention needs an unshifted window covering the grid; got {n} tokens, "
                         f"window area {b.window_area}, shift {b.shift_size}")
    qkv = attn.qkv(x).reshape(x.shape[0], n, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    bias = F.pad(attn._get_rel_pos_bias(), (prefix, 0, prefix, 0)).to(q.dtype)
    p = attn.attn_drop.p if attn.training else 0.0
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=p, scale=attn.scale)
    return attn.proj_drop(attn.proj(out.transpose(1, 2).reshape(x.shape[0], n, -1)))


class SequenceBlock(nn.Module):
    """A plain Swin block run on a (B, N, C) token sequence through the helpers above (what a method's block
    wrapper does anyway); on a (B, H, W, C) grid it is the block itself."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.inner
        if x.dim() == 4:
            return b(x)
        x = x + residual1(b, attn_out(b, b.norm1(x)))
        return x + residual2(b, b.mlp(b.norm2(x)))
