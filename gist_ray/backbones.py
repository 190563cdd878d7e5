"""Backbones: timm ViT-S/B/L (ImageNet-21k), Swin-B (ImageNet-22k; paper Table 10), and tiny CPU ViTs and Swins
(tests, the quickstart, scaling ladders).

Weights come from the hub (``weights: hub``), from a local file (``.safetensors``, ``.pth``/``.pt``/``.bin``
loaded with ``weights_only=True``, or an official JAX ``.npz``), or, for the ``vit_synth_*`` ladder, from a
built-in pretraining on a synthetic source task (``weights: auto``; built once and cached).
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

# timm is imported inside the functions that need it: importing it costs ~2 s, and a driver that only checks a
# gist-ray backbone name (or the config of a sweep) never needs it.

# Short names researchers type -> timm's ImageNet-21k variants used by the paper.
ALIASES: dict[str, str] = {
    "vit_s": "vit_small_patch16_224.augreg_in21k",
    "vit_b": "vit_base_patch16_224.augreg_in21k",
    "vit_l": "vit_large_patch16_224.augreg_in21k",
    "swin_b": "swin_base_patch4_window7_224.ms_in22k",
}


@dataclass(frozen=True)
class TinyViT:
    """A small ViT spec buildable on a CPU in milliseconds."""

    embed_dim: int
    depth: int
    num_heads: int
    img_size: int = 32
    patch_size: int = 8
    mlp_ratio: float = 4.0
    pretrain: bool = True  # weights: auto -> synthetic source-task pretraining

    family = "vit"

    def build(self, num_classes: int, drop_path: float = 0.0) -> nn.Module:
        from timm.models.vision_transformer import VisionTransformer

        return VisionTransformer(num_classes=num_classes, drop_path_rate=drop_path, **self.kwargs())

    def kwargs(self) -> dict:
        return dict(
            img_size=self.img_size,
            patch_size=self.patch_size,
            embed_dim=self.embed_dim,
            depth=self.depth,
            num_heads=self.num_heads,
            mlp_ratio=self.mlp_ratio,
            global_pool="token",
            class_token=True,
        )


@dataclass(frozen=True)
class TinySwin:
    """A small Swin Transformer: 32 px, 4 px patches, two stages (8x8 tokens in 4x4 windows, shifted every
    other block, then 4x4 tokens in one window, where the Gist token goes)."""

    embed_dim: int = 16
    depths: tuple[int, ...] = (2, 2)
    num_heads: tuple[int, ...] = (1, 2)
    img_size: int = 32
    patch_size: int = 4
    window_size: int = 4
    mlp_ratio: float = 2.0
    pretrain: bool = False
    family = "swin"

    def build(self, num_classes: int, drop_path: float = 0.0) -> nn.Module:
        from timm.models.swin_transformer import SwinTransformer

        return SwinTransformer(
            img_size=self.img_size,
            patch_size=self.patch_size,
            embed_dim=self.embed_dim,
            depths=self.depths,
            num_heads=self.num_heads,
            window_size=self.window_size,
            mlp_ratio=self.mlp_ratio,
            num_classes=num_classes,
            drop_path_rate=drop_path,
        )


TINY: dict[str, TinyViT | TinySwin] = {
    # unit-test backbone: random weights, milliseconds per step
    "vit_test_tiny": TinyViT(embed_dim=32, depth=2, num_heads=2, mlp_ratio=2.0, pretrain=False),
    # scaling ladder on the synthetic suite (growing width and depth), pretrained on the source task;
    # 32 px images, 8 px patches: 17 tokens, so CPU steps stay cheap
    "vit_synth_xs": TinyViT(embed_dim=32, depth=3, num_heads=2),
    "vit_synth_s": TinyViT(embed_dim=64, depth=4, num_heads=4),
    "vit_synth_m": TinyViT(embed_dim=96, depth=6, num_heads=4),
    # unit-test Swin: random weights
    "swin_test_tiny": TinySwin(),
}

SYNTH_MEAN_STD = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def resolve_name(name: str) -> str:
    return ALIASES.get(name, name)


def is_known_backbone(name: str) -> bool:
    name = resolve_name(name)
    if name in TINY:
        return True
    import timm

    return timm.is_model(name.split(".")[0])


def backbone_family(name: str) -> str | None:
    """``vit`` or ``swin`` for a gist-ray or timm backbone name (no model is built); None for other models."""
    name = resolve_name(name)
    if name in TINY:
        return TINY[name].family
    import timm.models

    arch = name.split(".")[0]
    if not timm.is_model(arch):
        return None
    for fam, module in (("vit", "vision_transformer"), ("swin", "swin_transformer")):
        if timm.models.is_model_in_modules(arch, [module]):
            return fam
    return None


def freeze(module: nn.Module) -> None:
    for p in module.parameters():
        p.requires_grad_(False)


def load_weights_file(model: nn.Module, path: str | Path) -> None:
    """Load a local weights file into ``model`` (head keys of another shape are skipped)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    if path.suffix == ".npz":
        from timm.models.vision_transformer import _load_weights

        _load_weights(model, str(path))
        return
    if path.suffix == ".safetensors":
        state = load_file(str(path))
    else:
        # weights_only refuses pickles that would run code on load
        state = torch.load(path, map_location="cpu", weights_only=True)
        for key in ("state_dict", "model"):
            if isinstance(state, dict) and isinstance(state.get(key), dict):
                state = state[key]
    # the timm module's own filter maps official / older checkpoints onto the current layout
    filter_fn = getattr(importlib.import_module(type(model).__module__), "checkpoint_filter_fn", None)
    if filter_fn is not None:
        state = filter_fn(state, model)
    own = model.state_dict()
    state = {k: v for k, v in state.items() if not (k.startswith("head.") and k in own and own[k].shape != v.shape)}
    wrong = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    if wrong:
        raise ValueError(f"{path}: weights do not fit the backbone; shape mismatch for {wrong[:5]}")
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("head.")]
    if missing or unexpected:
        raise ValueError(f"{path}: weights do not fit the backbone; missing {missing[:5]}, unexpected {unexpected[:5]}")


def create_backbone(name: str, num_classes: int, weights: str = "none", drop_path: float = 0.0) -> nn.Module:
    """A timm VisionTransformer or SwinTransformer with a fresh ``num_classes`` head, all parameters frozen but
    the head. ``weights``: ``none``, ``hub``/``auto`` (timm names), or a local file; a ``vit_synth_*``'s ``auto``
    is resolved to its pretrained file first (:func:`gist_ray.pretrain.resolve_weights`)."""
    import timm

    name = resolve_name(name)
    if name in TINY:
        spec = TINY[name]
        model = spec.build(num_classes, drop_path)
        model.pretrained_cfg = {"mean": SYNTH_MEAN_STD[0], "std": SYNTH_MEAN_STD[1], "input_size": (3, spec.img_size, spec.img_size)}
        if weights == "auto" and spec.pretrain:
            raise ValueError(f"model.weights: auto for {name} means its synthetic-pretrained file; resolve it with "
                             "gist_ray.pretrain.resolve_weights first")
        if weights == "hub":
            raise ValueError(f"model.weights: {name} has no hub weights; use auto, none or a file path")
        elif weights not in ("auto", "none"):
            load_weights_file(model, weights)
    else:
        pretrained = weights in ("auto", "hub")
        model = timm.create_model(name, pretrained=pretrained, num_classes=num_classes, drop_path_rate=drop_path)
        if weights not in ("auto", "hub", "none"):
            load_weights_file(model, weights)
    freeze(model)
    for p in model.get_classifier().parameters():
        p.requires_grad_(True)
    return model


def input_spec(model: nn.Module) -> tuple[int, tuple[float, ...], tuple[float, ...]]:
    """(image size, mean, std) the backbone expects, from its pretrained config."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    size = int(cfg.get("input_size", (3, 224, 224))[-1])
    return size, tuple(cfg.get("mean", (0.5, 0.5, 0.5))), tuple(cfg.get("std", (0.5, 0.5, 0.5)))


def vit_of(model: nn.Module) -> nn.Module:
    """The timm backbone (VisionTransformer or SwinTransformer) inside ``model`` (unwrapping DDP, torch.compile
    and the GIST wrapper)."""
    while not hasattr(model, "patch_embed"):
        for attr in ("module", "_orig_mod", "backbone"):
            if isinstance(getattr(model, attr, None), nn.Module):
                model = getattr(model, attr)
                break
        else:
            raise TypeError(f"no timm backbone inside {type(model).__name__}")
    return model


@functools.lru_cache(maxsize=None)
def backbone_params(name: str) -> int:
    """Exact parameter count of backbone ``name`` without its classification head (built on the meta device)."""
    with torch.device("meta"):
        model = create_backbone(name, 0, weights="none")
    return int(sum(p.numel() for p in model.parameters()))
