"""Decode once: a uint8 image cache per (dataset, split, resolution), memory-mapped from local disk.

The directory is ``<cache root>/data`` (:mod:`gist_ray.cache`; ``GIST_RAY_CACHE=off`` disables caching).
One entry is three files named ``<kind>-<dataset>-<split>-<size>-<key>``:

- ``.images.npy``: N x 3 x S x S uint8, a plain ``.npy`` (memory-mapped on load);
- ``.labels.npy``: N int64;
- ``.json``: the manifest (key, key parts, shape), written last: an entry without it does not exist.

``key`` is a hash of the key parts the loader passes (list file content hash, image paths with sizes and
mtimes, resolution, decode version), so any change to them makes a new entry. Files are written to a
temporary name and renamed; a ``filelock`` on ``.lock`` lets concurrent processes build an entry once.
Old entries are never deleted automatically; remove the directory (or entries) to reclaim space. Never
rewrite an entry's files in place: a process that has them mapped would fault (SIGBUS); delete or replace.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
import uuid
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
from filelock import FileLock

from gist_ray.cache import data_cache_dir
from gist_ray.errors import GistRayWarning

FORMAT = 1


def cache_key(parts: Mapping[str, Any]) -> str:
    """A stable hash of the key parts."""
    blob = json.dumps(dict(parts), sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def _stem(parts: Mapping[str, Any], size: int, key: str) -> str:
    label = "-".join(str(parts[k]) for k in ("kind", "dataset", "split") if k in parts)
    label = re.sub(r"[^A-Za-z0-9_.-]+", "_", label)[:80] or "split"
    return f"{label}-{size}-{key[:20]}"


def _paths(base: Path) -> tuple[Path, Path, Path]:
    return Path(f"{base}.images.npy"), Path(f"{base}.labels.npy"), Path(f"{base}.json")


def _open(base: Path, key: str, labels: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The entry at ``base`` if complete and matching; None otherwise."""
    img_path, lbl_path, man_path = _paths(base)
    try:
        manifest = json.loads(man_path.read_text())
        if manifest.get("key") != key or manifest.get("format") != FORMAT:
            return None
        # copy-on-write map: no copy, writable (torch.from_numpy warns on read-only arrays), file never modified
        images = np.load(img_path, mmap_mode="c")
        stored = np.load(lbl_path)
    except (OSError, ValueError):
        return None
    n = len(labels)
    if images.dtype != np.uint8 or images.shape != (n, 3, size, size) or not np.array_equal(stored, labels):
        return None
    return images, stored


def _replace_with(path: Path, write: Callable[[Path], None]) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _build(base: Path, key: str, parts: Mapping[str, Any], labels: np.ndarray, size: int,
           fill: Callable[[np.ndarray], None]) -> None:
    img_path, lbl_path, man_path = _paths(base)
    man_path.unlink(missing_ok=True)  # the entry stops existing until it is complete again
    shape = (len(labels), 3, size, size)

    def write_images(tmp: Path) -> None:
        arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
        try:
            fill(arr)
            arr.flush()
        finally:
            del arr
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())

    def write_labels(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.save(f, labels)

    def write_manifest(tmp: Path) -> None:
        manifest = {"format": FORMAT, "key": key, "parts": dict(parts), "shape": list(shape), "dtype": "uint8",
                    "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        tmp.write_text(json.dumps(manifest, indent=1, default=str))

    _replace_with(img_path, write_images)
    _replace_with(lbl_path, write_labels)
    _replace_with(man_path, write_manifest)


def _to_torch(images: np.ndarray, labels: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.from_numpy(images), torch.from_numpy(np.ascontiguousarray(labels, dtype=np.int64))


def cached_split(parts: Mapping[str, Any], labels: np.ndarray, size: int,
                 fill: Callable[[np.ndarray], None]) -> tuple[torch.Tensor, torch.Tensor]:
    """(images N x 3 x size x size uint8, labels) from the cache, built with ``fill(out)`` on a miss.

    ``parts`` identify the content (hashed into the key; include ``kind``, ``dataset``, ``split`` for a
    readable file name); ``fill`` decodes every image into the N x 3 x size x size array it is given.
    A hit opens no image file; the returned images are a memory map of the cache file.
    """
    labels = np.ascontiguousarray(labels, dtype=np.int64)
    directory = data_cache_dir()
    if directory is None:
        out = np.empty((len(labels), 3, size, size), dtype=np.uint8)
        fill(out)
        return _to_torch(out, labels)
    key = cache_key({**parts, "size": size})
    base = directory / _stem(parts, size, key)
    hit = _open(base, key, labels, size)
    if hit is None:
        try:
            directory.mkdir(parents=True, exist_ok=True)
            lock = FileLock(f"{base}.lock")
            lock.acquire()
        except OSError as exc:
            warnings.warn(f"data cache {directory} not usable ({exc}); decoding in memory", GistRayWarning,
                          stacklevel=2)
            out = np.empty((len(labels), 3, size, size), dtype=np.uint8)
            fill(out)
            return _to_torch(out, labels)
        try:
            hit = _open(base, key, labels, size)  # another process may have built it meanwhile
            if hit is None:
                _build(base, key, parts, labels, size, fill)
                hit = _open(base, key, labels, size)
                if hit is None:
                    raise OSError(f"data cache entry {base} unreadable right after writing it")
        finally:
            lock.release()
    return _to_torch(*hit)
