"""Checkpoints survive crashes and tampering: atomic writes, refused pickles, fallback past a corrupt newest one."""

import logging
import os
import pickle
import shutil

import pytest
import torch

from conftest import TINY_OVERRIDES
from gist_ray.config import build_config
from gist_ray.train.checkpoint import (CHECKSUMS_FILE, STATE_FILE, WEIGHTS_FILE, CheckpointError, read_checkpoint,
                                       write_checksums)
from gist_ray.train.loop import GistRun, LocalReporter, run_training


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models on a shared 2-core machine: one intra-op thread is ~30x faster than two fighting threads."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny(*extra):
    return build_config({}, TINY_OVERRIDES + ["data.n_test=8", *extra])


class MakesMarker:
    """Unpickling this calls ``os.mkdir(marker)``: code execution on load, which loaders must refuse."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def write_payload(path, marker, fmt):
    obj = {"epoch": 1, "optimizer": MakesMarker(marker), "scheduler": {}, "scaler": {}}
    if fmt == "torch-zip":
        torch.save(obj, path)
    else:  # a legacy, plain pickle file named .pt
        with open(path, "wb") as f:
            pickle.dump(obj, f)


def test_the_payload_is_live_with_plain_pickle(tmp_path):
    """Control: the crafted file really runs code when unpickled without protection."""
    marker = tmp_path / "pwned"
    write_payload(tmp_path / "evil.pt", marker, "plain-pickle")
    with open(tmp_path / "evil.pt", "rb") as f:
        pickle.load(f)
    assert marker.exists()


@pytest.mark.parametrize("fmt", ["torch-zip", "plain-pickle"])
def test_a_malicious_train_state_is_refused_and_its_code_never_runs(tmp_path, fmt):
    marker = tmp_path / "pwned"
    run = GistRun(tiny(), LocalReporter(tmp_path / "run"))
    ckpt = tmp_path / "checkpoint_000001"
    ckpt.mkdir()
    run.save(str(ckpt), 1)
    write_payload(ckpt / STATE_FILE, marker, fmt)
    write_checksums(ckpt)  # matching checksums: the refusal must come from the loader, not from a mismatch
    with pytest.raises(CheckpointError, match="refused or unreadable") as info:
        run.restore(str(ckpt))
    assert isinstance(info.value.__cause__, pickle.UnpicklingError)
    assert not marker.exists()
    # resuming a run whose only checkpoint is that one fails loudly too, still without running the payload
    shutil.copytree(ckpt, tmp_path / "run" / ckpt.name)
    with pytest.raises(CheckpointError, match="no usable checkpoint"):
        GistRun(tiny(), LocalReporter(tmp_path / "run")).fit()
    assert not marker.exists()


@pytest.mark.parametrize("fmt", ["torch-zip", "plain-pickle"])
def test_a_malicious_backbone_weights_file_is_refused_and_its_code_never_runs(tmp_path, fmt):
    from timm.models.vision_transformer import VisionTransformer

    from gist_ray.backbones import TINY, load_weights_file

    marker = tmp_path / "pwned"
    write_payload(tmp_path / "weights.pt", marker, fmt)
    model = VisionTransformer(num_classes=3, **TINY["vit_test_tiny"].kwargs())
    with pytest.raises(pickle.UnpicklingError):
        load_weights_file(model, tmp_path / "weights.pt")
    assert not marker.exists()


def test_checkpoint_writes_are_atomic(tmp_path, monkeypatch):
    """A crash while writing leaves the previous complete files, not a half-written one, and no temp files."""
    run = GistRun(tiny(), LocalReporter(tmp_path / "run"))
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    run.save(str(ckpt), 1)
    assert sorted(p.name for p in ckpt.iterdir()) == sorted([CHECKSUMS_FILE, STATE_FILE, WEIGHTS_FILE])
    before = {p.name: p.read_bytes() for p in ckpt.iterdir()}

    real_save = torch.save

    def crash_midway(obj, f, *a, **k):
        real_save(obj, f, *a, **k)
        f.truncate(f.tell() // 2)  # half the bytes written, then the process "dies"
        raise KeyboardInterrupt("killed while writing")

    monkeypatch.setattr(torch, "save", crash_midway)
    with pytest.raises(KeyboardInterrupt):
        run.save(str(ckpt), 2)
    monkeypatch.undo()

    import safetensors.torch

    def crash_in_safetensors(tensors, filename, *a, **k):
        with open(filename, "wb") as f:
            f.write(b"\x00" * 10)
        raise KeyboardInterrupt("killed while writing")

    monkeypatch.setattr(safetensors.torch, "save_file", crash_in_safetensors)
    with pytest.raises(KeyboardInterrupt):
        run.save(str(ckpt), 3)
    monkeypatch.undo()

    assert {p.name: p.read_bytes() for p in ckpt.iterdir()} == before  # untouched, nothing left over
    _, state = read_checkpoint(ckpt)
    assert state["epoch"] == 1


def corrupt(path, how):
    data = path.read_bytes()
    if how == "truncate":
        path.write_bytes(data[: len(data) // 2])
    else:  # flip bytes in the middle, same size: only the recorded sha256 can tell
        mid = len(data) // 2
        path.write_bytes(data[:mid] + bytes(b ^ 0xFF for b in data[mid : mid + 16]) + data[mid + 16 :])


@pytest.mark.parametrize("how, manifest", [("truncate", True), ("truncate", False), ("bitflip", True)])
def test_a_corrupt_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, caplog, how, manifest):
    common = ["train.checkpoint_every=1"]
    first = LocalReporter(tmp_path)
    run_training(tiny(*common, "train.epochs=3"), first)
    names = sorted(p.name for p in tmp_path.glob("checkpoint_*"))
    assert names == ["checkpoint_000001", "checkpoint_000002", "checkpoint_000003"]
    newest = tmp_path / "checkpoint_000003"
    if not manifest:  # killed before the manifest, written last, reached disk: incomplete, so unusable
        (newest / CHECKSUMS_FILE).unlink()
    corrupt(newest / WEIGHTS_FILE, how)

    again = LocalReporter(tmp_path)
    run = GistRun(tiny(*common, "train.epochs=4"), again)
    with caplog.at_level(logging.WARNING, logger="gist_ray.train.loop"):
        final = run.fit()
    assert run.start_epoch == 2  # resumed from the previous good checkpoint
    assert [m["epoch"] for m in again.history] == [3, 4]
    assert final["epoch"] == 4 and "test/acc" in final
    text = caplog.text
    assert "checkpoint_000003 is unusable" in text and "resumed from the older checkpoint" in text


def test_every_checkpoint_corrupt_is_an_error_not_a_silent_restart(tmp_path):
    run_training(tiny("train.checkpoint_every=1", "train.epochs=2"), LocalReporter(tmp_path))
    for p in tmp_path.glob(f"checkpoint_*/{WEIGHTS_FILE}"):
        corrupt(p, "truncate")
    with pytest.raises(CheckpointError, match="no usable checkpoint") as info:
        GistRun(tiny("train.epochs=3"), LocalReporter(tmp_path)).fit()
    assert "checkpoint_000001" in str(info.value) and "checkpoint_000002" in str(info.value)


def test_tune_reporter_lists_older_sibling_checkpoints_newest_first(tmp_path):
    from ray.train import Checkpoint

    from gist_ray.train.ray_worker import older_siblings

    for i in range(4):
        (tmp_path / f"checkpoint_{i:06d}").mkdir()
    (tmp_path / "not_a_checkpoint").mkdir()
    got = older_siblings(Checkpoint(str(tmp_path / "checkpoint_000002")))
    assert [os.path.basename(c.path) for c in got] == ["checkpoint_000001", "checkpoint_000000"]
