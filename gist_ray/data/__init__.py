"""Datasets, registered by name in :data:`DATASETS`; each returns decoded uint8 tensors per split."""

from __future__ import annotations

import importlib
import pkgutil

from gist_ray.data.base import DATASETS, VALIDATORS, Split, load_splits, preflight, validate_splits

__all__ = ["DATASETS", "VALIDATORS", "Split", "load_splits", "preflight", "validate_splits"]


def _discover() -> None:
    for info in pkgutil.iter_modules(__path__):
        if info.name != "base" and not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")


_discover()
