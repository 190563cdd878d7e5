"""Where gist-ray caches things: ``$GIST_RAY_CACHE`` (default ``~/.cache/gist-ray``).

``<root>/data`` holds decoded datasets, ``<root>/backbones`` the synthetic-pretrained ``vit_synth_*`` weights.
``GIST_RAY_CACHE=off`` turns the data cache off; backbones then go to the default root (pretraining them again
for every run would cost minutes, and they are small).
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "GIST_RAY_CACHE"
OFF = ("off", "none", "0", "false", "no")
DEFAULT_ROOT = Path.home() / ".cache" / "gist-ray"


def _env() -> str:
    return os.environ.get(CACHE_ENV, "").strip()


def caching_enabled() -> bool:
    return _env().lower() not in OFF


def cache_root() -> Path:
    """The cache root; the default one when caching is off."""
    env = _env()
    return Path(env).expanduser() if env and caching_enabled() else DEFAULT_ROOT


def data_cache_dir() -> Path | None:
    """Decoded datasets, or None when the data cache is off."""
    return cache_root() / "data" if caching_enabled() else None


def backbones_dir() -> Path:
    return cache_root() / "backbones"
