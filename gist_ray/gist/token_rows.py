"""Skip the input gradient that only the Gist token needs, in the first block's ``qkv``.

With a method whose first block reads a constant input (LoRA, adapters, ...: the patch embedding is frozen), the
only rows of that input that carry gradient are the Gist token's. Autograd still computes the ``qkv`` input
gradient for every row, one (B, N, 3D) x (3D, D) matmul per step (about 1.5 % of a ViT-S step on a CPU). Here the
``qkv`` site runs on the detached input for all rows and again on the token rows with their gradient, which are
written over the detached result: same outputs, same parameter gradients, and an input gradient for the token
rows only.

It applies only when that is exact, checked on every forward by identity: the sequence entering block 0 is the
one the Gist hook produced from a constant input, and the ``qkv`` input is that sequence passed through block 0's
frozen ``norm1`` (a per-token op). Anything else (VPT prompts, SSF on the patch embedding or on ``norm1``, full
fine-tuning, torch.compile) runs the site unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

from gist_ray.blocks import inner_block, unwrap


class RowState:
    """What the hooks saw in the current forward (a plain object shared by the hooks and the site)."""

    def __init__(self, at: int, length: int) -> None:
        self.at, self.length = at, length
        self.block_in: torch.Tensor | None = None  # the sequence the Gist hook returned, if its rest is constant
        self.normed: torch.Tensor | None = None  # block 0's norm1 output, if computed from ``block_in``
        self.splits = 0  # forwards that took the token-rows path (for tests and benchmarks)


class TokenRowSite(nn.Module):
    """Block 0's ``qkv`` site (``inner``: the linear or a method's wrapper of it, applied per token)."""

    def __init__(self, inner: nn.Module, state: RowState) -> None:
        super().__init__()
        self.inner = inner
        self.state = state

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.state
        split = x is s.normed and s.normed is not None
        s.block_in = s.normed = None
        if not split:
            return self.inner(x)
        s.splits += 1
        rows = slice(s.at, s.at + s.length)
        y = self.inner(x.detach())
        y[:, rows] = self.inner(x[:, rows])
        return y


def install(vit: nn.Module, at: int, length: int) -> RowState | None:
    """Wrap block 0's ``qkv`` site and watch its ``norm1``; returns the state the Gist hook must fill."""
    block = inner_block(vit.blocks[0])
    norm1 = block.norm1
    if any(p.requires_grad for p in norm1.parameters()) or not isinstance(unwrap(norm1), nn.LayerNorm):
        return None
    state = RowState(at, length)

    def record(module: nn.Module, args: tuple, out: torch.Tensor) -> None:
        state.normed = out if state.block_in is not None and args[0] is state.block_in else None

    norm1.register_forward_hook(record)
    block.attn.qkv = TokenRowSite(block.attn.qkv, state)
    return state


def offer(state: RowState | None, rest: torch.Tensor, seq: torch.Tensor) -> None:
    """Called by the Gist hook: ``seq`` is ``rest`` with the token inserted."""
    if state is None:
        return
    exact = torch.is_grad_enabled() and not rest.requires_grad and not torch.compiler.is_compiling()
    state.block_in, state.normed = (seq if exact else None), None
