"""Checkpoint files: trained weights (safetensors) + training state (``torch.load(weights_only=True)``) + a
checksum manifest written last, each file written atomically. Nothing here imports Ray."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

STATE_FILE = "train_state.pt"
WEIGHTS_FILE = "trainable.safetensors"
CHECKSUMS_FILE = "checksums.json"  # sha256 + size of the two files above, written last



class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used: missing, truncated or corrupt files, or a pickle that was refused."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _atomic_write(path: str | os.PathLike, write) -> None:
    """``write(file)`` into a temporary file next to ``path``, fsync, then rename it over ``path``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # readers see the old file or the complete new one, never a partial one
    finally:
        if tmp.exists():  # only after a failed write
            tmp.unlink()


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    _atomic_write(path, lambda f: torch.save(obj, f))


def write_checksums(directory: str | os.PathLike) -> None:
    """Record size and sha256 of the weights and state files (written last: a complete checkpoint has it)."""
    d = Path(directory)
    sums = {n: {"bytes": (d / n).stat().st_size, "sha256": _sha256(d / n)} for n in (WEIGHTS_FILE, STATE_FILE)}
    _atomic_write(d / CHECKSUMS_FILE, lambda f: f.write(json.dumps(sums, indent=1).encode()))


def verify_checksums(directory: str | os.PathLike) -> None:
    """Compare the files with ``checksums.json``, written last: a checkpoint without it is incomplete."""
    d = Path(directory)
    manifest = d / CHECKSUMS_FILE
    if not manifest.is_file():
        raise CheckpointError(f"{manifest}: missing (the checkpoint was not completely written)")
    try:
        sums = json.loads(manifest.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{manifest}: unreadable ({exc})") from None
    for name in (WEIGHTS_FILE, STATE_FILE):
        want, f = sums.get(name) or {}, d / name
        if not f.is_file():
            raise CheckpointError(f"{f}: missing")
        size = f.stat().st_size
        if "bytes" in want and size != want["bytes"]:
            raise CheckpointError(f"{f}: {size} bytes, the checkpoint recorded {want['bytes']} (truncated?)")
        if "sha256" in want and _sha256(f) != want["sha256"]:
            raise CheckpointError(f"{f}: sha256 differs from the one recorded at save time (corrupt)")


def read_checkpoint(directory: str | os.PathLike, map_location: Any = "cpu") -> tuple[dict[str, torch.Tensor], dict]:
    """A checkpoint's trained weights and training state, fully read and checked before anything is applied.

    Weights come from safetensors (plain tensors, no code); the state from ``torch.load(weights_only=True)``,
    which refuses any pickle that would import or call anything but tensors and plain containers. Every
    problem is raised as :class:`CheckpointError`.
    """
    d = Path(directory)
    verify_checksums(d)
    try:
        weights = load_file(str(d / WEIGHTS_FILE))
    except Exception as exc:
        raise CheckpointError(f"{d / WEIGHTS_FILE}: unreadable ({type(exc).__name__}: {str(exc)[:300]})") from exc
    try:
        state = torch.load(d / STATE_FILE, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{d / STATE_FILE}: refused or unreadable ({type(exc).__name__}: {str(exc)[:300]})") from exc
    missing = {"epoch", "optimizer", "scheduler", "scaler"} - (set(state) if isinstance(state, dict) else set())
    if missing:
        raise CheckpointError(f"{d / STATE_FILE}: not a gist-ray training state (missing {sorted(missing)})")
    return weights, state
