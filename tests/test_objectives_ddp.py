"""Objectives under DDP (two gloo workers on CPU, no Ray): an objective's own modules are used outside the
model's forward, yet DDP averages their gradients like the method's, and CS-KD's partners stay same-class."""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

pytestmark = pytest.mark.slow


class DDPReporter:
    """A worker of a two-process gloo group: DDP-wrapped model, metrics kept, no checkpoints."""

    def __init__(self, rank: int, world_size: int) -> None:
        self.rank, self.world_size = rank, world_size
        self.history: list[dict] = []

    def report(self, metrics, checkpoint_dir) -> None:
        self.history.append(dict(metrics))

    def checkpoints(self):
        import contextlib

        return contextlib.nullcontext(iter([]))

    def prepare_model(self, model):
        return torch.nn.parallel.DistributedDataParallel(model)

    def device(self) -> torch.device:
        return torch.device("cpu")


def worker(rank: int, world_size: int, init_file: str, objective: str, out: str) -> None:
    import sys

    sys.path.insert(0, os.path.dirname(__file__))
    from conftest import TINY_OVERRIDES
    from gist_ray.config import build_config
    from gist_ray.model import trainable_state
    from gist_ray.train.loop import GistRun

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        cfg = build_config({}, TINY_OVERRIDES + [f"objective.name={objective}", "train.epochs=1", "data.test_split=null",
                                                 "method.name=ssf", f"output_dir={out}"])
        run = GistRun(cfg, DDPReporter(rank, world_size))
        for idx in run.batches(0):
            b = len(idx) // 2
            assert not run.pairs or torch.equal(run.labels[idx[:b]], run.labels[idx[b:]])
        run.fit()
        torch.save(trainable_state(run.model), f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("objective", ["byot", "cs_kd"])
def test_ddp_keeps_every_trained_tensor_identical_across_workers(tmp_path, objective):
    mp.spawn(worker, args=(2, str(tmp_path / "init"), objective, str(tmp_path)), nprocs=2, join=True)
    a, b = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert a.keys() == b.keys() and any(k.startswith("objective.") for k in a) == (objective != "cs_kd")
    for k in a:
        torch.testing.assert_close(a[k], b[k], msg=f"{k} differs between workers")
