"""VTAB-1k list-file loader: splits, labels, decoding, and a ConfigError naming file:line for each bad input."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from data_fixtures import data_cache, make_vtab_tree  # noqa: F401
from PIL import Image

from gist_ray.config import ConfigError, DataConfig, from_dict
from gist_ray.data import DATASETS, load_splits, validate_splits
from gist_ray.data.vtab import VTAB_DATASETS

pytestmark = pytest.mark.usefixtures("data_cache")


def cfg(root, task="dtd", size=32, **kw) -> DataConfig:
    return DataConfig(name="vtab", task=task, root=str(root), image_size=size, **kw)


def test_table_has_the_19_datasets():
    assert len(VTAB_DATASETS) == 19
    groups = [g for _, g in VTAB_DATASETS.values()]
    assert (groups.count("Natural"), groups.count("Specialized"), groups.count("Structured")) == (7, 4, 8)
    counts = [n for n, _ in VTAB_DATASETS.values()]
    assert counts == [100, 102, 47, 102, 37, 10, 397, 2, 10, 45, 5, 8, 6, 6, 4, 16, 16, 18, 9]


def test_load_splits_shapes_labels_and_aliases(tmp_path):
    make_vtab_tree(tmp_path, "dtd", n_classes=2)
    c = cfg(tmp_path)
    splits = load_splits(c, ["train800", "val200", "train800val200", "test", "train", "val", "trainval"])
    alt = lambda n: [i % 2 for i in range(n)]  # noqa: E731
    labels = {"train800": alt(8), "val200": alt(4), "train800val200": alt(8) + alt(4), "test": alt(6)}
    for name, expected in labels.items():
        s = splits[name]
        assert s.images.shape == (len(expected), 3, 32, 32) and s.images.dtype == torch.uint8
        assert s.num_classes == 47 and s.labels.tolist() == expected
    assert torch.equal(splits["train"].images, splits["train800"].images)
    assert torch.equal(splits["trainval"].labels, splits["train800val200"].labels)
    assert torch.equal(splits["train800val200"].images[8:], splits["val200"].images)


def test_decoding_is_a_direct_bicubic_resize(tmp_path):
    ddir = make_vtab_tree(tmp_path, "eurosat", n_classes=2)
    s = DATASETS.get("vtab")(cfg(tmp_path, "eurosat", size=20), "train800")
    for i, ext in ((0, "png"), (1, "jpg")):
        ref = Image.open(ddir / f"images/train800/{i:04d}.{ext}").convert("RGB").resize((20, 20), Image.BICUBIC)
        assert np.array_equal(s.images[i].numpy().transpose(1, 2, 0), np.asarray(ref))


def test_default_resolution_is_224(tmp_path):
    make_vtab_tree(tmp_path, "dtd", sizes={"val200": 2})
    s = DATASETS.get("vtab")(cfg(tmp_path, size=None), "val")
    assert s.images.shape == (2, 3, 224, 224)


def test_through_the_run_config(tmp_path):
    make_vtab_tree(tmp_path, "kitti")
    raw = {"name": "vtab", "task": "kitti", "root": str(tmp_path), "train_split": "trainval"}
    d = from_dict(DataConfig, raw, "data")
    validate_splits(d, [d.train_split, d.eval_split, d.test_split])
    assert len(load_splits(d, ["trainval"])["trainval"]) == 12


def _error(c, split="train800") -> str:
    with pytest.raises(ConfigError) as info:
        DATASETS.get("vtab")(c, split)
    return str(info.value)


def _rewrite_line(path, lineno, text):
    lines = path.read_text().splitlines()
    lines[lineno - 1] = text
    path.write_text("\n".join(lines) + "\n")


def test_label_out_of_range_names_file_and_line(tmp_path):
    ddir = make_vtab_tree(tmp_path, "dtd", sizes={"train800": 20})
    _rewrite_line(ddir / "train800.txt", 17, "images/train800/0016.png 47")
    assert _error(cfg(tmp_path)) == f"{ddir}/train800.txt:17: label 47 out of range [0, 47)"


def test_negative_and_non_integer_labels(tmp_path):
    ddir = make_vtab_tree(tmp_path, "dtd")
    _rewrite_line(ddir / "train800.txt", 3, "images/train800/0002.png -1")
    assert _error(cfg(tmp_path)) == f"{ddir}/train800.txt:3: label -1 out of range [0, 47)"
    _rewrite_line(ddir / "train800.txt", 3, "images/train800/0002.png cat")
    assert _error(cfg(tmp_path)).startswith(f"{ddir}/train800.txt:3: label 'cat' is not an integer")
    _rewrite_line(ddir / "train800.txt", 3, "images/train800/0002.png")
    assert _error(cfg(tmp_path)).startswith(f"{ddir}/train800.txt:3: expected '<image path> <label>'")


def test_several_problems_are_counted(tmp_path):
    ddir = make_vtab_tree(tmp_path, "dtd")
    _rewrite_line(ddir / "train800.txt", 2, "images/train800/0001.jpg 99")
    _rewrite_line(ddir / "train800.txt", 5, "images/train800/0004.png 99")
    assert _error(cfg(tmp_path)).endswith("train800.txt:2: label 99 out of range [0, 47) (and 1 more problem)")


def test_missing_list_file(tmp_path):
    ddir = make_vtab_tree(tmp_path, "dtd")
    (ddir / "test.txt").unlink()
    assert _error(cfg(tmp_path), "test") == f"{ddir}/test.txt: list file not found"
    with pytest.raises(ConfigError, match="test.txt: list file not found"):
        validate_splits(cfg(tmp_path), ["train", "val", "test"])


def test_missing_image_file(tmp_path):
    ddir = make_vtab_tree(tmp_path, "dtd")
    (ddir / "images/val200/0003.jpg").unlink()
    msg = _error(cfg(tmp_path), "val")
    assert msg == f"{ddir}/val200.txt:4: image file not found: {ddir}/images/val200/0003.jpg"


@pytest.mark.parametrize("content", [b"not an image at all", b"\xff\xd8\xff\xe0" + b"\x00" * 40])
def test_corrupt_image_names_list_line_and_file(tmp_path, content):
    ddir = make_vtab_tree(tmp_path, "dtd")
    (ddir / "images/train800/0005.jpg").write_bytes(content)
    msg = _error(cfg(tmp_path))
    assert msg.startswith(f"{ddir}/train800.txt:6: cannot decode image {ddir}/images/train800/0005.jpg: ")


def test_truncated_jpeg(tmp_path):
    ddir = make_vtab_tree(tmp_path, "dtd", image_size=64)
    p = ddir / "images/train800/0003.jpg"
    p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2])
    assert re.match(rf"{ddir}/train800.txt:4: cannot decode image .*0003.jpg: OSError", _error(cfg(tmp_path)))


def test_empty_split(tmp_path):
    ddir = make_vtab_tree(tmp_path, "dtd")
    (ddir / "val200.txt").write_text("\n\n")
    assert _error(cfg(tmp_path), "val200") == f"{ddir}/val200.txt: no images listed (empty split)"


def test_bad_task_root_and_split(tmp_path):
    make_vtab_tree(tmp_path, "dtd")
    assert _error(cfg(tmp_path, task="imagenet")).startswith("data.task: unknown VTAB dataset 'imagenet'")
    assert _error(cfg(tmp_path, task="svhn")).startswith("data.root: no directory 'svhn' under")
    assert _error(cfg(tmp_path), "validation").startswith("data split 'validation': VTAB splits are")
    assert _error(DataConfig(name="vtab", task="dtd")).startswith("data.root: required")


def test_fewshot_fields_are_range_checked():
    with pytest.raises(ConfigError, match=r"^data.shots: must be >= 1, got 0"):
        from_dict(DataConfig, {"shots": 0}, "data")
    with pytest.raises(ConfigError, match=r"^data.fewshot_seed: must be >= 0, got -1"):
        from_dict(DataConfig, {"fewshot_seed": -1}, "data")
