"""The text PEFT method registry and the helpers text methods share.

A text method is ``apply(encoder, family, cfg)``: it edits a frozen Hugging Face encoder in place (adding
trainable modules or unfreezing parameters) and never knows about the Gist token or the head. Its ``count``
is the closed-form number of trainable parameters it adds, from the encoder's shapes (tests hold the built model
to it). ``families`` are the :data:`gist_ray.text.families.FAMILIES` it is defined on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable

from torch import nn

from gist_ray.errors import ConfigError
from gist_ray.registry import Registry
from gist_ray.text.families import SITES, TextFamily


@dataclass(frozen=True)
class TextMethodSpec:
    """A registered text PEFT method: its config dataclass, ``apply``, closed-form ``count``, where it runs."""

    name: str
    config_cls: type
    apply: Callable[[nn.Module, TextFamily, Any], None]
    count: Callable[[nn.Module, TextFamily, Any], int]
    families: tuple[str, ...]
    paper: str = ""
    reference: str = ""  # the reference implementation followed: repository and file


TEXT_METHODS: Registry[TextMethodSpec] = Registry("text PEFT method")


def register_text_method(name: str, config_cls: type, count: Callable[[nn.Module, TextFamily, Any], int],
                         families: tuple[str, ...] = ("bert", "t5"), paper: str = "",
                         reference: str = "") -> Callable:
    """Decorator for an ``apply(encoder, family, cfg)`` function."""

    def deco(apply: Callable[[nn.Module, TextFamily, Any], None]) -> Callable:
        TEXT_METHODS.add(name, TextMethodSpec(name, config_cls, apply, count, tuple(families), paper, reference))
        return apply

    return deco


def check_sites(sites: list[str], where: str, field: str = "targets") -> None:
    """A ConfigError naming ``where.field`` unless ``sites`` is a non-empty list of :data:`SITES` names."""
    bad = [s for s in sites if s not in SITES]
    if not sites or bad:
        raise ConfigError(f"{where}.{field}: expected a non-empty list of {list(SITES)}, got {sites!r}")


def site_linears(encoder: nn.Module, family: TextFamily, sites: list[str]) -> list[tuple[str, str, nn.Linear]]:
    """(site, module name, linear) of every linear layer at ``sites`` in ``encoder``, in module order."""
    patterns = {s: re.compile(family.site_patterns[s]) for s in sites}
    found = []
    for name, module in encoder.named_modules():
        for site, pat in patterns.items():
            if pat.fullmatch(name) and isinstance(module, nn.Linear):
                found.append((site, name, module))
    return found
