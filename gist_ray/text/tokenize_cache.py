"""Tokenise once: a cache entry per (dataset, task, split, source, tokenizer, max length), like the image cache.

Entries live next to the image cache (``$GIST_RAY_CACHE`` or ``~/.cache/gist-ray/data``; ``GIST_RAY_CACHE=off``
tokenises in memory every time), as two files named ``text-<dataset>-<task>-<split>-<max_length>-<key>``:

- ``.npz``: the flat token ids (int32), row offsets, segment ids (uint8, if the tokenizer has them), labels and
  gold scores (STS-B), uncompressed;
- ``.json``: the manifest (key, key parts, row and token counts), written last: an entry without it does not
  exist.

The key hashes the parts the caller passes (which file or dataset fingerprint the rows came from) with the
tokenizer's fingerprint (its full serialised definition: vocabulary, normaliser, template) and ``max_length``; a
change to any of them makes a new entry. A hit reads no source file and runs no tokenizer. Files are written to a
temporary name and renamed; a ``filelock`` on ``.lock`` lets concurrent processes (sweep trials) build an entry
once.
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
from filelock import FileLock

from gist_ray.cache import data_cache_dir
from gist_ray.data.cache import cache_key
from gist_ray.errors import GistRayWarning
from gist_ray.text.splits import RawSplit, TextSplit, pad_id_of, split_from_arrays, tokenize_arrays

FORMAT = 1


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """A hash of everything that decides a tokenizer's output (a fast tokenizer's serialised form without the
    per-call truncation / padding state, else its vocabulary and special tokens)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        state = json.loads(backend.to_str())
        for transient in ("truncation", "padding"):  # set per call by the tokenizer wrapper, not part of its identity
            state.pop(transient, None)
        blob = json.dumps(state, sort_keys=True)
    else:
        blob = json.dumps(sorted(tokenizer.get_vocab().items()))
    extra = json.dumps({"cls": type(tokenizer).__name__, "special": tokenizer.special_tokens_map,
                        "inputs": list(getattr(tokenizer, "model_input_names", []))}, sort_keys=True, default=str)
    return hashlib.sha256((blob + extra).encode()).hexdigest()


def _stem(parts: Mapping[str, Any], max_length: int, key: str) -> str:
    label = "-".join(str(parts[k]) for k in ("dataset", "task", "split") if k in parts)
    label = re.sub(r"[^A-Za-z0-9_.-]+", "_", label)[:80] or "split"
    return f"text-{label}-{max_length}-{key[:20]}"


def _read(base: Path, key: str) -> dict[str, np.ndarray] | None:
    try:
        manifest = json.loads(Path(f"{base}.json").read_text())
        if manifest.get("key") != key or manifest.get("format") != FORMAT:
            return None
        with np.load(f"{base}.npz") as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, KeyError):
        return None
    if len(arrays.get("labels", ())) != manifest.get("rows") or len(arrays.get("ids", ())) != manifest.get("tokens"):
        return None
    return arrays


def _replace_with(path: Path, write: Callable[[Path], None]) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _write(base: Path, key: str, parts: Mapping[str, Any], arrays: dict[str, np.ndarray]) -> None:
    man = Path(f"{base}.json")
    man.unlink(missing_ok=True)  # the entry stops existing until it is complete again

    def write_arrays(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())

    def write_manifest(tmp: Path) -> None:
        manifest = {"format": FORMAT, "key": key, "parts": dict(parts), "rows": len(arrays["labels"]),
                    "tokens": len(arrays["ids"]), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        tmp.write_text(json.dumps(manifest, indent=1, default=str))

    _replace_with(Path(f"{base}.npz"), write_arrays)
    _replace_with(man, write_manifest)


def cached_tokenized(parts: Mapping[str, Any], tokenizer: Any, max_length: int, num_classes: int,
                     load_raw: Callable[[], RawSplit]) -> TextSplit:
    """The tokenised split from the cache, built on a miss with ``load_raw()`` and the tokenizer.

    ``parts`` identify the rows (include ``dataset``, ``task``, ``split`` for a readable file name, and whatever
    identifies the source: file size and mtime, a dataset fingerprint, generator settings).
    """
    if max_length < 2:
        raise ValueError(f"max_length must be >= 2, got {max_length}")
    pad = pad_id_of(tokenizer)
    name, task = str(parts.get("split", "")), str(parts.get("task", ""))

    def build() -> dict[str, np.ndarray]:
        return tokenize_arrays(load_raw(), tokenizer, max_length)

    directory = data_cache_dir()
    if directory is None:
        return split_from_arrays(build(), num_classes, pad, name, task)
    full = {**parts, "tokenizer": tokenizer_fingerprint(tokenizer), "max_length": max_length, "format": FORMAT}
    key = cache_key(full)
    base = directory / _stem(parts, max_length, key)
    arrays = _read(base, key)
    if arrays is None:
        try:
            directory.mkdir(parents=True, exist_ok=True)
            lock = FileLock(f"{base}.lock")
            lock.acquire()
        except OSError as exc:
            warnings.warn(f"data cache {directory} not usable ({exc}); tokenising in memory", GistRayWarning,
                          stacklevel=2)
            return split_from_arrays(build(), num_classes, pad, name, task)
        try:
            arrays = _read(base, key)  # another process may have built it meanwhile
            if arrays is None:
                _write(base, key, full, build())
                arrays = _read(base, key)
                if arrays is None:
                    raise OSError(f"tokenisation cache entry {base} unreadable right after writing it")
        finally:
            lock.release()
    return split_from_arrays(arrays, num_classes, pad, name, task)
