"""FGVC few-shot (NOAH annotation lists) and image-folder loaders."""

from __future__ import annotations

import pytest
import torch
from data_fixtures import data_cache, make_fgvc_tree, make_imagefolder_tree  # noqa: F401

from gist_ray.config import ConfigError, DataConfig
from gist_ray.data import DATASETS, validate_splits

pytestmark = pytest.mark.usefixtures("data_cache")


def fgvc(root, task="oxford_pets", **kw) -> DataConfig:
    return DataConfig(name="fgvc", task=task, root=str(root), image_size=32, **kw)


def test_fewshot_lists_by_shots_and_seed(tmp_path):
    make_fgvc_tree(tmp_path, shots=(1, 2), seeds=(0, 1))
    load = DATASETS.get("fgvc")
    one = load(fgvc(tmp_path, shots=1, fewshot_seed=0), "train")
    two = load(fgvc(tmp_path, shots=2, fewshot_seed=1), "train")
    assert one.images.shape == (2, 3, 32, 32) and one.labels.tolist() == [0, 1] and one.num_classes == 37
    assert two.images.shape == (4, 3, 32, 32) and two.labels.tolist() == [0, 0, 1, 1]
    assert len(load(fgvc(tmp_path), "val")) == 2 and len(load(fgvc(tmp_path), "test")) == 4


def test_noah_directory_spelling_and_paths_without_images_dir(tmp_path):
    ddir = make_fgvc_tree(tmp_path, dataset="stanford-cars", shots=(16,), seeds=(0,))
    ann = ddir / "annotations" / "test_meta.list"
    ann.write_text("".join(f"images/{line}\n" for line in ann.read_text().splitlines()))  # relative to <dir>/
    s = DATASETS.get("fgvc")(fgvc(tmp_path, task="stanford_cars"), "test")
    assert len(s) == 4 and s.num_classes == 196


def test_fgvc_errors_name_the_annotation_file(tmp_path):
    ddir = make_fgvc_tree(tmp_path, shots=(1,), seeds=(0,))
    with pytest.raises(ConfigError) as info:
        validate_splits(fgvc(tmp_path, shots=4, fewshot_seed=2), ["train"])
    assert str(info.value) == f"{ddir}/annotations/train_meta.list.num_shot_4.seed_2: list file not found"
    (ddir / "annotations/val_meta.list").write_text("class000/003.jpg 0\nclass001/003.jpg 37\n")
    with pytest.raises(ConfigError, match=r"annotations/val_meta.list:2: label 37 out of range \[0, 37\)$"):
        DATASETS.get("fgvc")(fgvc(tmp_path), "val")
    with pytest.raises(ConfigError, match=r"^data split 'train800': FGVC few-shot splits are train, val, test"):
        DATASETS.get("fgvc")(fgvc(tmp_path), "train800")
    with pytest.raises(ConfigError, match=r"^data.root: no food101 directory under .* \(looked for food101, food-101"):
        DATASETS.get("fgvc")(fgvc(tmp_path, task="food101"), "test")


def test_imagefolder_classes_sorted_and_shared_across_splits(tmp_path):
    root = make_imagefolder_tree(tmp_path / "f", {"train": 3, "val": 1}, classes=("zebra", "ant", "cat"))
    (root / "train" / "ant" / "notes.txt").write_text("not an image")
    (root / "val" / "cat").rename(root / "val" / "bee")  # a class only val has
    c = DataConfig(name="imagefolder", root=str(root), image_size=16)
    load = DATASETS.get("imagefolder")
    train, val = load(c, "train"), load(c, "val")
    # classes: ant, bee, cat, zebra
    assert train.num_classes == val.num_classes == 4
    assert train.labels.tolist() == [0, 0, 0, 2, 2, 2, 3, 3, 3] and val.labels.tolist() == [0, 1, 3]
    assert train.images.shape == (9, 3, 16, 16) and train.images.dtype == torch.uint8


def test_imagefolder_errors(tmp_path):
    root = make_imagefolder_tree(tmp_path / "f", {"train": 2})
    c = DataConfig(name="imagefolder", root=str(root), image_size=16)
    with pytest.raises(ConfigError, match=r"/f/test: split directory not found \(splits under .*: train\)"):
        DATASETS.get("imagefolder")(c, "test")
    (root / "val" / "cat").mkdir(parents=True)
    with pytest.raises(ConfigError, match=r"/f/val: no images .* \(empty split\)"):
        validate_splits(c, ["val"])
    bad = root / "train" / "dog" / "001.jpeg"
    bad.write_bytes(b"\x89PNG broken")
    with pytest.raises(ConfigError) as info:
        DATASETS.get("imagefolder")(c, "train")
    assert str(info.value).startswith(f"{bad}: cannot decode image: ")
