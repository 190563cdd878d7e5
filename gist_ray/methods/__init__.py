"""PEFT methods, one file each, registered by name in :data:`METHODS`.

A method is ``apply(vit, cfg)``: it edits a frozen timm VisionTransformer in place, adding trainable modules
or unfreezing existing parameters. It never knows about the Gist token. Every module in this package is
imported on first use, so adding a method is adding one file (plus its row in the registry tests).
"""

from __future__ import annotations

import importlib
import pkgutil

from gist_ray.methods.base import METHODS, MethodSpec, register_method

__all__ = ["METHODS", "MethodSpec", "register_method", "apply_method"]


def _discover() -> None:
    for info in pkgutil.iter_modules(__path__):
        if info.name != "base" and not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")


_discover()


def apply_method(vit, name: str, options: dict | None = None):
    """Apply method ``name`` with its knobs ``options`` to ``vit``; returns the typed method config."""
    from gist_ray.config import from_dict

    spec = METHODS.get(name)
    cfg = from_dict(spec.config_cls, options or {}, "method")
    spec.apply(vit, cfg)
    return cfg
