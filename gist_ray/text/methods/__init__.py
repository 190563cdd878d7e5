"""Text PEFT methods, one file each, registered by name in :data:`TEXT_METHODS`.

Every module in this package is imported on first use, so adding a text method is adding one file (plus its row
in ``tests/test_text_methods.py``). Names match the vision registry where the method is the same
(``full``, ``linear``, ``bitfit``, ``adapter_houlsby``, ``peft_lora``, ...), so one sweep space can name both.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from torch import nn

from gist_ray.errors import ConfigError
from gist_ray.typed_config import from_dict
from gist_ray.text.families import TextFamily
from gist_ray.text.methods.base import TEXT_METHODS, TextMethodSpec, register_text_method

__all__ = ["TEXT_METHODS", "TextMethodSpec", "register_text_method", "apply_text_method", "text_method_config"]


def _discover() -> None:
    for info in pkgutil.iter_modules(__path__):
        if info.name != "base" and not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")


_discover()


def text_method_config(name: str, options: dict | None, family: str | None = None, where: str = "method") -> Any:
    """The typed, validated config of text method ``name``; a ConfigError naming the field otherwise (also when
    the method is not defined on backbone family ``family``)."""
    try:
        spec = TEXT_METHODS.get(name)
    except KeyError as exc:
        raise ConfigError(f"{where}.name: {exc.args[0]}") from None
    if family is not None and family not in spec.families:
        raise ConfigError(f"{where}.name: {name} is defined on {'/'.join(spec.families)} text encoders, not on "
                          f"{family}; see docs/text.md")
    return from_dict(spec.config_cls, options or {}, where)


def apply_text_method(encoder: nn.Module, family: TextFamily, name: str, options: dict | None = None) -> Any:
    """Apply text method ``name`` with knobs ``options`` to ``encoder`` in place; returns the typed config."""
    cfg = text_method_config(name, options, family.name)
    TEXT_METHODS.get(name).apply(encoder, family, cfg)
    return cfg
