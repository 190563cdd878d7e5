"""Assemble backbone + PEFT method + Gist token + objective; count, save and load what trains."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from gist_ray.backbones import create_backbone
from gist_ray.config import Config, GistConfig
from gist_ray.gist import GistModel
from gist_ray.methods import apply_method
from gist_ray.objectives import BuildContext, build_objective, uses_gist_token
from gist_ray.pretrain import resolve_weights
from gist_ray.text.gist import TextGistModel
from gist_ray.text.model import build_text_model

TOKEN_PREFIX = "gist."
HEAD_PREFIX = "backbone.head."
TEXT_HEAD_PREFIX = "head."  # a TextGistModel's own head (image models have no top-level ``head``)
OBJECTIVE_PREFIX = "objective."
PARTS = ("method", "token", "head", "objective")


def build_model(
    backbone: str,
    num_classes: int,
    method: str = "linear",
    method_options: dict | None = None,
    gist: GistConfig | None = None,
    weights: str = "auto",
    drop_path: float = 0.0,
    objective: str = "gist",
    objective_options: dict | None = None,
) -> GistModel:
    """Frozen backbone -> method applied in place -> Gist wrapper -> objective attached as ``model.objective``.
    Only method, token, head and the objective's own modules (if any) train."""
    vit = create_backbone(backbone, num_classes, weights=resolve_weights(backbone, weights), drop_path=drop_path)
    return attach(vit, num_classes, method, method_options, gist, objective, objective_options)


def attach(
    vit: nn.Module,
    num_classes: int,
    method: str = "linear",
    method_options: dict | None = None,
    gist: GistConfig | None = None,
    objective: str = "gist",
    objective_options: dict | None = None,
) -> GistModel:
    """The second half of :func:`build_model` on a backbone already made: method applied in place on ``vit``, the
    Gist wrapper, the objective."""
    gist = gist or GistConfig()
    apply_method(vit, method, method_options)
    token = gist.enabled and uses_gist_token(objective)  # only the gist objective has a Gist token
    model = GistModel(vit, token, gist.length, gist.init_range, gist.dropout)
    model.objective = build_objective(objective, objective_options, BuildContext(vit, num_classes, gist))
    return model


def build_text_from_config(cfg: Config, num_classes: int) -> TextGistModel:
    """The text run's model: encoder + text method + head + Gist token, the objective attached as for images."""
    token = cfg.gist.enabled and uses_gist_token(cfg.objective.name)
    model, _ = build_text_model(cfg.model.backbone, num_classes, cfg.method.name, cfg.method.options,
                                weights=cfg.model.weights, gist_enabled=token, gist_length=cfg.gist.length,
                                gist_init_range=cfg.gist.init_range, gist_dropout=cfg.gist.dropout)
    model.objective = build_objective(cfg.objective.name, cfg.objective.options,
                                      BuildContext(model.backbone, num_classes, cfg.gist))
    return model


def build_from_config(cfg: Config, num_classes: int) -> GistModel | TextGistModel:
    """The run's model; dispatches on the modality (``model.backbone``: a timm ViT / Swin or a text encoder)."""
    if cfg.modality == "text":
        return build_text_from_config(cfg, num_classes)
    return build_model(
        cfg.model.backbone,
        num_classes,
        cfg.method.name,
        cfg.method.options,
        cfg.gist,
        cfg.model.weights,
        cfg.model.drop_path,
        cfg.objective.name,
        cfg.objective.options,
    )


def unwrap(model: nn.Module) -> GistModel | TextGistModel:
    """The :class:`GistModel` (or :class:`TextGistModel`) under DDP / torch.compile wrappers."""
    while not isinstance(model, (GistModel, TextGistModel)):
        model = getattr(model, "module", None) or getattr(model, "_orig_mod")
    return model


def param_part(name: str) -> str:
    """Which part a trainable parameter belongs to: ``token``, ``head``, ``objective`` (an objective's own
    modules, e.g. BYOT's shallow classifiers: trained, not used for prediction) or ``method``."""
    if name.startswith(TOKEN_PREFIX):
        return "token"
    if name.startswith(HEAD_PREFIX) or name.startswith(TEXT_HEAD_PREFIX):
        return "head"
    if name.startswith(OBJECTIVE_PREFIX):
        return "objective"
    return "method"


def trainable_counts(model: nn.Module) -> dict[str, int]:
    """Trainable parameters split into method, token, head and objective, plus total and the frozen rest."""
    counts = dict.fromkeys(PARTS, 0)
    frozen = 0
    for name, p in unwrap(model).named_parameters():
        if p.requires_grad:
            counts[param_part(name)] += p.numel()
        else:
            frozen += p.numel()
    counts["total"] = sum(counts[p] for p in PARTS)
    counts["frozen"] = frozen
    return counts


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Only what was trained (method + token + head), detached on CPU."""
    return {n: p.detach().cpu().contiguous() for n, p in unwrap(model).named_parameters() if p.requires_grad}


def save_trainable(model: nn.Module, path: str | Path) -> None:
    """Write the trained parameters as safetensors, atomically (temporary file, then rename)."""
    from safetensors.torch import save_file

    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        save_file(trainable_state(model), str(tmp))
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())  # the bytes are on disk before the rename makes them visible
        os.replace(tmp, path)
    finally:
        if tmp.exists():  # only after a failed write
            tmp.unlink()


def load_trainable(model: nn.Module, path: str | Path) -> None:
    """Load trained parameters onto a freshly built model of the same config; every key must match."""
    from safetensors.torch import load_file

    apply_trainable(model, load_file(str(path)), path)


def apply_trainable(model: nn.Module, state: dict[str, torch.Tensor], source: str | Path = "state") -> None:
    """Copy trained parameters (already read, e.g. by :func:`load_trainable`) onto ``model``; keys must match."""
    path = source
    own = dict(unwrap(model).named_parameters())
    expected = {n for n, p in own.items() if p.requires_grad}
    missing, unexpected = expected - state.keys(), state.keys() - expected
    if missing or unexpected:
        raise ValueError(f"{path}: trained parameters do not match the model; missing {sorted(missing)[:5]}, "
                         f"unexpected {sorted(unexpected)[:5]}")
    wrong = [n for n, t in state.items() if tuple(t.shape) != tuple(own[n].shape)]
    if wrong:  # checked before copying anything (copy_ would broadcast some mismatches silently)
        raise ValueError(f"{path}: trained parameters have other shapes than the model's: {wrong[:5]}")
    with torch.no_grad():
        for n, t in state.items():
            own[n].copy_(t)
