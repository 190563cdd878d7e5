"""Image lists (``relative/path label`` per line) -> validated entries -> a cached, decoded :class:`Split`.

Every problem is reported as ``FILE:LINE: message`` before anything is decoded; loaders raise the first one
as :class:`~gist_ray.config.ConfigError`, ``gist-ray data check`` lists them all.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from gist_ray.errors import ConfigError
from gist_ray.data.base import Split
from gist_ray.data.cache import cached_split
from gist_ray.data.decode import DECODE_VERSION, DEFAULT_SIZE, decode_into


@dataclass(frozen=True)
class Entry:
    """One image: absolute path, label, where it was listed (``list:line``), and its size and mtime."""

    path: str
    label: int
    where: str
    size: int = 0
    mtime_ns: int = 0


@dataclass
class ImageList:
    """The parsed list: valid entries, one line per problem, and the SHA-256 of the file's bytes."""

    path: Path
    entries: list[Entry] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    sha256: str = ""

    def raise_problems(self) -> None:
        raise_first(self.problems)


def raise_first(problems: Sequence[str]) -> None:
    """Raise the first problem as a :class:`ConfigError` (saying how many more there are)."""
    if problems:
        more = f" (and {len(problems) - 1} more problem{'s' if len(problems) > 2 else ''})" if len(problems) > 1 else ""
        raise ConfigError(problems[0] + more)


def _find(rel: str, bases: Sequence[str]) -> tuple[str, int, int] | None:
    for base in bases:
        p = os.path.join(base, rel)
        try:
            st = os.stat(p)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode):
            return p, st.st_size, st.st_mtime_ns
    return None


def read_list(path: str | Path, bases: Path | Sequence[Path], num_classes: int) -> ImageList:
    """Parse ``path``: ``<image path relative to one of bases> <label>`` per line (blank lines skipped).

    Checks the file exists, each line's format, ``0 <= label < num_classes``, every image file exists and
    the list is not empty. Images are not opened here.
    """
    path = Path(path)
    bases = [str(bases)] if isinstance(bases, Path) else [str(b) for b in bases]
    out = ImageList(path)
    try:
        data = path.read_bytes()
        text = data.decode("utf-8")
    except FileNotFoundError:
        out.problems.append(f"{path}: list file not found")
        return out
    except (OSError, UnicodeDecodeError) as exc:
        out.problems.append(f"{path}: cannot read list file: {exc}")
        return out
    out.sha256 = hashlib.sha256(data).hexdigest()
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        where = f"{path}:{lineno}"
        fields = line.rsplit(None, 1)
        if len(fields) != 2:
            out.problems.append(f"{where}: expected '<image path> <label>', got {line!r}")
            continue
        rel, tok = fields
        try:
            label = int(tok)
        except ValueError:
            out.problems.append(f"{where}: label {tok!r} is not an integer")
            continue
        if not 0 <= label < num_classes:
            out.problems.append(f"{where}: label {label} out of range [0, {num_classes})")
            continue
        found = _find(rel, bases)
        if found is None:
            tried = " or ".join(os.path.join(b, rel) for b in bases)
            out.problems.append(f"{where}: image file not found: {tried}")
            continue
        p, size, mtime = found
        out.entries.append(Entry(p, label, where, size, mtime))
    if not out.entries and not out.problems:
        out.problems.append(f"{path}: no images listed (empty split)")
    return out


def files_digest(entries: Sequence[Entry]) -> str:
    """SHA-256 over every image's path, size and mtime (a changed or replaced image changes it)."""
    h = hashlib.sha256()
    for e in entries:
        h.update(f"{e.path}\t{e.size}\t{e.mtime_ns}\n".encode())
    return h.hexdigest()


def build_split(entries: Sequence[Entry], num_classes: int, size: int, parts: Mapping[str, Any],
                name: str) -> Split:
    """Decode (or open from the cache) ``entries`` at ``size`` x ``size``; ``parts`` join the cache key."""
    labels = np.array([e.label for e in entries], dtype=np.int64)
    key = {**parts, "files": files_digest(entries), "decode": DECODE_VERSION, "num_classes": num_classes}
    paths, wheres = [e.path for e in entries], [e.where for e in entries]
    images, labels_t = cached_split(key, labels, size, lambda out: decode_into(out, paths, wheres))
    return Split(images, labels_t, num_classes, name)


def image_size(cfg: Any) -> int:
    """The stored resolution: ``data.image_size`` or 224."""
    return int(cfg.image_size or DEFAULT_SIZE)


def require_root(cfg: Any, kind: str) -> Path:
    """``data.root`` as an existing directory, or a ConfigError naming the field."""
    if not cfg.root:
        raise ConfigError(f"data.root: required for data.name={kind} (the dataset root directory)")
    root = Path(cfg.root).expanduser().absolute()
    if not root.is_dir():
        raise ConfigError(f"data.root: directory not found: {root}")
    return root
