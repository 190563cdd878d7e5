"""The bench/ scripts run end to end with their smallest settings (tiny backbone, CPU), so they cannot rot.

The figures they print are not checked here (a shared CPU says nothing about a GPU); only that each script runs,
returns its rows and that the derived numbers are sane.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
TINY = ["--device", "cpu", "--batch", "4"]


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gist_overhead_prints_the_ratio(capsys):
    rows = load("gist_overhead").main(TINY + ["--backbones", "vit_test_tiny", "--methods", "gist_adapter",
                                              "--steps", "1", "--repeats", "1", "--warmup", "0"])
    assert len(rows) == 1 and rows[0]["ms_method"] > 0 and rows[0]["ms_gist"] > 0
    assert math.isclose(rows[0]["ratio"], rows[0]["ms_gist"] / rows[0]["ms_method"])
    assert "ms/step +GIST" in capsys.readouterr().out


def test_throughput_counts_flops_and_the_limit(capsys):
    rows = load("throughput").main(TINY + ["--backbones", "vit_test_tiny", "--methods", "gist_adapter",
                                           "--steps", "1", "--epochs", "1", "--warmup", "0", "--peak-tflops", "1"])
    (row,) = rows
    assert row["img_s"] > 0 and row["fwd_gflop"] > 0
    assert 1.5 < row["counted_ratio"] < 2.5  # forward+backward of a PEFT step is about twice the forward
    assert row["fused_attn"] == "2/2"  # timm's fused attention: one SDPA call per block
    assert math.isclose(row["fraction"], row["img_s"] / row["limit_img_s"])
    assert "of limit" in capsys.readouterr().out


def test_vtab_run_times_both_loops(capsys):
    out = load("vtab_run").main(["--device", "cpu", "--backbone", "vit_test_tiny", "--n-train", "32", "--epochs", "1",
                                 "--n-test", "32", "--batch", "16", "--workers", "0"])
    assert out["gist-ray"]["time_s"] > 0 and out["reference"]["time_s"] > 0
    assert 0 <= out["gist-ray"]["test_acc"] <= 1 and 0 <= out["reference"]["test_acc"] <= 1
    assert out["speedup"] > 0 and out["limit_s"] is None  # no peak known on CPU
    assert "speed-up vs ref" in capsys.readouterr().out


def test_compile_flag_wraps_the_model(tmp_path):
    import torch

    from conftest import TINY_OVERRIDES
    from gist_ray.config import build_config
    from gist_ray.model import unwrap
    from gist_ray.train.loop import GistRun, LocalReporter

    run = GistRun(build_config({}, TINY_OVERRIDES + ["train.compile=true"]), LocalReporter(tmp_path))
    assert isinstance(run.model, torch._dynamo.eval_frame.OptimizedModule)  # compiled lazily, on the first step
    assert unwrap(run.model) is run.model._orig_mod
    assert build_config({}, TINY_OVERRIDES).train.compile is False


@pytest.mark.slow
def test_sweep_efficiency_reports_both_figures(ray_local, capsys):
    out = load("sweep_efficiency").main([
        "--num-samples", "2", "--set", "model.backbone=vit_test_tiny", "--set", "model.weights=none",
        "--set", "data.n_train=32", "--set", "data.n_val=16", "--set", "data.n_test=16", "--set", "train.epochs=1",
        "--set", "train.batch_size=16"])
    assert out["trials"] == 2 and out["errored"] == 0 and out["epochs"] >= 2
    assert 0 < out["efficiency"] <= 1 and out["overhead_per_trial_s"] > 0
    assert "overhead/trial s" in capsys.readouterr().out
