"""FGVC few-shot in NOAH's annotation format (dataset name ``fgvc``).

Layout (``data.root`` = ``<root>``, ``data.task`` = a name from :data:`FGVC_DATASETS`)::

    <root>/<dir>/annotations/train_meta.list.num_shot_<shots>.seed_<seed>   few-shot training list
    <root>/<dir>/annotations/val_meta.list
    <root>/<dir>/annotations/test_meta.list
    <root>/<dir>/images/<path>   or   <root>/<dir>/<path>

``<dir>`` is the task name or one of the spellings in :data:`DIR_ALIASES` (NOAH's ``food-101``,
``fgvc-aircraft``...), the first that exists. Each list line is ``<path> <label>``; ``<path>`` is looked
up under ``<dir>/images/`` first, then under ``<dir>/`` (NOAH keeps Stanford Cars paths relative to the
dataset directory). ``<shots>`` / ``<seed>`` come from ``data.shots`` (1, 2, 4, 8, 16) and
``data.fewshot_seed`` (0, 1, 2). Splits: ``train`` (the few-shot list), ``val``, ``test``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gist_ray.errors import ConfigError
from gist_ray.data.base import DATASETS, VALIDATORS, Split
from gist_ray.data.listfile import ImageList, build_split, image_size, read_list, require_root

FGVC_DATASETS: dict[str, int] = {
    "food101": 101,
    "oxford_pets": 37,
    "stanford_cars": 196,
    "oxford_flowers102": 102,
    "fgvc_aircraft": 100,
}
DIR_ALIASES: dict[str, tuple[str, ...]] = {
    "food101": ("food101", "food-101"),
    "oxford_pets": ("oxford_pets", "oxford-pets", "oxford_iiit_pet"),
    "stanford_cars": ("stanford_cars", "stanford-cars", "standford-cars"),
    "oxford_flowers102": ("oxford_flowers102", "oxford-flowers102", "oxford_flowers"),
    "fgvc_aircraft": ("fgvc_aircraft", "fgvc-aircraft"),
}
STANDARD_SHOTS = (1, 2, 4, 8, 16)
STANDARD_SEEDS = (0, 1, 2)
SPLITS = ("train", "val", "test")


def train_list_name(shots: int, seed: int) -> str:
    return f"train_meta.list.num_shot_{shots}.seed_{seed}"


def list_path(dataset_dir: Path, split: str, shots: int, seed: int) -> Path:
    """The annotation file of ``split`` (``train`` depends on shots and seed)."""
    if split not in SPLITS:
        raise ConfigError(f"data split {split!r}: FGVC few-shot splits are {', '.join(SPLITS)}")
    name = train_list_name(shots, seed) if split == "train" else f"{split}_meta.list"
    return dataset_dir / "annotations" / name


def image_bases(dataset_dir: Path) -> list[Path]:
    return [dataset_dir / "images", dataset_dir]


def find_dataset_dir(root: Path, task: str) -> Path | None:
    for name in DIR_ALIASES.get(task, (task,)):
        if (root / name).is_dir():
            return root / name
    return None


def read_split(dataset_dir: Path, task: str, split: str, shots: int, seed: int) -> ImageList:
    """Parse and check one split's annotation list (no decoding)."""
    return read_list(list_path(dataset_dir, split, shots, seed), image_bases(dataset_dir), FGVC_DATASETS[task])


def _checked(cfg: Any, split: str) -> ImageList:
    root = require_root(cfg, "fgvc")
    if cfg.task not in FGVC_DATASETS:
        raise ConfigError(f"data.task: unknown FGVC dataset {cfg.task!r}; known: {', '.join(FGVC_DATASETS)}")
    ddir = find_dataset_dir(root, cfg.task)
    if ddir is None:
        raise ConfigError(f"data.root: no {cfg.task} directory under {root} "
                          f"(looked for {', '.join(DIR_ALIASES[cfg.task])})")
    lst = read_split(ddir, cfg.task, split, cfg.shots, cfg.fewshot_seed)
    lst.raise_problems()
    return lst


@VALIDATORS.register("fgvc")
def validate(cfg: Any, split: str) -> None:
    """Annotation file present and well formed, labels in range, every image file present."""
    _checked(cfg, split)


@DATASETS.register("fgvc")
def load(cfg: Any, split: str) -> Split:
    """One FGVC few-shot split of ``data.task``, decoded (or from the cache)."""
    lst = _checked(cfg, split)
    parts = {"kind": "fgvc", "dataset": cfg.task, "split": lst.path.name, "list": lst.sha256,
             "list_path": str(lst.path)}
    return build_split(lst.entries, FGVC_DATASETS[cfg.task], image_size(cfg), parts, split)
