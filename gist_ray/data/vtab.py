"""VTAB-1k in the list-file layout of the NOAH / SSF / FacT / GIST codebases (dataset name ``vtab``).

Layout (``data.root`` = ``<root>``, ``data.task`` = a directory name from :data:`VTAB_DATASETS`)::

    <root>/<dataset>/train800.txt         800 lines  ``relative/image/path label``
    <root>/<dataset>/val200.txt           200 lines
    <root>/<dataset>/train800val200.txt   1000 lines (the refit split)
    <root>/<dataset>/test.txt             the full test set
    <root>/<dataset>/<relative/image/path>

Image paths are relative to ``<root>/<dataset>/``. Splits: ``train800``, ``val200``, ``train800val200``,
``test``; ``train``, ``val``, ``trainval`` are aliases of the first three. Images are resized directly
(bicubic, no crop) to ``data.image_size`` (default 224) and cached decoded (:mod:`gist_ray.data.cache`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gist_ray.errors import ConfigError
from gist_ray.data.base import DATASETS, VALIDATORS, Split
from gist_ray.data.listfile import ImageList, build_split, image_size, read_list, require_root

NATURAL, SPECIALIZED, STRUCTURED = "Natural", "Specialized", "Structured"

# directory name -> (number of classes, VTAB group)
VTAB_DATASETS: dict[str, tuple[int, str]] = {
    "cifar": (100, NATURAL),
    "caltech101": (102, NATURAL),
    "dtd": (47, NATURAL),
    "oxford_flowers102": (102, NATURAL),
    "oxford_iiit_pet": (37, NATURAL),
    "svhn": (10, NATURAL),
    "sun397": (397, NATURAL),
    "patch_camelyon": (2, SPECIALIZED),
    "eurosat": (10, SPECIALIZED),
    "resisc45": (45, SPECIALIZED),
    "diabetic_retinopathy": (5, SPECIALIZED),
    "clevr_count": (8, STRUCTURED),
    "clevr_dist": (6, STRUCTURED),
    "dmlab": (6, STRUCTURED),
    "kitti": (4, STRUCTURED),
    "dsprites_loc": (16, STRUCTURED),
    "dsprites_ori": (16, STRUCTURED),
    "smallnorb_azi": (18, STRUCTURED),
    "smallnorb_ele": (9, STRUCTURED),
}

SPLIT_FILES = {"train800": "train800.txt", "val200": "val200.txt", "train800val200": "train800val200.txt",
               "test": "test.txt"}
SPLIT_ALIASES = {"train": "train800", "val": "val200", "trainval": "train800val200"}


def num_classes(dataset: str) -> int:
    return VTAB_DATASETS[dataset][0]


def group(dataset: str) -> str:
    return VTAB_DATASETS[dataset][1]


def canonical_split(split: str) -> str:
    """``train`` -> ``train800`` etc.; ConfigError for an unknown split name."""
    name = SPLIT_ALIASES.get(split, split)
    if name not in SPLIT_FILES:
        raise ConfigError(f"data split {split!r}: VTAB splits are {', '.join(SPLIT_FILES)} "
                          f"(aliases: {', '.join(f'{a}={b}' for a, b in SPLIT_ALIASES.items())})")
    return name


def read_split(dataset_dir: Path, dataset: str, split: str) -> ImageList:
    """Parse and check one split's list file (no decoding)."""
    return read_list(dataset_dir / SPLIT_FILES[canonical_split(split)], dataset_dir, num_classes(dataset))


def _dataset_dir(cfg: Any) -> Path:
    root = require_root(cfg, "vtab")
    if cfg.task not in VTAB_DATASETS:
        raise ConfigError(f"data.task: unknown VTAB dataset {cfg.task!r}; known: {', '.join(VTAB_DATASETS)}")
    ddir = root / cfg.task
    if not ddir.is_dir():
        raise ConfigError(f"data.root: no directory {cfg.task!r} under {root} (expected {ddir})")
    return ddir


def _checked(cfg: Any, split: str) -> tuple[Path, ImageList]:
    ddir = _dataset_dir(cfg)
    lst = read_split(ddir, cfg.task, split)
    lst.raise_problems()
    return ddir, lst


@VALIDATORS.register("vtab")
def validate(cfg: Any, split: str) -> None:
    """List file present and well formed, labels in range, every image file present."""
    _checked(cfg, split)


@DATASETS.register("vtab")
def load(cfg: Any, split: str) -> Split:
    """One VTAB-1k split of ``data.task`` under ``data.root``, decoded (or from the cache)."""
    ddir, lst = _checked(cfg, split)
    canon = canonical_split(split)
    parts = {"kind": "vtab", "dataset": cfg.task, "split": canon, "list": lst.sha256, "list_path": str(lst.path)}
    return build_split(lst.entries, num_classes(cfg.task), image_size(cfg), parts, split)
