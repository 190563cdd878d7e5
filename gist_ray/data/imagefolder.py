"""Any ``<root>/<split>/<class_name>/*.{jpg,jpeg,png}`` tree (dataset name ``imagefolder``).

``data.root`` = ``<root>``; a split is a directory under it (``data.train_split`` etc. name them). Classes are
the sorted union of the class directory names of every split, so indices agree across splits even when a
split lacks a class. Files with other extensions are ignored; extensions match case-insensitively.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gist_ray.errors import ConfigError
from gist_ray.data.base import DATASETS, VALIDATORS, Split
from gist_ray.data.listfile import Entry, build_split, files_digest, image_size, raise_first, require_root

EXTENSIONS = (".jpg", ".jpeg", ".png")


def split_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def class_names(root: Path) -> list[str]:
    """Sorted union of ``<root>/<split>/<class>`` directory names."""
    names = {c.name for s in split_dirs(root) for c in s.iterdir() if c.is_dir() and not c.name.startswith(".")}
    return sorted(names)


def scan(root: Path, split: str, classes: list[str]) -> tuple[list[Entry], list[str]]:
    """Entries of ``<root>/<split>`` (sorted by class, then file name) and its problems."""
    sdir = root / split
    if not sdir.is_dir():
        known = ", ".join(p.name for p in split_dirs(root)) or "none"
        return [], [f"{sdir}: split directory not found (splits under {root}: {known})"]
    index = {c: i for i, c in enumerate(classes)}
    entries = []
    for cdir in sorted(p for p in sdir.iterdir() if p.is_dir() and p.name in index):
        for f in sorted(cdir.iterdir()):
            if f.suffix.lower() in EXTENSIONS and f.is_file():
                st = f.stat()
                entries.append(Entry(str(f), index[cdir.name], str(f), st.st_size, st.st_mtime_ns))
    if not entries:
        return [], [f"{sdir}: no images (*{', *'.join(EXTENSIONS)}) in any class directory (empty split)"]
    return entries, []


def _checked(cfg: Any, split: str) -> tuple[Path, list[str], list[Entry]]:
    root = require_root(cfg, "imagefolder")
    classes = class_names(root)
    if not classes:
        raise ConfigError(f"data.root: no <split>/<class>/ directories under {root}")
    entries, problems = scan(root, split, classes)
    raise_first(problems)
    return root, classes, entries


@VALIDATORS.register("imagefolder")
def validate(cfg: Any, split: str) -> None:
    """Split directory present and non-empty."""
    _checked(cfg, split)


@DATASETS.register("imagefolder")
def load(cfg: Any, split: str) -> Split:
    """``<root>/<split>`` decoded (or from the cache); labels index the sorted class names."""
    root, classes, entries = _checked(cfg, split)
    parts = {"kind": "imagefolder", "dataset": root.name, "split": split, "root": str(root),
             "classes": "\n".join(classes), "list": files_digest(entries)}
    return build_split(entries, len(classes), image_size(cfg), parts, split)
