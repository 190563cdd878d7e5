"""Assemble text encoder + text PEFT method + head + Gist token; count what trains."""

from __future__ import annotations

from typing import Any

from torch import nn

from gist_ray.text.backbones import load_text_backbone
from gist_ray.text.gist import TextGistModel
from gist_ray.text.methods import apply_text_method

TOKEN_PREFIX = "gist."
HEAD_PREFIX = "head."


def build_text_model(backbone: str, num_classes: int, method: str = "linear", method_options: dict | None = None,
                     *, weights: str = "auto", gist_enabled: bool = True, gist_length: int = 1,
                     gist_init_range: float = 0.5, gist_dropout: float = 0.1) -> tuple[TextGistModel, Any]:
    """Frozen encoder -> method applied in place -> head + Gist token. Returns (model, tokenizer).

    Only the method's parameters, the head and the token train (``full`` unfreezes the whole encoder).
    """
    loaded = load_text_backbone(backbone, weights)
    encoder = loaded.encoder
    for p in encoder.parameters():
        p.requires_grad_(False)
    apply_text_method(encoder, loaded.family, method, method_options)
    model = TextGistModel(encoder, num_classes, gist_enabled, gist_length, gist_init_range, gist_dropout)
    return model, loaded.tokenizer


def unwrap_text(model: nn.Module) -> TextGistModel:
    """The :class:`TextGistModel` under DDP / torch.compile wrappers."""
    while not isinstance(model, TextGistModel):
        model = getattr(model, "module", None) or getattr(model, "_orig_mod")
    return model


def param_part(name: str) -> str:
    """Which part a trainable parameter belongs to: ``token``, ``head`` or ``method``."""
    if name.startswith(TOKEN_PREFIX):
        return "token"
    if name.startswith(HEAD_PREFIX):
        return "head"
    return "method"


def text_trainable_counts(model: nn.Module) -> dict[str, int]:
    """Trainable parameters split into method, token and head, plus total and the frozen rest (the same keys
    as :func:`gist_ray.model.trainable_counts`)."""
    counts = {"method": 0, "token": 0, "head": 0}
    frozen = 0
    for name, p in unwrap_text(model).named_parameters():
        if p.requires_grad:
            counts[param_part(name)] += p.numel()
        else:
            frozen += p.numel()
    counts["total"] = counts["method"] + counts["token"] + counts["head"]
    counts["frozen"] = frozen
    return counts
