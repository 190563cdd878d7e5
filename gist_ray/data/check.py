"""``gist-ray data check ROOT``: every problem of a dataset tree, one line each, before any training.

Checks list files (present, well formed), labels (in range; as many distinct labels as the dataset has
classes), image files (present; with ``decode=True`` fully decodable). ``root`` is the collection root
(every known dataset directory found under it is checked) or a single dataset directory.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

from gist_ray.errors import ConfigError
from gist_ray.data import fgvc, imagefolder, vtab
from gist_ray.data.decode import decode_error, default_workers, verify_image
from gist_ray.data.listfile import Entry, ImageList

KINDS = ("vtab", "fgvc", "imagefolder")


def decode_problems(entries: Sequence[Entry], workers: int | None = None) -> list[str]:
    """One line per image that does not decode (each file once, named at its first ``list:line``)."""
    first: dict[str, Entry] = {}
    for e in entries:
        first.setdefault(e.path, e)

    def one(e: Entry) -> str | None:
        try:
            verify_image(e.path)
        except Exception as exc:  # any Pillow failure is a problem to report
            return decode_error(e.where, e.path, exc)
        return None

    with ThreadPoolExecutor(workers or default_workers()) as pool:
        return [p for p in pool.map(one, first.values()) if p]


def _lists_problems(lists: Sequence[ImageList], known: int | None, where: Path, decode: bool) -> list[str]:
    problems = [p for lst in lists for p in lst.problems]
    entries = [e for lst in lists for e in lst.entries]
    labels = {e.label for e in entries}
    if known is not None and labels and len(labels) != known:
        problems.append(f"{where}: the lists use {len(labels)} distinct labels, expected {known} classes")
    if decode:
        problems += decode_problems(entries)
    return problems


def _check_vtab(root: Path, decode: bool) -> list[str]:
    if any((root / f).is_file() for f in vtab.SPLIT_FILES.values()):  # a single dataset directory
        if root.name not in vtab.VTAB_DATASETS:
            return [f"{root}: unknown VTAB dataset directory name {root.name!r}; "
                    f"known: {', '.join(vtab.VTAB_DATASETS)}"]
        dirs = [root]
    else:
        dirs = [root / name for name in vtab.VTAB_DATASETS if (root / name).is_dir()]
    if not dirs:
        return [f"{root}: no VTAB dataset directories (expected some of: {', '.join(vtab.VTAB_DATASETS)})"]
    problems = []
    for d in dirs:
        lists = [vtab.read_split(d, d.name, s) for s in vtab.SPLIT_FILES]
        problems += _lists_problems(lists, vtab.num_classes(d.name), d, decode)
    return problems


def _check_fgvc(root: Path, decode: bool) -> list[str]:
    if (root / "annotations").is_dir():  # a single dataset directory
        tasks = [t for t, names in fgvc.DIR_ALIASES.items() if root.name in names]
        if not tasks:
            return [f"{root}: unknown FGVC dataset directory name {root.name!r}; "
                    f"known: {', '.join(n for names in fgvc.DIR_ALIASES.values() for n in names)}"]
        found = [(tasks[0], root)]
    else:
        found = [(t, d) for t in fgvc.FGVC_DATASETS if (d := fgvc.find_dataset_dir(root, t)) is not None]
    if not found:
        return [f"{root}: no FGVC dataset directories (expected some of: {', '.join(fgvc.FGVC_DATASETS)})"]
    problems = []
    for task, d in found:
        lists = [fgvc.read_split(d, task, s, 1, 0) for s in ("val", "test")]
        lists += [fgvc.read_split(d, task, "train", k, s) for k in fgvc.STANDARD_SHOTS for s in fgvc.STANDARD_SEEDS]
        problems += _lists_problems(lists, fgvc.FGVC_DATASETS[task], d, decode)
    return problems


def _check_imagefolder(root: Path, decode: bool) -> list[str]:
    classes = imagefolder.class_names(root)
    if not classes:
        return [f"{root}: no <split>/<class>/ directories"]
    problems: list[str] = []
    entries: list[Entry] = []
    for sdir in imagefolder.split_dirs(root):
        found, probs = imagefolder.scan(root, sdir.name, classes)
        entries += found
        problems += probs
    if decode:
        problems += decode_problems(entries)
    return problems


def check_dataset_root(root: str, kind: str = "vtab", decode: bool = True) -> list[str]:
    """Every problem found under ``root`` for a ``kind`` tree (vtab, fgvc, imagefolder); empty when clean."""
    if kind not in KINDS:
        raise ConfigError(f"unknown dataset kind {kind!r}; known: {', '.join(KINDS)}")
    path = Path(root).expanduser().absolute()
    if not path.is_dir():
        return [f"{path}: directory not found"]
    check = {"vtab": _check_vtab, "fgvc": _check_fgvc, "imagefolder": _check_imagefolder}[kind]
    return check(path, decode)
