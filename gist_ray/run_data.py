"""A run's data whatever its modality: its splits, number of classes, metrics, and the driver's preflight.

Image runs read :mod:`gist_ray.data` (decoded uint8 splits); text runs read :mod:`gist_ray.text.data` (splits
tokenised through the cache with the backbone's tokenizer). Either split type offers what the training loop needs:
``labels``, ``num_classes``, ``name``, ``len()`` and ``inputs(idx) -> dict`` (the model's keyword inputs).
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from typing import Any

from gist_ray.config import Config
from gist_ray.data import load_splits, preflight, validate_splits
from gist_ray.errors import ConfigError
from gist_ray.text.backbones import load_text_tokenizer
from gist_ray.text.config_check import text_data_config
from gist_ray.text.data import TEXT_DATASETS, check_text_splits, load_text_split

IMAGE_METRICS = (("acc",), "acc")
_TOKENIZERS: dict[tuple[str, str], Any] = {}
_LOADED: OrderedDict[tuple, Any] = OrderedDict()  # text splits this process has loaded (a few, newest last)
KEEP_LOADED = 4


def tokenizer_for(cfg: Config) -> Any:
    """The text backbone's tokenizer (loaded once per process; no weights are read)."""
    key = (cfg.model.backbone, cfg.model.weights)
    if key not in _TOKENIZERS:
        _TOKENIZERS[key] = load_text_tokenizer(*key)
    return _TOKENIZERS[key]


def run_num_classes(cfg: Config) -> int:
    """The number of classes of the run's task (text: known before any row is read)."""
    if cfg.modality == "text":
        return TEXT_DATASETS.get(cfg.data.name).num_classes(text_data_config(cfg.data))
    return load_splits(cfg.data, [cfg.data.train_split])[cfg.data.train_split].num_classes


def run_splits(cfg: Config, names: list[str]) -> dict[str, Any]:
    """Each named split of the run's dataset (image: decoded; text: tokenised with the backbone's tokenizer)."""
    if cfg.modality != "text":
        return load_splits(cfg.data, names)
    tdc = text_data_config(cfg.data)
    out = {}
    for name in names:
        key = (dataclasses.astuple(tdc), cfg.model.backbone, cfg.model.weights, name)
        if key not in _LOADED:
            _LOADED[key] = load_text_split(tdc, name, tokenizer_for(cfg))
            while len(_LOADED) > KEEP_LOADED:
                _LOADED.popitem(last=False)
        _LOADED.move_to_end(key)
        out[name] = _LOADED[key]
    return out


def split_metrics(cfg: Config) -> tuple[tuple[str, ...], str]:
    """(every metric the run reports on a split, the selection metric that ``<role>/score`` repeats)."""
    if cfg.modality != "text":
        return IMAGE_METRICS
    return TEXT_DATASETS.get(cfg.data.name).metrics(text_data_config(cfg.data))


def validate_run_splits(cfg: Config, names: list[str | None]) -> None:
    """Cheap checks of the named splits, reading no rows; a ConfigError naming the field or file."""
    names = [n for n in names if n]
    if cfg.modality != "text":
        validate_splits(cfg.data, names)
        return
    try:
        check_text_splits(text_data_config(cfg.data), names)
    except (ValueError, OSError) as exc:
        raise ConfigError(f"data ({cfg.data.name}/{cfg.data.task}): {exc}") from None


def preflight_run(cfg: Config, names: list[str | None]) -> None:
    """Before any trial or worker starts: check the splits; text runs also tokenise every named split into the
    cache here (tokenizer only), so trials only read the cache."""
    names = [n for n in names if n]
    if cfg.modality != "text":
        preflight(cfg.data, names)
        return
    validate_run_splits(cfg, names)
    try:
        run_splits(cfg, names)
    except (ValueError, OSError) as exc:
        raise ConfigError(f"data ({cfg.data.name}/{cfg.data.task}): {exc}") from None
