"""Intermediate features for objectives that declare them: forward hooks on named blocks and on the head.

Blocks are counted over every transformer block in forward order (:func:`gist_ray.blocks.blocks`: a ViT's
``blocks``, a Swin's ``layers[i].blocks`` one stage after the other); config knobs name them 1-based ("block 6
of 12"). A block's output is read out the way the backbone's head reads its last one: a ViT's [CLS] token (the
mean of the non-prefix tokens on a ViT without one), a Swin's average over its (H, W) grid. Hooks record only
in training mode, so evaluation pays nothing and keeps no tensors.
"""

from __future__ import annotations

import functools
from typing import Optional, Sequence

import torch
from torch import Tensor, nn

from gist_ray.backbones import create_backbone
from gist_ray.blocks import block_dim, blocks, family
from gist_ray.errors import ConfigError


def pooled(net: nn.Module, x: Tensor) -> Tensor:
    """(B, width) readout of a block output: Swin grid mean, ViT [CLS] (or mean of the non-prefix tokens)."""
    if x.dim() == 4:
        return x.mean((1, 2))
    if getattr(net, "cls_token", None) is not None:
        return x[:, 0]
    return x[:, int(getattr(net, "num_prefix_tokens", 0)):].mean(1)


def head_linear(net: nn.Module) -> nn.Module:
    """The classifier's final linear layer (a ViT's ``head``, a Swin's ``head.fc``)."""
    return getattr(net.head, "fc", net.head)


def head_width(net: nn.Module) -> int:
    return int(head_linear(net).in_features)


class Taps:
    """Forward hooks that keep, during training forwards, the pooled outputs of ``indices`` (0-based) and, with
    ``head_input``, the input of the head's linear layer. :meth:`take` hands them over and forgets them."""

    def __init__(self, net: nn.Module, indices: Sequence[int], head_input: bool) -> None:
        self.indices = tuple(indices)
        self._blocks: dict[int, Tensor] = {}
        self._head: Optional[Tensor] = None
        all_blocks = blocks(net)
        self.handles = []
        for i in self.indices:
            self.handles.append(all_blocks[i].register_forward_hook(self._block_hook(net, i)))
        if head_input:
            self.handles.append(head_linear(net).register_forward_pre_hook(self._head_hook))

    def _block_hook(self, net: nn.Module, i: int):
        def hook(module: nn.Module, args: tuple, out: Tensor) -> None:
            if module.training:
                self._blocks[i] = pooled(net, out)

        return hook

    def _head_hook(self, module: nn.Module, args: tuple) -> None:
        if module.training:
            self._head = args[0]

    def take(self) -> tuple[list[Tensor], Optional[Tensor]]:
        missing = [i for i in self.indices if i not in self._blocks]
        if missing:
            raise RuntimeError(f"no output recorded for blocks {missing}: was the forward run in training mode?")
        out = [self._blocks[i] for i in self.indices], self._head
        self._blocks, self._head = {}, None
        return out

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


# ----------------------------------------------------------------------------- which blocks


def depth(net: nn.Module) -> int:
    return len(blocks(net))


def stage_ends(net: nn.Module) -> list[int]:
    """1-based number of the last block of each stage (a ViT is one stage)."""
    if family(net) == "vit":
        return [depth(net)]
    ends, n = [], 0
    for stage in net.layers:
        n += len(stage.blocks)
        ends.append(n)
    return ends


def quarter_blocks(net: nn.Module) -> list[int]:
    """1-based blocks after which BYOT attaches its shallow classifiers by default: the ends of every stage but
    the last on a Swin (BYOT's ResNet stages 1-3), the quarter points on a ViT (blocks 3, 6, 9 of 12)."""
    if family(net) == "swin":
        return stage_ends(net)[:-1]
    d = depth(net)
    return sorted({max(1, d * k // 4) for k in (1, 2, 3)} - {d})


def middle_block(net: nn.Module) -> int:
    """1-based block whose output USKD's weak classifier reads by default (cls_KD): a ViT's block
    ``int(0.5 * depth)`` ([CLS] of block 6 of 12), a Swin's penultimate stage end."""
    if family(net) == "swin":
        ends = stage_ends(net)
        return ends[-2] if len(ends) > 1 else 0
    return int(0.5 * depth(net))


def widths(net: nn.Module, numbers: Sequence[int]) -> list[int]:
    every = blocks(net)
    return [block_dim(every[b - 1]) for b in numbers]


@functools.lru_cache(maxsize=None)
def backbone_depth(backbone: str) -> int:
    """How many blocks ``backbone`` has (built on the meta device: shapes only, no weights, no memory)."""
    with torch.device("meta"):
        return depth(create_backbone(backbone, 2, weights="none"))


def check_blocks(numbers: Sequence[int], total: int, where: str, field: str) -> None:
    """ConfigError ``where.field`` unless every block number is in [1, total - 1] (the last block's output is the
    deepest classifier's own input) and they increase."""
    bad = [b for b in numbers if not 1 <= b < total]
    if bad:
        raise ConfigError(f"{where}.{field}: blocks are numbered 1..{total - 1} on this backbone ({total} blocks; "
                          f"the last one feeds the head), got {list(numbers)}")
    if list(numbers) != sorted(set(numbers)):
        raise ConfigError(f"{where}.{field}: must increase without repeats, got {list(numbers)}")
