"""Small real image trees for tests: VTAB-1k lists, FGVC few-shot annotations, an image folder.

Images are 32 x 32 (by default) PNG and JPEG files whose colour depends on the class, so a model can learn them.
Import from any test: ``from data_fixtures import make_vtab_tree``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
import pytest

VTAB_SPLIT_SIZES = {"train800": 8, "val200": 4, "test": 6}


def write_image(path: Path, label: int, rng: np.random.Generator, size: int = 32) -> Path:
    """A class-coloured noisy RGB image; the format follows the suffix (.png, .jpg, .jpeg)."""
    from PIL import Image

    base = np.array([(label * 97) % 256, (label * 53 + 80) % 256, (label * 31 + 160) % 256], dtype=np.float32)
    img = base[None, None, :] + rng.normal(0, 20, size=(size, size, 3))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path)
    return path


def _lines(paths_labels: Iterable[tuple[str, int]]) -> str:
    return "".join(f"{p} {y}\n" for p, y in paths_labels)


def make_vtab_tree(root: str | Path, dataset: str = "dtd", n_classes: int = 2,
                   sizes: dict[str, int] | None = None, image_size: int = 32, seed: int = 0) -> Path:
    """``<root>/<dataset>/`` with train800/val200/train800val200/test lists over ``n_classes`` labels.

    ``sizes`` gives the number of images of train800, val200 and test (default 8, 4, 6); labels cycle
    0..n_classes-1; even images are PNG, odd ones JPEG. Returns the dataset directory.
    """
    sizes = {**VTAB_SPLIT_SIZES, **(sizes or {})}
    rng = np.random.default_rng(seed)
    ddir = Path(root) / dataset
    lists: dict[str, list[tuple[str, int]]] = {}
    for split in ("train800", "val200", "test"):
        lists[split] = []
        for i in range(sizes[split]):
            label = i % n_classes
            rel = f"images/{split}/{i:04d}.{'png' if i % 2 == 0 else 'jpg'}"
            write_image(ddir / rel, label, rng, image_size)
            lists[split].append((rel, label))
    lists["train800val200"] = lists["train800"] + lists["val200"]
    for split, items in lists.items():
        (ddir / f"{split}.txt").write_text(_lines(items))
    return ddir


def make_fgvc_tree(root: str | Path, dataset: str = "oxford_pets", n_classes: int = 2, per_class: int = 3,
                   shots: Iterable[int] = (1, 2), seeds: Iterable[int] = (0, 1), n_val: int = 2, n_test: int = 4,
                   image_size: int = 32, seed: int = 0) -> Path:
    """``<root>/<dataset>/images/<class>/<i>.jpg`` plus NOAH-style ``annotations/*meta.list*`` files.

    The few-shot training list for (k, s) holds k images per class chosen with seed s. Returns the dataset dir.
    """
    rng = np.random.default_rng(seed)
    ddir = Path(root) / dataset
    pool = []
    for c in range(n_classes):
        for i in range(per_class + n_val + n_test):
            rel = f"class{c:03d}/{i:03d}.{'jpg' if i % 2 else 'png'}"
            write_image(ddir / "images" / rel, c, rng, image_size)
            pool.append((rel, c))
    ann = ddir / "annotations"
    ann.mkdir(parents=True, exist_ok=True)
    per = per_class + n_val + n_test
    train_pool = [pool[c * per + i] for c in range(n_classes) for i in range(per_class)]
    val = [pool[c * per + per_class + i] for i in range(n_val) for c in range(n_classes)][:n_val]
    test = [pool[c * per + per_class + n_val + i] for i in range(n_test) for c in range(n_classes)][:n_test]
    for k in shots:
        for s in seeds:
            pick = np.random.default_rng(1000 + s).permutation(per_class)[: min(k, per_class)]
            items = [train_pool[c * per_class + int(j)] for c in range(n_classes) for j in pick]
            (ann / f"train_meta.list.num_shot_{k}.seed_{s}").write_text(_lines(items))
    (ann / "val_meta.list").write_text(_lines(val))
    (ann / "test_meta.list").write_text(_lines(test))
    return ddir


def make_imagefolder_tree(root: str | Path, splits: dict[str, int] | None = None,
                          classes: Iterable[str] = ("cat", "dog"), image_size: int = 32, seed: int = 0) -> Path:
    """``<root>/<split>/<class>/<i>.{png,jpg}`` with ``splits[split]`` images per class (train 3, val 2)."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    for split, n in (splits or {"train": 3, "val": 2}).items():
        for label, cls in enumerate(classes):
            for i in range(n):
                write_image(root / split / cls / f"{i:03d}.{'png' if i % 2 == 0 else 'jpeg'}", label, rng, image_size)
    return root


@pytest.fixture
def data_cache(tmp_path, monkeypatch) -> Path:
    """A fresh ``GIST_RAY_CACHE`` root for one test; returns its data-cache directory."""
    d = tmp_path / "cache"
    monkeypatch.setenv("GIST_RAY_CACHE", str(d))
    return d / "data"
