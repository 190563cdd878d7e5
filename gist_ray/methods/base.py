"""The method registry and the small helpers methods share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

from torch import nn

from gist_ray.registry import Registry


@dataclass(frozen=True)
class MethodSpec:
    """A registered PEFT method.

    ``apply(vit, cfg)`` edits the backbone in place; ``count(vit, cfg)`` is the closed-form number of trainable
    parameters the method adds (head and token excluded), computed from the backbone's shapes; ``merge(vit)``,
    where offered, folds the method into the backbone's weights for inference.
    """

    name: str
    config_cls: type
    apply: Callable[[nn.Module, Any], None]
    count: Callable[[nn.Module, Any], int]
    merge: Optional[Callable[[nn.Module], None]] = None
    paper: str = ""


METHODS: Registry[MethodSpec] = Registry("PEFT method")


def register_method(
    name: str,
    config_cls: type,
    count: Callable[[nn.Module, Any], int],
    merge: Optional[Callable[[nn.Module], None]] = None,
    paper: str = "",
) -> Callable:
    """Decorator for an ``apply(vit, cfg)`` function."""

    def deco(apply: Callable[[nn.Module, Any], None]) -> Callable[[nn.Module, Any], None]:
        METHODS.add(name, MethodSpec(name, config_cls, apply, count, merge, paper))
        return apply

    return deco


def dims(vit: nn.Module) -> tuple[int, int]:
    """(embed_dim, depth) of a timm VisionTransformer."""
    return int(vit.embed_dim), len(vit.blocks)


def wrap_blocks(vit: nn.Module, make: Callable[[int, nn.Module], nn.Module]) -> None:
    """Replace each ``vit.blocks[i]`` by ``make(i, block)``."""
    for i, block in enumerate(list(vit.blocks)):
        vit.blocks[i] = make(i, block)


def inner_block(block: nn.Module) -> nn.Module:
    """The timm Block under any number of method wrappers."""
    while hasattr(block, "inner"):
        block = block.inner
    return block
