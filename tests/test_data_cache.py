"""The decoded-tensor cache: hits open no image, any change to the inputs misses, builds are atomic and shared."""

from __future__ import annotations

import json
import multiprocessing
import os
import time

import numpy as np
import pytest
import torch
from data_fixtures import data_cache, make_vtab_tree, write_image  # noqa: F401
from PIL import Image

from gist_ray.config import ConfigError, DataConfig
from gist_ray.data import DATASETS
from gist_ray.data.cache import cached_split

pytestmark = pytest.mark.usefixtures("data_cache")
load = DATASETS.get("vtab")


def cfg(root, size=32) -> DataConfig:
    return DataConfig(name="vtab", task="dtd", root=str(root), image_size=size)


@pytest.fixture
def opens(monkeypatch) -> list[str]:
    """Every path PIL.Image.open is called with."""
    calls: list[str] = []
    real = Image.open

    def counting(fp, *a, **kw):
        calls.append(str(fp))
        return real(fp, *a, **kw)

    monkeypatch.setattr(Image, "open", counting)
    return calls


def _is_mmap(t: torch.Tensor) -> bool:
    """Whether the tensor's memory is a mapping of a cache ``.npy`` file (Linux: /proc/self/maps)."""
    ptr = t.data_ptr()
    with open("/proc/self/maps") as f:
        for line in f:
            fields = line.split()
            lo, hi = (int(x, 16) for x in fields[0].split("-"))
            if lo <= ptr < hi:
                return len(fields) > 5 and fields[5].endswith(".images.npy")
    return False


def _entries(cache_dir) -> list[str]:
    return sorted(p.name for p in cache_dir.glob("*.json"))


def test_second_load_opens_no_image(tmp_path, data_cache, monkeypatch, opens):
    make_vtab_tree(tmp_path / "vtab")
    first = load(cfg(tmp_path / "vtab"), "train800")
    assert len(opens) == 8 and _is_mmap(first.images)

    def refuse(*a, **kw):
        raise AssertionError("an image file was opened on a cache hit")

    monkeypatch.setattr(Image, "open", refuse)
    second = load(cfg(tmp_path / "vtab"), "train")  # the alias shares the entry
    assert torch.equal(first.images, second.images) and torch.equal(first.labels, second.labels)
    assert _is_mmap(second.images)
    assert len(_entries(data_cache)) == 1


def test_manifest_and_files(tmp_path, data_cache):
    ddir = make_vtab_tree(tmp_path)
    load(cfg(tmp_path, size=16), "val200")
    (man,) = data_cache.glob("*.json")
    assert man.name.startswith("vtab-dtd-val200-16-")
    m = json.loads(man.read_text())
    assert m["shape"] == [4, 3, 16, 16] and m["parts"]["list_path"] == str(ddir / "val200.txt")
    stem = man.name[: -len(".json")]
    assert np.load(data_cache / f"{stem}.images.npy", mmap_mode="r").shape == (4, 3, 16, 16)
    assert np.load(data_cache / f"{stem}.labels.npy").tolist() == [0, 1, 0, 1]
    assert not [p for p in data_cache.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_changed_list_file_invalidates(tmp_path, data_cache, opens):
    ddir = make_vtab_tree(tmp_path)
    a = load(cfg(tmp_path), "val200")
    lines = (ddir / "val200.txt").read_text().splitlines()
    (ddir / "val200.txt").write_text("\n".join(lines[::-1]) + "\n")
    n = len(opens)
    b = load(cfg(tmp_path), "val200")
    assert len(opens) == n + 4  # decoded again
    assert torch.equal(b.images, a.images.flip(0)) and b.labels.tolist() == a.labels.flip(0).tolist()
    assert len(_entries(data_cache)) == 2


def test_changed_image_invalidates(tmp_path):
    ddir = make_vtab_tree(tmp_path)
    a = load(cfg(tmp_path), "val200")
    p = ddir / "images/val200/0000.png"
    st = p.stat()
    write_image(p, 1, np.random.default_rng(123))
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    b = load(cfg(tmp_path), "val200")
    assert not torch.equal(a.images[0], b.images[0]) and torch.equal(a.images[1:], b.images[1:])


def test_resolution_is_part_of_the_key(tmp_path, data_cache, opens):
    make_vtab_tree(tmp_path)
    assert load(cfg(tmp_path, 16), "test").images.shape[-1] == 16
    assert load(cfg(tmp_path, 24), "test").images.shape[-1] == 24
    n = len(opens)
    load(cfg(tmp_path, 16), "test")
    load(cfg(tmp_path, 24), "test")
    assert len(opens) == n and len(_entries(data_cache)) == 2


def test_failed_build_leaves_nothing_and_the_next_load_rebuilds(tmp_path, data_cache):
    ddir = make_vtab_tree(tmp_path)
    good = (ddir / "images/test/0003.jpg").read_bytes()
    (ddir / "images/test/0003.jpg").write_bytes(b"garbage")
    with pytest.raises(ConfigError, match=r"test.txt:4: cannot decode image"):
        load(cfg(tmp_path), "test")
    assert [p.name for p in data_cache.iterdir() if not p.name.endswith(".lock")] == []
    (ddir / "images/test/0003.jpg").write_bytes(good)
    assert len(load(cfg(tmp_path), "test")) == 6


def test_corrupt_cache_file_is_rebuilt(tmp_path, data_cache, opens):
    make_vtab_tree(tmp_path)
    a = load(cfg(tmp_path), "test").images.clone()  # truncating a mapped file in place makes reads fault
    (npy,) = data_cache.glob("*.images.npy")
    npy.write_bytes(npy.read_bytes()[:200])
    b = load(cfg(tmp_path), "test")
    assert torch.equal(a, b.images) and len(opens) == 12


def test_cache_off_and_unusable_dir(tmp_path, monkeypatch):
    make_vtab_tree(tmp_path / "v")
    monkeypatch.setenv("GIST_RAY_CACHE", "off")
    assert not _is_mmap(load(cfg(tmp_path / "v"), "val").images)
    (tmp_path / "file").write_text("x")
    monkeypatch.setenv("GIST_RAY_CACHE", str(tmp_path / "file" / "cache"))
    with pytest.warns(UserWarning, match="not usable"):
        assert len(load(cfg(tmp_path / "v"), "val")) == 4


KEY = {"kind": "t", "dataset": "race", "split": "x"}


def _build_in_child(cache: str, log: str, out: str) -> None:
    """Child process body: build (or open) one entry, slowly, and write its checksum to ``out``."""
    os.environ["GIST_RAY_CACHE"] = cache

    def fill(arr: np.ndarray) -> None:
        with open(log, "a") as f:
            f.write("built\n")
        time.sleep(0.5)
        arr[:] = np.arange(arr.size, dtype=np.uint64).reshape(arr.shape) % 251

    images, labels = cached_split(KEY, np.arange(5), 8, fill)
    with open(out, "w") as f:
        f.write(f"{int(images.numpy().sum())} {labels.tolist()}")


def test_two_processes_build_once(tmp_path, data_cache):
    ctx = multiprocessing.get_context("fork")  # no second torch import: the test stays fast
    log = tmp_path / "builds.log"
    procs = [ctx.Process(target=_build_in_child, args=(str(data_cache.parent), str(log), str(tmp_path / f"out{i}")))
             for i in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    outs = [(tmp_path / f"out{i}").read_text() for i in range(2)]
    assert outs[0] == outs[1]
    assert log.read_text() == "built\n"
    images, labels = cached_split(KEY, np.arange(5), 8, lambda out: pytest.fail("rebuilt"))
    assert int(images.numpy().sum()) == int(outs[0].split()[0]) and _is_mmap(images)
