"""The method registry and the small helpers methods share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

from torch import nn

from gist_ray.blocks import (
    FAMILIES,
    attn_out,
    block_dim,
    blocks,
    family,
    inner_block,
    residual1,
    residual2,
    unwrap,
    wrap_blocks,
)
from gist_ray.errors import ConfigError
from gist_ray.registry import Registry

# re-exported for the method files
__all__ = ["attn_out", "block_dim", "blocks", "family", "inner_block", "residual1", "residual2", "unwrap", "wrap_blocks"]


@dataclass(frozen=True)
class MethodSpec:
    """A registered PEFT method.

    ``apply(vit, cfg)`` edits the backbone in place. The number of parameters a method trains is always counted
    from the built model (on the meta device: :func:`gist_ray.model.trainable_counts`); ``count(vit, cfg)``, where
    given, is an optional closed form from the backbone's shapes (head and token excluded) that the tests and
    ``gist-ray methods`` hold against the built model, as a check of the method's construction; ``merge(vit)``,
    where offered, folds the method into the backbone's weights for inference. ``families`` are the backbone
    families (:data:`gist_ray.blocks.FAMILIES`) it is defined on.
    """

    name: str
    config_cls: type
    apply: Callable[[nn.Module, Any], None]
    count: Optional[Callable[[nn.Module, Any], int]] = None
    merge: Optional[Callable[[nn.Module], None]] = None
    paper: str = ""
    families: tuple[str, ...] = ("vit",)


METHODS: Registry[MethodSpec] = Registry("PEFT method")


def register_method(
    name: str,
    config_cls: type,
    count: Optional[Callable[[nn.Module, Any], int]] = None,
    merge: Optional[Callable[[nn.Module], None]] = None,
    paper: str = "",
    families: tuple[str, ...] = ("vit",),
) -> Callable:
    """Decorator for an ``apply(vit, cfg)`` function."""
    assert set(families) <= set(FAMILIES), families

    def deco(apply: Callable[[nn.Module, Any], None]) -> Callable[[nn.Module, Any], None]:
        METHODS.add(name, MethodSpec(name, config_cls, apply, count, merge, paper, tuple(families)))
        return apply

    return deco


def dims(vit: nn.Module) -> tuple[int, int]:
    """(embed_dim, depth) of a timm VisionTransformer (methods defined on one width only)."""
    return int(vit.embed_dim), len(vit.blocks)


def per_block(vit: nn.Module, count: Callable[[int], int]) -> int:
    """``sum(count(width of block i))`` over all blocks (one width on a ViT, one per stage on a Swin)."""
    return sum(count(block_dim(b)) for b in blocks(vit))


# ----------------------------------------------------------------------------- linear sites and wrappers

# The four linear layers of a timm Block, by short name -> (child of the block, attribute).
SITES: dict[str, tuple[str, str]] = {
    "qkv": ("attn", "qkv"),
    "proj": ("attn", "proj"),
    "fc1": ("mlp", "fc1"),
    "fc2": ("mlp", "fc2"),
}


def check_sites(sites: list[str], where: str, field: str = "targets") -> None:
    """Raise a ConfigError naming ``where.field`` unless ``sites`` is a non-empty list of :data:`SITES` names."""
    bad = [s for s in sites if s not in SITES]
    if not sites or bad:
        raise ConfigError(f"{where}.{field}: expected a non-empty list of {list(SITES)}, got {sites!r}")


def get_site(block: nn.Module, site: str) -> nn.Module:
    """The module (possibly wrapped) at linear site ``site`` of a block."""
    parent, attr = SITES[site]
    return getattr(getattr(inner_block(block), parent), attr)


def set_site(block: nn.Module, site: str, module: nn.Module) -> None:
    parent, attr = SITES[site]
    setattr(getattr(inner_block(block), parent), attr, module)


def site_linear(block: nn.Module, site: str) -> nn.Linear:
    """The original nn.Linear at ``site`` (under any wrappers)."""
    return unwrap(get_site(block, site))


def mlp_hidden(vit: nn.Module) -> int:
    return int(site_linear(blocks(vit)[0], "fc1").out_features)


def plain_linear(module: nn.Module) -> nn.Linear:
    """``module`` itself if it is a plain nn.Linear (what a merge folds into), else a clear error."""
    if type(module) is not nn.Linear:
        raise TypeError(f"cannot merge into a {type(module).__name__}: merge the method applied inside it first")
    return module


class AdapterBlock(nn.Module):
    """A timm Block (``inner``) plus one ``adapter`` module; a subclass's ``forward`` says where the adapter joins
    the block (in parallel to a branch, after a branch, ...)."""

    def __init__(self, inner: nn.Module, adapter: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.adapter = adapter


class SharedRef:
    """A reference to a module registered once elsewhere (not a child here, so its parameters count once)."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module


def attach_shared(vit: nn.Module, name: str, module: nn.Module) -> str:
    """Register ``module`` on ``vit`` under ``name`` (or ``name_1``, ... if taken); returns the name used."""
    used, i = name, 0
    while hasattr(vit, used):
        i += 1
        used = f"{name}_{i}"
    vit.add_module(used, module)
    return used


def merge_wrappers(vit: nn.Module, cls: type | tuple[type, ...]) -> int:
    """Replace every ``cls`` module in ``vit`` by its ``merged()`` module, innermost first; returns how many."""
    found = [(n, m) for n, m in vit.named_modules() if isinstance(m, cls)]
    for name, module in reversed(found):  # named_modules is pre-order: reversed visits children first
        parent_name, _, attr = name.rpartition(".")
        setattr(vit.get_submodule(parent_name) if parent_name else vit, attr, module.merged())
    return len(found)


def _block_ops(block: nn.Module) -> list[tuple[nn.Module, str]]:
    b = inner_block(block)
    return [(b, "norm1"), (b.attn, "qkv"), (b.attn, "proj"), (b, "norm2"), (b.mlp, "fc1"), (b.mlp, "fc2")]


def backbone_ops(vit: nn.Module) -> list[tuple[nn.Module, str]]:
    """(parent, attribute) of every weighted op, in forward order: the patch projection (and its norm), each
    block's norm1, qkv, proj, norm2, fc1, fc2, on a Swin each stage's patch-merging norm and reduction, and the
    final norms; ops that are absent or nn.Identity are skipped. Wrapped ops are included."""
    ops: list[tuple[nn.Module, str]] = [(vit.patch_embed, "proj"), (vit.patch_embed, "norm")]
    if family(vit) == "vit":
        ops += [op for block in vit.blocks for op in _block_ops(block)]
    else:
        for stage in vit.layers:
            ops += [(stage.downsample, "norm"), (stage.downsample, "reduction")]
            ops += [op for block in stage.blocks for op in _block_ops(block)]
    ops += [(vit, "norm"), (vit, "fc_norm")]
    return [(p, a) for p, a in ops if isinstance(getattr(p, a, None), nn.Module)
            and not isinstance(unwrap(getattr(p, a)), nn.Identity)]
