"""Thin Ray shells around :func:`gist_ray.train.loop.run_training`.

``train_loop_per_worker`` runs on every Ray Train worker (DDP through ``prepare_model``); ``TuneReporter`` lets
a Tune trial run the same loop in its own process (the ``inline`` backend).
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch
from torch import nn

from gist_ray.config import build_config
from gist_ray.train.loop import run_training


class RayTrainReporter:
    """Reports through ``ray.train``; checkpoints go to the run's storage; DDP across workers."""

    def __init__(self) -> None:
        import ray.train

        ctx = ray.train.get_context()
        self.rank, self.world_size = ctx.get_world_rank(), ctx.get_world_size()

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
        import ray.train

        ckpt = ray.train.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        ray.train.report(metrics, checkpoint=ckpt)

    @contextlib.contextmanager
    def latest_checkpoint(self) -> Iterator[str | None]:
        import ray.train

        ckpt = ray.train.get_checkpoint()
        if ckpt is None:
            yield None
            return
        with ckpt.as_directory() as d:
            yield d

    def prepare_model(self, model: nn.Module) -> nn.Module:
        import ray.train.torch

        return ray.train.torch.prepare_model(model)

    def device(self) -> torch.device:
        import ray.train.torch

        return ray.train.torch.get_device()


class TuneReporter:
    """Reports straight to Tune from a trial process (no Train controller, one worker)."""

    rank, world_size = 0, 1

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
        from ray import tune

        ckpt = tune.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        tune.report(metrics, checkpoint=ckpt)

    @contextlib.contextmanager
    def latest_checkpoint(self) -> Iterator[str | None]:
        from ray import tune

        ckpt = tune.get_checkpoint()
        if ckpt is None:
            yield None
            return
        with ckpt.as_directory() as d:
            yield d

    def prepare_model(self, model: nn.Module) -> nn.Module:
        return model

    def device(self) -> torch.device:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def train_loop_per_worker(config: dict) -> None:
    """Ray Train entry point: ``config`` is the plain-dict form of a :class:`gist_ray.config.Config`."""
    run_training(build_config(config), RayTrainReporter())
