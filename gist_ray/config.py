"""The run configuration: typed dataclasses, built once from YAML and ``a.b=value`` overrides, then passed on.

Every field carries its bounds (:func:`~gist_ray.typed_config.setting`); cross-field rules live in ``check``.
Every error names the offending field (``train.lr``) or file, and is raised before any expensive work. A
:class:`Config` is immutable in use: derive another with :meth:`Config.with_overrides` (one validated build).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Optional

from gist_ray.backbones import backbone_family, is_known_backbone
from gist_ray.data import DATASETS
from gist_ray.errors import ConfigError
from gist_ray.losses import INTERACTIONS
from gist_ray.methods import METHODS, method_knobs, require_family
from gist_ray.objectives import objective_knobs, typed_objective, uses_gist_token
from gist_ray.text.config_check import (
    check_image_data,
    check_text_data,
    check_text_run,
    modality_of,
    text_method_knobs,
)
from gist_ray.text.data import TEXT_DATASETS
from gist_ray.text.methods import TEXT_METHODS
from gist_ray.typed_config import (
    from_dict,
    load_yaml,
    parse_override,
    require,
    set_path,
    setting,
    to_dict,
    with_paths,
)

__all__ = ["Config", "ConfigError", "Variants", "build_config", "load_config", "to_dict", "from_dict", "parse_override",
           "set_path", "load_yaml", "absolute_paths"]

log = logging.getLogger(__name__)


@dataclass
class ModelConfig:
    """The backbone and where its weights come from."""

    backbone: str = "vit_synth_s"
    # auto: built-in synthetic pretraining for vit_synth_*, the hub for timm names; none: random init;
    # hub: timm/HF hub; or a path to a local .safetensors/.pth/.pt/.npz file (text backbones: a directory in
    # save_pretrained form, loaded offline).
    weights: str = "auto"
    drop_path: float = setting(0.0, ge=0.0, lt=1.0)

    def check(self, where: str) -> None:
        if self.weights not in ("auto", "none", "hub"):
            if modality_of(self.backbone) == "text":
                require(Path(self.weights).is_dir(), where, "weights",
                        f"directory not found (a text backbone's weights are a save_pretrained directory): "
                        f"{self.weights}")
            else:
                require(Path(self.weights).is_file(), where, "weights", f"file not found: {self.weights}")


@dataclass
class MethodConfig:
    """A PEFT method by registered name; every other key is one of that method's own knobs."""

    name: str = "gist_adapter"
    options: dict = field(default_factory=dict)

    @classmethod
    def from_raw(cls, data: dict, where: str) -> "MethodConfig":
        data = dict(data)
        name = data.pop("name", cls.name)
        if not isinstance(name, str):
            raise ConfigError(f"{where}.name: expected a string, got {name!r}")
        if "options" in data and isinstance(data["options"], dict):
            data.update(data.pop("options"))
        obj = cls(name=name, options=data)
        if name not in TEXT_METHODS:  # a text method's knobs are checked with the backbone (Config.check)
            obj.typed(where)
        return obj

    def typed(self, where: str = "method") -> Any:
        """The (vision) method's own typed config (validated)."""
        try:
            spec = METHODS.get(self.name)
        except KeyError as exc:
            raise ConfigError(f"{where}.name: {exc.args[0]}") from None
        return from_dict(spec.config_cls, self.options, where)


@dataclass
class GistConfig:
    """The Gist token and the GIST objective ``CE(cls) + mu*CE(gist) + lambda*I(cls, gist; T)``."""

    enabled: bool = True
    length: int = setting(1, ge=1)
    dropout: float = setting(0.1, ge=0.0, lt=1.0)
    init_range: float = setting(0.5, gt=0.0)
    mu: float = setting(0.5, ge=0.0)
    lam: float = setting(0.75, ge=0.0, aliases=("lambda",), doc="lambda, the interaction loss weight")
    temperature: float = setting(3.0, gt=0.0, aliases=("T",))
    interaction: str = "bkl"
    t_squared: bool = False

    def check(self, where: str) -> None:
        require(self.interaction in INTERACTIONS, where, "interaction",
                f"unknown {self.interaction!r}; known: {', '.join(INTERACTIONS.names())}")


@dataclass
class ObjectiveConfig:
    """What training minimises, by registered name (:mod:`gist_ray.objectives`); every other key is one of that
    objective's own knobs. ``gist`` (the default) keeps its knobs under ``gist.*``. Only ``gist`` uses the Gist
    token: with any other objective the run builds none, and the built config says so (``gist.enabled`` false)."""

    name: str = "gist"
    options: dict = field(default_factory=dict)

    @classmethod
    def from_raw(cls, data: dict, where: str) -> "ObjectiveConfig":
        data = dict(data)
        name = data.pop("name", cls.name)
        if not isinstance(name, str):
            raise ConfigError(f"{where}.name: expected a string, got {name!r}")
        if "options" in data and isinstance(data["options"], dict):
            data.update(data.pop("options"))
        obj = cls(name=name, options=data)
        obj.typed(where)
        return obj

    def typed(self, where: str = "objective") -> Any:
        """The objective's own typed config (validated)."""
        return typed_objective(self.name, self.options, where)


@dataclass
class DataConfig:
    """Which dataset, which splits to train / select on / test once."""

    name: str = "synthetic"
    task: str = "shapes"
    root: Optional[str] = None
    train_split: str = "train"
    eval_split: Optional[str] = "val"  # evaluated every eval_every epochs; null: none (e.g. a refit)
    test_split: Optional[str] = "test"
    n_train: int = setting(800, ge=1)
    n_val: int = setting(200, ge=1)
    n_test: int = setting(1000, ge=1)
    image_size: Optional[int] = setting(None, ge=8)
    seed: int = 0
    shots: int = setting(16, ge=1, doc="FGVC few-shot: images per class in the training list (NOAH: 1-16)")
    fewshot_seed: int = setting(0, ge=0, doc="FGVC few-shot: which sampled training list (NOAH: 0, 1, 2)")
    max_length: Optional[int] = setting(None, ge=2, doc="text: tokens per example or pair (default: 256 on "
                                        "glue, 64 on synthetic_text); image datasets: unset")

    def check(self, where: str) -> None:
        known = DATASETS.names() + TEXT_DATASETS.names()
        require(self.name in known, where, "name", f"unknown {self.name!r}; known: {', '.join(known)}")
        if self.root is not None:
            require(Path(self.root).is_dir(), where, "root", f"directory not found: {self.root}")
        if self.name in TEXT_DATASETS:
            check_text_data(self, where)


@dataclass
class TrainConfig:
    """Optimisation: AdamW and a warmup + cosine schedule (:mod:`gist_ray.train.optim`), checkpoints every N epochs."""

    epochs: int = setting(10, ge=1)
    batch_size: int = setting(64, ge=1, doc="per worker")
    lr: float = setting(1e-3, gt=0.0)
    weight_decay: float = setting(1e-4, ge=0.0)
    warmup_epochs: float = setting(1.0, ge=0.0)
    # step_cosine: per-step warmup, cosine to 0; epoch_cosine: the official GIST recipe (timm's cosine, per epoch,
    # from warmup_lr, down to min_lr, the last cooldown_epochs at min_lr); step_linear: per-step warmup, linear
    # decay to 0 (Hugging Face's default, ATTEMPT's Table 3 runs)
    schedule: Literal["step_cosine", "epoch_cosine", "step_linear"] = "step_cosine"
    warmup_steps: Optional[int] = setting(None, ge=0, doc="per-step schedules: warmup in steps (ATTEMPT: 500), "
                                          "instead of warmup_epochs")
    warmup_lr: float = setting(1e-7, ge=0.0, doc="epoch_cosine: the lr of the first warmup epoch")
    min_lr: float = setting(1e-8, ge=0.0, doc="epoch_cosine: the floor of the cosine")
    cooldown_epochs: int = setting(0, ge=0, doc="epoch_cosine: last epochs held at min_lr")
    drop_last: bool = False  # drop each epoch's last partial batch (the official recipe does)
    seed: int = 0
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    checkpoint_every: int = setting(1, ge=1)
    eval_every: int = setting(1, ge=1)
    grad_clip: float = setting(0.0, ge=0.0)
    # torch.compile the model (inductor): one-off compile time, then faster GPU steps; off by default
    compile: bool = False
    # which weights the test split sees: the last epoch's, or the best val/score epoch's (ATTEMPT's
    # load_best_model_at_end, Table 3's protocol); needs an eval split that is not the test split
    test_at: Literal["last", "best_val"] = "last"

    def check(self, where: str) -> None:
        require(self.cooldown_epochs < self.epochs, where, "cooldown_epochs",
                f"must be < epochs ({self.epochs}), got {self.cooldown_epochs}")
        if self.schedule == "epoch_cosine":
            require(float(self.warmup_epochs).is_integer() and self.warmup_epochs <= self.epochs - self.cooldown_epochs,
                    where, "warmup_epochs", "epoch_cosine warms up over whole epochs within epochs - cooldown_epochs, "
                    f"got {self.warmup_epochs}")


@dataclass
class ResourcesConfig:
    """Where a run executes: Ray address, workers, GPUs, and how a sweep trial runs its training."""

    num_workers: int = setting(1, ge=1)
    use_gpu: Optional[bool] = None  # None: use a GPU when the cluster has one
    cpus_per_worker: float = setting(1.0, gt=0.0)
    gpus_per_worker: float = setting(1.0, gt=0.0)
    # train: every run through a Ray Train TorchTrainer; inline: a sweep trial trains in its own process
    # (no Train controller, ~15 s less per trial); auto: inline for 1-worker CPU sweep trials, else train.
    backend: Literal["auto", "train", "inline"] = "auto"
    address: Optional[str] = None  # None/"local": a local Ray instance; "auto" or ray://... on a cluster
    max_failures: int = setting(0, ge=0)


TRACKING_SCHEMES = ("sqlite:///", "http://", "https://", "file:", "postgresql", "mysql", "databricks")


@dataclass
class TrackingConfig:
    """MLflow: a SQLite file by default, or an ``http://`` tracking server."""

    uri: str = "sqlite:///mlflow.db"
    experiment: str = "gist-ray"

    def check(self, where: str) -> None:
        require(self.uri.startswith(TRACKING_SCHEMES), where, "uri", f"unsupported tracking URI {self.uri!r}")


@dataclass
class Config:
    """A complete, runnable description of one GIST training run."""

    name: str = "gist-run"
    output_dir: str = "runs"
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    gist: GistConfig = field(default_factory=GistConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    @property
    def modality(self) -> str:
        """``text`` or ``image``, derived from ``model.backbone``."""
        return modality_of(self.model.backbone)

    def check(self, where: str) -> None:
        require(bool(self.name.strip()), where, "name", "must not be empty")
        backbone = self.model.backbone
        if self.train.test_at == "best_val":
            require(self.data.eval_split is not None and self.data.eval_split != self.data.test_split, "train",
                    "test_at", "best_val selects the tested epoch on data.eval_split, which must be set and differ "
                    "from data.test_split")
        if self.modality == "text":
            check_text_run(self)
            return
        check_image_data(self.data)
        require(is_known_backbone(backbone), "model", "backbone",
                f"unknown backbone {backbone!r} (not a gist-ray or timm model name)")
        fam = backbone_family(backbone)
        require(fam is not None, "model", "backbone",
                f"{backbone!r} is neither a timm VisionTransformer nor a Swin Transformer")
        require_family(self.method.name, self.method.typed(), fam, backbone)
        check_backbone = getattr(self.objective.typed(), "check_backbone", None)
        if check_backbone is not None:  # e.g. objective.blocks within the backbone's depth
            check_backbone(backbone, "objective")

    def __post_init__(self) -> None:
        # the Gist token belongs to the gist objective: any other objective runs without one, and says so
        if self.gist.enabled and not uses_gist_token(self.objective.name):
            self.gist = dataclasses.replace(self.gist, enabled=False)

    def with_overrides(self, values: Mapping[str, Any], foreign_knobs: Literal["error", "drop"] = "error") -> "Config":
        """A new validated config with ``{"a.b": value}`` applied (see :func:`override_raw`)."""
        return build_config(override_raw(to_dict(self), values, foreign_knobs))


def override_raw(raw: dict, values: Mapping[str, Any], foreign_knobs: Literal["error", "drop"] = "error") -> dict:
    """``raw`` (a run config mapping) with ``{"a.b": value}`` set.

    When ``method.name`` (``objective.name``) changes, the old method's (objective's) knobs that the new one lacks
    are dropped, with a one-line note. A knob in ``values`` that the (new) method or objective lacks is an error
    naming it (``foreign_knobs="error"``, the command line) or silently dropped (``"drop"``: a flat sweep space
    holds knobs of several methods or objectives).

    Switching from an objective without the Gist token to ``gist`` turns the token on (``gist.enabled``'s default)
    unless ``gist.enabled`` is among ``values``: under a token-less objective ``gist.enabled`` means nothing (a
    built config even holds a forced false), so it carries no choice over to ``gist``.
    """
    out = dict(raw)
    old_objective = str((raw.get("objective") or {}).get("name", ObjectiveConfig.name))
    new_objective = str(values.get("objective.name", old_objective))
    if not uses_gist_token(old_objective) and uses_gist_token(new_objective) and "gist.enabled" not in values:
        out["gist"] = {**(raw.get("gist") or {}), "enabled": GistConfig.enabled}
    backbone = str(values.get("model.backbone", (raw.get("model") or {}).get("backbone", ModelConfig.backbone)))
    own_method_knobs = text_method_knobs if modality_of(backbone) == "text" else method_knobs
    for section, default, knobs in (("method", MethodConfig.name, own_method_knobs),
                                    ("objective", ObjectiveConfig.name, objective_knobs)):
        if section == "method" or section in raw or any(k.startswith(section + ".") for k in values):
            values = _switch_knobs(out, values, section, default, knobs, foreign_knobs)
    out = with_paths(out, {})
    for key, value in values.items():
        set_path(out, key.split("."), value)
    return out


def _switch_knobs(out: dict, values: Mapping[str, Any], section: str, default: str, knobs, foreign_knobs: str) -> dict:
    """Flatten ``out[section]``'s options, drop the old name's knobs the new name lacks; returns ``values`` without
    foreign knobs when ``foreign_knobs="drop"``."""
    old = dict((out.get(section) or {}))
    if isinstance(old.get("options"), dict):
        old.update(old.pop("options"))
    new_name = values.get(f"{section}.name", old.get("name", default))
    own = knobs(str(new_name))
    if foreign_knobs == "drop":
        values = {k: v for k, v in values.items() if not _foreign(k, own, section)}
    if new_name != old.get("name", default) and own is not None:
        dropped = sorted(k for k in old if k != "name" and k not in own and f"{section}.{k}" not in values)
        for k in dropped:
            del old[k]
        if dropped and foreign_knobs == "error":
            log.warning("%s.name=%s: dropped %s's knobs it does not have: %s", section, new_name, old.get("name"),
                        ", ".join(dropped))
    out[section] = old
    return dict(values)


def _foreign(key: str, own: set[str] | None, section: str = "method") -> bool:
    return (own is not None and key.startswith(section + ".") and key != f"{section}.name"
            and key.split(".", 2)[1] not in own)


def any_method_knobs(name: str) -> set[str] | None:
    """The knobs of method ``name`` in the vision or the text registry (both: their union; neither: None)."""
    found = [k for k in (method_knobs(name), text_method_knobs(name)) if k is not None]
    return set().union(*found) if found else None


class Variants:
    """A base config and its variants by ``{"a.b": value}`` overrides, each built (validated) once.

    Sweep and study drivers derive every trial's or cell's config from one base; they ask this cache, so a
    configuration is never rebuilt in the same process. Method knobs a variant's method lacks are dropped
    (flat spaces hold the knobs of several methods).
    """

    def __init__(self, base: Config, built: Optional[dict[str, Config]] = None) -> None:
        self.base = base
        self._raw = to_dict(base)
        self._built: dict[str, Config] = {} if built is None else built  # keyed by the resulting config
        self._built.setdefault(self._key(override_raw(self._raw, {})), base)  # the same normal form

    def rebased(self, base: Config) -> "Variants":
        """Variants of another base sharing this cache: a build is keyed by the config it gives, whatever base
        and overrides led there, so a study's cells and the sweep that runs them build each config once."""
        return self if base is self.base else Variants(base, self._built)

    @staticmethod
    def _key(raw: Mapping[str, Any]) -> str:
        return json.dumps(raw, sort_keys=True, default=repr)

    def get(self, overrides: Mapping[str, Any]) -> Config:
        """The config with ``overrides`` applied; two override sets that give the same config share one build."""
        raw = override_raw(self._raw, overrides, foreign_knobs="drop")
        key = self._key(raw)
        if key not in self._built:
            self._built[key] = build_config(raw)
        return self._built[key]


# ----------------------------------------------------------------------------- building


def build_config(raw: Mapping[str, Any] | None = None, overrides: list[str] | tuple[str, ...] = (),
                 source: str = "") -> Config:
    """Raw mapping + ``a.b=value`` overrides -> validated :class:`Config`. ``source`` prefixes error messages."""
    values = {}
    for text in overrides:
        path, value = parse_override(text)
        values[".".join(path)] = value
    data = override_raw(dict(raw or {}), values) if values else dict(raw or {})
    try:
        return from_dict(Config, data)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}" if source else str(exc)) from None


def load_config(path: str | os.PathLike | None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Load a YAML run config (or the defaults when ``path`` is None), apply overrides, make paths absolute."""
    raw = load_yaml(path) if path else {}
    return absolute_paths(build_config(raw, overrides, source=str(path) if path else ""))


def absolute_paths(cfg: Config) -> Config:
    """The same config with its local paths (output, data root, weights file, SQLite store) made absolute, so
    that trials and workers running in other directories see the same files. No revalidation is needed."""
    out = cfg.output_dir if "://" in cfg.output_dir else str(Path(cfg.output_dir).resolve())
    data = cfg.data if not cfg.data.root else dataclasses.replace(cfg.data, root=str(Path(cfg.data.root).resolve()))
    model = cfg.model
    if model.weights not in ("auto", "none", "hub"):
        model = dataclasses.replace(model, weights=str(Path(model.weights).resolve()))
    tracking = cfg.tracking
    if tracking.uri.startswith("sqlite:///") and not tracking.uri.startswith("sqlite:////"):
        tracking = dataclasses.replace(tracking, uri="sqlite:///" + str(Path(tracking.uri[len("sqlite:///"):]).resolve()))
    return dataclasses.replace(cfg, output_dir=out, data=data, model=model, tracking=tracking)
