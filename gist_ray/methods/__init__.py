"""PEFT methods, one file each, registered by name in :data:`METHODS`.

A method is ``apply(vit, cfg)``: it edits a frozen timm VisionTransformer in place, adding trainable modules
or unfreezing existing parameters. It never knows about the Gist token. Every module in this package is
imported on first use, so adding a method is adding one file (plus its row in the registry tests).
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil

from gist_ray.blocks import family
from gist_ray.errors import ConfigError
from gist_ray.methods.base import METHODS, MethodSpec, register_method
from gist_ray.typed_config import from_dict

__all__ = ["METHODS", "MethodSpec", "register_method", "apply_method", "method_families", "method_knobs",
           "require_family"]


def _discover() -> None:
    for info in pkgutil.iter_modules(__path__):
        if info.name != "base" and not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")


_discover()


def apply_method(vit, name: str, options: dict | None = None):
    """Apply method ``name`` with its knobs ``options`` to ``vit``; returns the typed method config."""
    spec = METHODS.get(name)
    cfg = from_dict(spec.config_cls, options or {}, "method")
    require_family(name, cfg, family(vit), type(vit).__name__)  # a combination's parts too
    spec.apply(vit, cfg)
    return cfg


def method_families(name: str, cfg) -> tuple[str, ...]:
    """The backbone families method ``name`` with typed config ``cfg`` runs on (for a combination: those all
    its parts run on)."""
    families = METHODS.get(name).families
    for part_name, part_cfg in getattr(cfg, "parts", lambda: [])():
        families = tuple(f for f in families if f in method_families(part_name, part_cfg))
    return families


def require_family(name: str, cfg, fam: str, backbone: str, where: str = "method") -> None:
    """A ConfigError naming the method (or, in a combination, the part) not defined on backbone family ``fam``."""
    spec = METHODS.get(name)
    if fam not in spec.families:
        raise ConfigError(f"{where}.name: {name} is defined on {'/'.join(spec.families)} backbones, not on {fam} "
                          f"({backbone}); see docs/methods.md")
    for i, (part_name, part_cfg) in enumerate(getattr(cfg, "parts", lambda: [])()):
        require_family(part_name, part_cfg, fam, backbone, f"{where}.methods[{i}]")


def method_knobs(name: str) -> set[str] | None:
    """The knob names of method ``name`` (None for an unknown method: the config check names it)."""
    if name not in METHODS:
        return None
    return {f.name for f in dataclasses.fields(METHODS.get(name).config_cls)}
