"""``check_dataset_root``: one line per problem in a dataset tree, empty when clean."""

from __future__ import annotations

import pytest
from data_fixtures import make_fgvc_tree, make_imagefolder_tree, make_vtab_tree

from gist_ray.config import ConfigError
from gist_ray.data.check import check_dataset_root


def test_clean_vtab_root_and_single_dataset_dir(tmp_path):
    ddir = make_vtab_tree(tmp_path, "patch_camelyon", n_classes=2)
    assert check_dataset_root(str(tmp_path)) == []
    assert check_dataset_root(str(ddir)) == []


def test_vtab_problems_are_all_listed(tmp_path):
    ddir = make_vtab_tree(tmp_path, "patch_camelyon", n_classes=2)
    dtd = make_vtab_tree(tmp_path, "dtd", n_classes=2)
    (ddir / "val200.txt").unlink()
    lines = (ddir / "test.txt").read_text().splitlines()
    lines[1] = "images/test/0001.jpg 2"
    lines[2] = "images/test/missing.png 0"
    (ddir / "test.txt").write_text("\n".join(lines) + "\n")
    (ddir / "images/train800/0003.jpg").write_bytes(b"broken")
    problems = check_dataset_root(str(tmp_path))  # datasets in table order, then list order
    assert problems[:4] == [
        f"{dtd}: the lists use 2 distinct labels, expected 47 classes",
        f"{ddir}/val200.txt: list file not found",
        f"{ddir}/test.txt:2: label 2 out of range [0, 2)",
        f"{ddir}/test.txt:3: image file not found: {ddir}/images/test/missing.png",
    ]
    assert len(problems) == 5 and problems[4].startswith(
        f"{ddir}/train800.txt:4: cannot decode image {ddir}/images/train800/0003.jpg: UnidentifiedImageError")
    assert len(check_dataset_root(str(tmp_path), decode=False)) == 4


def test_empty_or_missing_roots(tmp_path):
    assert check_dataset_root(str(tmp_path / "nope")) == [f"{tmp_path}/nope: directory not found"]
    assert check_dataset_root(str(tmp_path))[0].startswith(f"{tmp_path}: no VTAB dataset directories")
    with pytest.raises(ConfigError, match="unknown dataset kind 'coco'"):
        check_dataset_root(str(tmp_path), kind="coco")


def test_fgvc_root_reports_missing_standard_lists(tmp_path):
    make_fgvc_tree(tmp_path, "fgvc-aircraft", n_classes=100, per_class=1, n_val=1, n_test=1,
                   shots=(1, 2, 4, 8, 16), seeds=(0, 1), image_size=8)
    problems = check_dataset_root(str(tmp_path), kind="fgvc")
    ann = tmp_path / "fgvc-aircraft" / "annotations"
    assert problems == [f"{ann}/train_meta.list.num_shot_{k}.seed_2: list file not found" for k in (1, 2, 4, 8, 16)]


def test_imagefolder_root(tmp_path):
    root = make_imagefolder_tree(tmp_path)
    assert check_dataset_root(str(root), kind="imagefolder") == []
    (root / "val" / "dog" / "000.png").write_bytes(b"")
    (problem,) = check_dataset_root(str(root), kind="imagefolder")
    assert problem.startswith(f"{root}/val/dog/000.png: cannot decode image: ")
