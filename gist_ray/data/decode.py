"""Image decoding shared by the file-based loaders: PIL open -> RGB -> bicubic resize to size x size -> uint8 CHW.

Direct resize, no crop, no augmentation (the GIST/VTAB protocol). Pillow is imported lazily so that
``gist_ray.data`` imports without it.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import numpy as np

from gist_ray.console import Progress
from gist_ray.errors import ConfigError

# Bump when decoding changes (resampling, colour conversion): it is part of every cache key.
DECODE_VERSION = 1
DEFAULT_SIZE = 224


def decode_image(path: str | os.PathLike, size: int) -> np.ndarray:
    """One image file as a uint8 array 3 x size x size."""
    from PIL import Image

    with Image.open(path) as im:
        rgb = im.convert("RGB")
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1)


def verify_image(path: str | os.PathLike) -> None:
    """Fully decode ``path`` (no resize); raise if it is not a readable image."""
    from PIL import Image

    with Image.open(path) as im:
        im.load()


def default_workers() -> int:
    """Decode threads: the CPUs this process may use, at most 8 (Pillow releases the GIL while decoding)."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        n = os.cpu_count() or 1
    return max(1, min(8, n))


def decode_error(where: str, path: str, exc: BaseException) -> str:
    """``where: cannot decode image PATH: reason`` (``where`` is a ``list:line`` or the image itself)."""
    what = f"cannot decode image {path}" if where != path else "cannot decode image"
    return f"{where}: {what}: {type(exc).__name__}: {exc}"


def decode_into(out: np.ndarray, paths: Sequence[str], where: Sequence[str], workers: int | None = None) -> None:
    """Decode ``paths[i]`` into ``out[i]`` (N x 3 x S x S uint8) with a thread pool, with a progress bar when it
    takes long (:class:`gist_ray.console.Progress`).

    The first unreadable image raises :class:`ConfigError` naming ``where[i]`` (its list file and line).
    """
    size = out.shape[-1]
    stop = threading.Event()
    first = str(where[0]) if len(where) else "images"
    source = first.rsplit(":", 1)[0] if ":" in first else os.path.dirname(first)  # a list file, or a folder
    bar = Progress(len(paths), f"decoding {source}")

    def one(i: int) -> None:
        if stop.is_set():
            return
        try:
            out[i] = decode_image(paths[i], size)
        except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError, DecompressionBombError...
            stop.set()
            raise ConfigError(decode_error(where[i], paths[i], exc)) from None
        bar.update()

    workers = workers or default_workers()
    with bar:
        if workers == 1 or len(paths) < 2:
            for i in range(len(paths)):
                one(i)
            return
        with ThreadPoolExecutor(workers, thread_name_prefix="gist-decode") as pool:
            for _ in pool.map(one, range(len(paths))):
                pass
