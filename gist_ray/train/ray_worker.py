"""Thin Ray shells around :func:`gist_ray.train.loop.run_training`.

``train_loop_per_worker`` runs on every Ray Train worker (DDP through ``prepare_model``); ``TuneReporter`` lets
a Tune trial run the same loop in its own process (the ``inline`` backend).
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any, Iterable, Iterator

import pyarrow.fs as pafs
import ray
import ray.train
import ray.train.torch
import torch
from ray import tune
from torch import nn

from gist_ray.config import build_config
from gist_ray.timing import mark
from gist_ray.train.loop import run_training

log = logging.getLogger(__name__)


def where_am_i() -> dict[str, Any]:
    """Which node and process report (fault-tolerance tests, debugging placement); not logged to MLflow."""
    return {"worker.node_id": ray.get_runtime_context().get_node_id(), "worker.pid": os.getpid()}


@contextlib.contextmanager
def as_directories(checkpoints: Iterable[Any]) -> Iterator[Iterator[str]]:
    """Local directories of Ray checkpoints, each fetched only when the iteration reaches it."""
    with contextlib.ExitStack() as stack:

        def dirs() -> Iterator[str]:
            for ckpt in checkpoints:
                try:
                    d = stack.enter_context(ckpt.as_directory())
                except Exception as exc:  # e.g. an object store that lost it
                    log.warning("could not fetch checkpoint %s: %s", ckpt.path, exc)
                    continue
                yield d

        yield dirs()


class RayTrainReporter:
    """Reports through ``ray.train``; checkpoints go to the run's storage; DDP across workers."""

    def __init__(self) -> None:
        ctx = ray.train.get_context()
        self.rank, self.world_size = ctx.get_world_rank(), ctx.get_world_size()

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
        ckpt = ray.train.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        ray.train.report({**metrics, **where_am_i()}, checkpoint=ckpt)

    def checkpoints(self) -> contextlib.AbstractContextManager[Iterator[str]]:
        """The latest checkpoint, then the older ones Ray Train still keeps (``CheckpointConfig.num_to_keep``)."""
        latest = ray.train.get_checkpoint()
        if latest is None:
            return as_directories([])
        older: list[tuple[float, int, Any]] = []
        try:
            for i, rc in enumerate(ray.train.get_all_reported_checkpoints(timeout_s=120)):
                if rc.checkpoint.path != latest.path:
                    older.append((float((rc.metrics or {}).get("epoch", -1)), i, rc.checkpoint))
        except Exception as exc:  # resume still works from the latest one
            log.warning("cannot list older checkpoints (%s); only the latest can be resumed from", exc)
        older.sort(key=lambda t: (t[0], t[1]), reverse=True)
        return as_directories([latest, *(c for *_, c in older)])

    def prepare_model(self, model: nn.Module) -> nn.Module:
        return ray.train.torch.prepare_model(model)

    def device(self) -> torch.device:
        return ray.train.torch.get_device()


class TuneReporter:
    """Reports straight to Tune from a trial process (no Train controller, one worker)."""

    rank, world_size = 0, 1

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
        ckpt = tune.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        tune.report({**metrics, **where_am_i()}, checkpoint=ckpt)

    def checkpoints(self) -> contextlib.AbstractContextManager[Iterator[str]]:
        """The latest checkpoint, then the older ``checkpoint_*`` directories beside it in the trial's storage."""
        latest = tune.get_checkpoint()
        if latest is None:
            return as_directories([])
        return as_directories([latest, *older_siblings(latest)])

    def prepare_model(self, model: nn.Module) -> nn.Module:
        return model

    def device(self) -> torch.device:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def older_siblings(ckpt: Any) -> list[Any]:
    """Checkpoints next to ``ckpt`` (local or remote storage) whose names sort before it, newest first."""
    path = ckpt.path.rstrip("/")
    parent, name = path.rsplit("/", 1) if "/" in path else ("", path)
    try:
        infos = ckpt.filesystem.get_file_info(pafs.FileSelector(parent or "."))
    except Exception as exc:
        log.warning("cannot list older checkpoints beside %s (%s)", path, exc)
        return []
    names = sorted((i.base_name for i in infos if i.type == pafs.FileType.Directory
                    and i.base_name.startswith("checkpoint_") and i.base_name < name), reverse=True)
    return [type(ckpt)(f"{parent}/{n}" if parent else n, filesystem=ckpt.filesystem) for n in names]


def train_loop_per_worker(config: dict) -> None:
    """Ray Train entry point: ``config`` is the plain-dict form of a :class:`gist_ray.config.Config`."""
    mark("worker/start")
    run_training(build_config(config), RayTrainReporter())
