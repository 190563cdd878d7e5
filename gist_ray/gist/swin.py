"""Where the Gist token goes in a Swin Transformer, and how both predictions are read out.

A Swin has no [CLS]: it predicts from the average of its last stage's tokens (the paper's footnote 1 calls that
pooled vector the [CLS] side). Its attention is windowed, so a token outside the grid has no window to sit in,
except in the last stage: there the grid is as small as one window (7x7 tokens, window 7, for Swin-B at 224 px)
and timm turns the shift off, so every block of that stage attends globally, as a ViT block does.

The Gist token therefore joins the last stage, right after its patch merging, with that stage's width (1024 on
Swin-B): the stage carries a (B, 1 + H*W, C) sequence, the token first. Its attention uses the window's
relative position bias between grid tokens and no bias to or from the token. It passes through the last stage's
blocks (2 of 24 on Swin-B) and the final norm, then through the same head as the pooled grid tokens; the
earlier stages run unchanged. A backbone whose last stage spans several windows is refused.
"""

from __future__ import annotations

import torch
from torch import nn

from gist_ray.blocks import SequenceBlock, inner_block


def check_single_window(swin: nn.Module) -> None:
    """ValueError unless every block of the last stage attends over one unshifted window covering its grid."""
    stage = swin.layers[-1]
    for j, block in enumerate(stage.blocks):
        b = inner_block(block)
        if tuple(b.window_size) != tuple(b.input_resolution) or any(b.shift_size):
            raise ValueError(
                f"gist on a Swin needs its last stage to be one attention window: layers[-1].blocks[{j}] has a "
                f"{tuple(b.input_resolution)} grid in {tuple(b.window_size)} windows (shift {tuple(b.shift_size)}); "
                f"use the image size the backbone was made for, or gist.enabled=false"
            )


def prepare(swin: nn.Module) -> nn.Module:
    """Let the last stage's blocks run on token sequences; returns the module after whose output the token is
    inserted (the last stage's patch merging), with the grid flattened to a sequence first."""
    check_head(swin)
    check_single_window(swin)
    stage = swin.layers[-1]
    for j, block in enumerate(stage.blocks):
        if not hasattr(block, "inner"):  # a plain timm block (method wrappers already handle sequences)
            stage.blocks[j] = SequenceBlock(block)
    return stage.downsample


def to_sequence(grid: torch.Tensor) -> torch.Tensor:
    """(B, H, W, C) -> (B, H*W, C), row-major like the window's own token order."""
    return grid.flatten(1, 2)


def head_logits(swin: nn.Module, features: torch.Tensor) -> torch.Tensor:
    """The Swin head (dropout, classifier) on pooled (B, C) features."""
    head = swin.head
    return head.flatten(head.fc(head.drop(features)))


def logits(swin: nn.Module, tokens: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(pooled-grid logits, Gist logits) from the final (B, length + H*W, C) sequence."""
    return head_logits(swin, tokens[:, length:].mean(1)), head_logits(swin, tokens[:, :length].mean(1))


def check_head(swin: nn.Module) -> None:
    pool = getattr(swin.head.global_pool, "pool_type", "avg")
    if pool != "avg":
        raise ValueError(f"gist on a Swin supports its average-pooled head only, not global_pool={pool!r}")
