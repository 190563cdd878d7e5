"""The run config's text rules: which fields a text run may set, and the text data config it derives.

:class:`gist_ray.config.Config` calls :func:`check_text_run` when its backbone is a text encoder (the run's
*modality* is derived from ``model.backbone``). Every refusal is a :class:`~gist_ray.errors.ConfigError` naming the
field, raised before anything is loaded. Nothing here imports transformers.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from gist_ray.errors import ConfigError
from gist_ray.text import glue, synthetic
from gist_ray.text.backbones import TEXT_BACKBONES, is_text_backbone
from gist_ray.text.data import TEXT_DATASETS, TextDataConfig
from gist_ray.text.methods import TEXT_METHODS, text_method_config

# objectives a text run can train with: the others read block outputs or same-class pairs of image batches
TEXT_OBJECTIVES = ("gist", "ce")
DEFAULT_MAX_LENGTH = {"glue": 256, "synthetic_text": 64}
# image-only data fields and their defaults: a text run must leave them alone
IMAGE_ONLY_DATA = {"image_size": None, "shots": 16, "fewshot_seed": 0}


def modality_of(backbone: str) -> str:
    """``text`` for a text encoder (a registered name or a Hugging Face ``org/name`` id), else ``image``."""
    return "text" if is_text_backbone(backbone) else "image"


def text_family(backbone: str) -> str | None:
    """The family of a registered text backbone; None for a hub id (known only once its config is read)."""
    return TEXT_BACKBONES.get(backbone).family.name if backbone in TEXT_BACKBONES else None


def text_method_knobs(name: str) -> set[str] | None:
    """The knob names of text method ``name`` (None for an unknown one)."""
    if name not in TEXT_METHODS:
        return None
    cls = TEXT_METHODS.get(name).config_cls
    return {f.name for f in dataclasses.fields(cls)} | {a for f in dataclasses.fields(cls)
                                                         for a in f.metadata.get("aliases", ())}


def max_length_of(data: Any) -> int:
    """``data.max_length``, or the dataset's default (256 on GLUE, the paper's; 64 on the synthetic tasks)."""
    return int(data.max_length) if data.max_length is not None else DEFAULT_MAX_LENGTH.get(data.name, 128)


def text_data_config(data: Any) -> TextDataConfig:
    """The :class:`TextDataConfig` of a run config's ``data`` section."""
    return TextDataConfig(name=data.name, task=data.task, root=data.root, train_split=data.train_split,
                          eval_split=data.eval_split, test_split=data.test_split, max_length=max_length_of(data),
                          n_train=data.n_train, n_val=data.n_val, n_test=data.n_test, seed=data.seed)


def check_text_data(data: Any, where: str = "data") -> None:
    """A text dataset's task name and fields (no file is read)."""
    if data.name == "glue":
        try:
            glue.glue_task(data.task)
        except ValueError as exc:
            raise ConfigError(f"{where}.task: {exc}") from None
    elif data.task not in synthetic.TASKS:
        raise ConfigError(f"{where}.task: unknown synthetic_text task {data.task!r}; known: "
                          f"{', '.join(synthetic.TASKS)}")
    for name, default in IMAGE_ONLY_DATA.items():
        if getattr(data, name) != default:
            raise ConfigError(f"{where}.{name}: image-only field; a text dataset ({data.name}) takes no "
                              f"{name} (got {getattr(data, name)!r})")


def check_text_run(cfg: Any) -> None:
    """Every cross-field rule of a text run: dataset modality, image-only fields, method on the family,
    objective, precision."""
    backbone, data = cfg.model.backbone, cfg.data
    if data.name not in TEXT_DATASETS:
        raise ConfigError(f"data.name: {data.name!r} is an image dataset but model.backbone {backbone!r} is a text "
                          f"encoder; text datasets: {', '.join(TEXT_DATASETS.names())}")
    check_text_data(data)
    if cfg.model.drop_path != 0.0:
        raise ConfigError(f"model.drop_path: image-only (stochastic depth of a ViT); a text backbone takes none, "
                          f"got {cfg.model.drop_path}")
    family = text_family(backbone)
    text_method_config(cfg.method.name, cfg.method.options, family, "method")
    if cfg.objective.name not in TEXT_OBJECTIVES:
        raise ConfigError(f"objective.name: {cfg.objective.name} is not available for text backbones; text runs "
                          f"train with {' or '.join(TEXT_OBJECTIVES)}")
    if cfg.train.precision == "fp16" and (family == "t5" or "t5" in backbone.lower()):
        raise ConfigError("train.precision: fp16 overflows in T5 (its feed-forward activations exceed fp16's "
                          "range); use bf16 or fp32")
    if cfg.train.schedule == "epoch_cosine":
        raise ConfigError(f"train.schedule: {cfg.train.schedule} is the ViT recipe's per-epoch schedule; text runs "
                          "use step_cosine or step_linear")


def check_image_data(data: Any) -> None:
    """An image run refuses a text dataset and text-only fields."""
    if data.name in TEXT_DATASETS:
        raise ConfigError(f"data.name: {data.name!r} is a text dataset; model.backbone must be a text encoder "
                          f"({', '.join(TEXT_BACKBONES.names())} or a Hugging Face org/name)")
    if data.max_length is not None:
        raise ConfigError(f"data.max_length: text-only field; {data.name} is an image dataset")
