"""GPU paths: bf16 autocast in the loop, a step loop that never waits for the GPU, and DDP over NCCL through Ray
Train. Marked ``gpu``: they run where CUDA is available and are skipped elsewhere (CI has no GPU)."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import TINY_OVERRIDES
from gist_ray.config import build_config
from gist_ray.train.loop import GistRun, LocalReporter, autocast_dtype

pytestmark = pytest.mark.gpu


def test_bf16_autocast_trains_on_the_gpu(tmp_path):
    cfg = build_config({}, [*TINY_OVERRIDES, "train.precision=auto"])
    rep = LocalReporter(tmp_path)
    run = GistRun(cfg, rep)
    assert run.device.type == "cuda" and run.amp == torch.bfloat16 == autocast_dtype("auto", run.device)
    final = run.fit()
    assert [m["epoch"] for m in rep.history] == [1, 2]
    assert math.isfinite(final["train/loss"]) and 0.0 <= final["test/acc"] <= 1.0
    # the trained parameters stay fp32 (autocast computes in bf16, the optimizer updates fp32 masters)
    assert all(p.dtype == torch.float32 for p in run.model.parameters() if p.requires_grad)


@pytest.mark.parametrize("method", ["gist_adapter", "lora", "vpt_deep"])
def test_training_steps_never_make_the_host_wait_for_the_gpu(tmp_path, method):
    """The step loop only queues work: a host sync per step would leave the GPU idle while Python launches the next
    step. The epoch's means then cost one sync, at its end. bf16 (fp16's grad scaler syncs every step by design)."""
    cfg = build_config({}, [*TINY_OVERRIDES, "train.precision=auto", "train.grad_clip=1.0", f"method.name={method}"])
    run = GistRun(cfg, LocalReporter(tmp_path))
    run.train_steps(0)  # first-call work (allocator, lazy inits) outside the check
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        sums, rows = run.train_steps(1)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert rows == cfg.data.n_train and {"loss", "acc", "ce_cls", "ce_gist"} <= set(sums)
    assert math.isfinite(run.train_epoch(2)["train/loss"])


def test_fp16_uses_a_grad_scaler(tmp_path):
    run = GistRun(build_config({}, [*TINY_OVERRIDES, "train.precision=fp16"]), LocalReporter(tmp_path))
    assert run.amp == torch.float16 and run.scaler.is_enabled()
    assert math.isfinite(run.fit()["train/loss"])


@pytest.mark.slow
def test_ray_train_runs_ddp_over_nccl(ray_local, tmp_path):
    from gist_ray.train.launch import make_trainer

    gpus = torch.cuda.device_count()
    cfg = build_config({}, [*TINY_OVERRIDES, f"resources.num_workers={min(2, gpus)}", "resources.use_gpu=true",
                            f"output_dir={tmp_path}", "name=nccl"])
    result = make_trainer(cfg).fit()
    assert result.error is None and result.metrics["epoch"] == 2 and math.isfinite(result.metrics["train/loss"])
