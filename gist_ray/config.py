"""Typed run configuration: dataclasses loaded from YAML, ``a.b=value`` overrides, validation.

Every error names the offending field (``train.lr``) or file, and is raised before any expensive work.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml


class ConfigError(ValueError):
    """A configuration problem; the message names the field or path."""


# ----------------------------------------------------------------------------- generic typed loading


def _aliases(cls: type) -> dict[str, str]:
    return {a: f.name for f in dataclasses.fields(cls) for a in f.metadata.get("aliases", ())}


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return it (lightly coerced)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: {value!r} matches none of {tp}")
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{where}: {value!r} is not one of {list(allowed)}")
        return value
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item_tp,) = typing.get_args(tp)[:1] or (Any,)
        return [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads `1e-3` as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def from_dict(cls: type, data: Any, where: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys and wrong types."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where or cls.__name__}: expected a mapping, got {data!r}")
    if hasattr(cls, "from_raw"):
        return cls.from_raw(data, where)
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    aliases = _aliases(cls)
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        name = aliases.get(key, key)
        path = f"{where}.{key}" if where else str(key)
        if name not in names:
            raise ConfigError(f"{path}: unknown field; known fields: {', '.join(sorted(names))}")
        kwargs[name] = _coerce(value, hints[name], path)
    obj = cls(**kwargs)
    check = getattr(obj, "check", None)
    if check is not None:
        check(where)
    return obj


def to_dict(obj: Any) -> dict[str, Any]:
    """The plain-dict form of a config (round-trips through ``from_dict``)."""
    return dataclasses.asdict(obj)


def _require(cond: bool, where: str, name: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"{where + '.' if where else ''}{name}: {msg}")


# ----------------------------------------------------------------------------- the run configuration


@dataclass
class ModelConfig:
    """The backbone and where its weights come from."""

    backbone: str = "vit_synth_s"
    # auto: built-in synthetic pretraining for vit_synth_*, the hub for timm names; none: random init;
    # hub: timm/HF hub; or a path to a local .safetensors/.pth/.pt/.npz file.
    weights: str = "auto"
    drop_path: float = 0.0

    def check(self, where: str) -> None:
        _require(0.0 <= self.drop_path < 1.0, where, "drop_path", f"must be in [0, 1), got {self.drop_path}")
        if self.weights not in ("auto", "none", "hub"):
            _require(Path(self.weights).is_file(), where, "weights", f"file not found: {self.weights}")


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
        obj.typed(where)
        return obj

    def typed(self, where: str = "method") -> Any:
        """The method's own typed config (validated)."""
        from gist_ray.methods import METHODS

        try:
            spec = METHODS.get(self.name)
        except KeyError as exc:
            raise ConfigError(f"{where}.name: {exc.args[0]}") from None
        return from_dict(spec.config_cls, self.options, where)


@dataclass
class GistConfig:
    """The Gist token and the GIST objective ``CE(cls) + mu*CE(gist) + lambda*I(cls, gist; T)``."""

    enabled: bool = True
    length: int = 1
    dropout: float = 0.1
    init_range: float = 0.5
    mu: float = 0.5
    lam: float = field(default=0.75, metadata={"aliases": ("lambda",)})
    temperature: float = field(default=3.0, metadata={"aliases": ("T",)})
    interaction: str = "bkl"
    t_squared: bool = False

    def check(self, where: str) -> None:
        from gist_ray.losses import INTERACTIONS

        _require(self.length >= 1, where, "length", f"must be >= 1, got {self.length}")
        _require(0.0 <= self.dropout < 1.0, where, "dropout", f"must be in [0, 1), got {self.dropout}")
        _require(self.init_range > 0, where, "init_range", f"must be > 0, got {self.init_range}")
        _require(self.mu >= 0, where, "mu", f"must be >= 0, got {self.mu}")
        _require(self.lam >= 0, where, "lam", f"(lambda) must be >= 0, got {self.lam}")
        _require(self.temperature > 0, where, "temperature", f"(T) must be > 0, got {self.temperature}")
        _require(
            self.interaction in INTERACTIONS,
            where,
            "interaction",
            f"unknown {self.interaction!r}; known: {', '.join(INTERACTIONS.names())}",
        )


@dataclass
class DataConfig:
    """Which dataset, which splits to train / select on / test once."""

    name: str = "synthetic"
    task: str = "shapes"
    root: Optional[str] = None
    train_split: str = "train"
    eval_split: Optional[str] = "val"  # evaluated every eval_every epochs; null: none (e.g. a refit)
    test_split: Optional[str] = "test"
    n_train: int = 800
    n_val: int = 200
    n_test: int = 1000
    image_size: Optional[int] = None
    seed: int = 0
    shots: int = 16  # FGVC few-shot: images per class in the training list (NOAH: 1, 2, 4, 8, 16)
    fewshot_seed: int = 0  # FGVC few-shot: which sampled training list (NOAH: 0, 1, 2)

    def check(self, where: str) -> None:
        from gist_ray.data import DATASETS

        _require(self.name in DATASETS, where, "name", f"unknown {self.name!r}; known: {', '.join(DATASETS.names())}")
        for n in ("n_train", "n_val", "n_test"):
            _require(getattr(self, n) >= 1, where, n, f"must be >= 1, got {getattr(self, n)}")
        if self.root is not None:
            _require(Path(self.root).is_dir(), where, "root", f"directory not found: {self.root}")
        if self.image_size is not None:
            _require(self.image_size >= 8, where, "image_size", f"must be >= 8, got {self.image_size}")
        _require(self.shots >= 1, where, "shots", f"must be >= 1, got {self.shots}")
        _require(self.fewshot_seed >= 0, where, "fewshot_seed", f"must be >= 0, got {self.fewshot_seed}")


@dataclass
class TrainConfig:
    """Optimisation: AdamW, linear warmup then cosine decay, checkpoints every N epochs."""

    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    seed: int = 0
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    checkpoint_every: int = 1
    eval_every: int = 1
    grad_clip: float = 0.0
    # torch.compile the model (inductor): one-off compile time, then faster GPU steps; off by default
    compile: bool = False

    def check(self, where: str) -> None:
        _require(self.epochs >= 1, where, "epochs", f"must be >= 1, got {self.epochs}")
        _require(self.batch_size >= 1, where, "batch_size", f"must be >= 1, got {self.batch_size}")
        _require(self.lr > 0, where, "lr", f"must be > 0, got {self.lr}")
        _require(self.weight_decay >= 0, where, "weight_decay", f"must be >= 0, got {self.weight_decay}")
        _require(self.warmup_epochs >= 0, where, "warmup_epochs", f"must be >= 0, got {self.warmup_epochs}")
        _require(self.checkpoint_every >= 1, where, "checkpoint_every", f"must be >= 1, got {self.checkpoint_every}")
        _require(self.eval_every >= 1, where, "eval_every", f"must be >= 1, got {self.eval_every}")
        _require(self.grad_clip >= 0, where, "grad_clip", f"must be >= 0, got {self.grad_clip}")


@dataclass
class ResourcesConfig:
    """Where a run executes: Ray address, workers, GPUs, and how a sweep trial runs its training."""

    num_workers: int = 1
    use_gpu: Optional[bool] = None  # None: use a GPU when the cluster has one
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 1.0
    # train: every run through a Ray Train TorchTrainer; inline: a sweep trial trains in its own process
    # (no Train controller, ~15 s less per trial); auto: inline for 1-worker CPU sweep trials, else train.
    backend: Literal["auto", "train", "inline"] = "auto"
    address: Optional[str] = None  # None/"local": a local Ray instance; "auto" or ray://... on a cluster
    max_failures: int = 0

    def check(self, where: str) -> None:
        _require(self.num_workers >= 1, where, "num_workers", f"must be >= 1, got {self.num_workers}")
        _require(self.cpus_per_worker > 0, where, "cpus_per_worker", f"must be > 0, got {self.cpus_per_worker}")
        _require(self.gpus_per_worker > 0, where, "gpus_per_worker", f"must be > 0, got {self.gpus_per_worker}")
        _require(self.max_failures >= 0, where, "max_failures", f"must be >= 0, got {self.max_failures}")


@dataclass
class TrackingConfig:
    """MLflow: a SQLite file by default, or an ``http://`` tracking server."""

    uri: str = "sqlite:///mlflow.db"
    experiment: str = "gist-ray"

    def check(self, where: str) -> None:
        ok = self.uri.startswith(("sqlite:///", "http://", "https://", "file:", "postgresql", "mysql", "databricks"))
        _require(ok, where, "uri", f"unsupported tracking URI {self.uri!r}")


@dataclass
class Config:
    """A complete, runnable description of one GIST training run."""

    name: str = "gist-run"
    output_dir: str = "runs"
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    gist: GistConfig = field(default_factory=GistConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    def check(self, where: str) -> None:
        from gist_ray.backbones import backbone_family, is_known_backbone
        from gist_ray.methods import require_family

        _require(bool(self.name.strip()), where, "name", "must not be empty")
        _require(
            is_known_backbone(self.model.backbone),
            "model",
            "backbone",
            f"unknown backbone {self.model.backbone!r} (not a gist-ray or timm model name)",
        )
        fam = backbone_family(self.model.backbone)
        _require(
            fam is not None,
            "model",
            "backbone",
            f"{self.model.backbone!r} is neither a timm VisionTransformer nor a Swin Transformer",
        )
        require_family(self.method.name, self.method.typed(), fam, self.model.backbone)


# ----------------------------------------------------------------------------- YAML + overrides


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b=value`` -> (["a", "b"], parsed YAML value)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected key.path=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({exc})") from None
    return key.split("."), value


def set_path(data: dict, path: list[str], value: Any) -> None:
    """Set ``data[a][b] = value`` creating intermediate mappings."""
    cur = data
    for i, part in enumerate(path[:-1]):
        nxt = cur.get(part)
        if nxt is None:
            nxt = cur[part] = {}
        if not isinstance(nxt, dict):
            raise ConfigError(f"{'.'.join(path[: i + 1])}: is not a section, cannot set {'.'.join(path)}")
        cur = nxt
    cur[path[-1]] = value


def load_yaml(path: str | os.PathLike) -> dict:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: config file not found")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: top level must be a mapping")
    return data


def build_config(raw: dict | None = None, overrides: list[str] | tuple[str, ...] = (), source: str = "") -> Config:
    """Raw mapping + overrides -> validated :class:`Config`. ``source`` prefixes error messages."""
    data = copy.deepcopy(raw or {})
    for text in overrides:
        path, value = parse_override(text)
        set_path(data, path, value)
    try:
        return from_dict(Config, data)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}" if source else str(exc)) from None


def load_config(path: str | os.PathLike | None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Load a YAML run config (or the defaults when ``path`` is None) and apply overrides."""
    raw = load_yaml(path) if path else {}
    return build_config(raw, overrides, source=str(path) if path else "")
