"""Training objectives, one file each, registered by name in :data:`OBJECTIVES`: ``gist`` (the default), ``ce``,
``byot``, ``cs_kd``, ``uskd``.

Adding an objective is adding one file (a config dataclass with its authors' defaults, an
:class:`~gist_ray.objectives.base.Objective` declaring its :class:`~gist_ray.objectives.base.Needs`, the
registration) plus its row in ``tests/test_objectives.py``. The training loop calls ``objective.step`` and logs
whatever parts it returns.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from typing import Any

from gist_ray.errors import ConfigError
from gist_ray.objectives.base import (
    OBJECTIVES,
    BuildContext,
    Needs,
    Objective,
    ObjectiveSpec,
    Outputs,
    Step,
    register_objective,
)
from gist_ray.typed_config import from_dict

__all__ = ["OBJECTIVES", "BuildContext", "Needs", "Objective", "ObjectiveSpec", "Outputs", "Step",
           "register_objective", "build_objective", "objective_knobs", "typed_objective", "uses_gist_token"]

_NOT_OBJECTIVES = {"base", "taps"}


def _discover() -> None:
    for info in pkgutil.iter_modules(__path__):
        if info.name not in _NOT_OBJECTIVES and not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")


_discover()


def typed_objective(name: str, options: dict | None = None, where: str = "objective") -> Any:
    """The typed, validated config of objective ``name`` from its knobs."""
    try:
        spec = OBJECTIVES.get(name)
    except KeyError as exc:
        raise ConfigError(f"{where}.name: {exc.args[0]}") from None
    return from_dict(spec.config_cls, options or {}, where)


def build_objective(name: str, options: dict | None, ctx: BuildContext) -> Objective:
    """Objective ``name`` with knobs ``options`` for the backbone ``ctx.net`` (method applied)."""
    return OBJECTIVES.get(name).build(typed_objective(name, options), ctx)


def objective_knobs(name: str) -> set[str] | None:
    """The knob names of objective ``name`` (None for an unknown one: the config check names it)."""
    if name not in OBJECTIVES:
        return None
    cls = OBJECTIVES.get(name).config_cls
    return {f.name for f in dataclasses.fields(cls)} | {a for f in dataclasses.fields(cls)
                                                         for a in f.metadata.get("aliases", ())}


def uses_gist_token(name: str) -> bool:
    """Whether objective ``name`` uses the Gist token (unknown names: False; the config check names them)."""
    return name in OBJECTIVES and OBJECTIVES.get(name).gist_token
