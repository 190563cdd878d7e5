"""Shared pieces of the ``bench/`` scripts: device choice, in-memory data, GistRun set-up, FLOP counts, tables.

Every script is runnable as ``python bench/<name>.py`` (this directory is then on ``sys.path``) and exposes
``main(argv)`` returning its rows, so ``tests/test_bench_smoke.py`` can run it with tiny settings.
"""

from __future__ import annotations

import datetime
import itertools
import os
import platform
import statistics
import tempfile
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
import torch.nn.functional as F

MEMORY_DATASET = "bench_memory"
_SPLITS: dict[str, dict[str, Any]] = {}  # task key -> split name -> Split
_keys = itertools.count()


# ----------------------------------------------------------------------------- device + environment


# dense bf16 peaks (TFLOP/s, no sparsity) by GPU model: H100 SXM and H200 share the same compute; the PCIe H100 is
# lower. A name matching none of them gets no peak: pass --peak-tflops.
PEAK_BF16_TFLOPS = (("H200", 989.0), ("H100 PCIe", 756.0), ("H100", 989.0), ("A100", 312.0))


def peak_bf16_tflops(device: torch.device) -> tuple[float | None, str]:
    """(dense bf16 peak, the device name it was chosen for); (None, name) for an unknown device or a CPU."""
    if device.type != "cuda":
        return None, "cpu"
    name = torch.cuda.get_device_name(device)
    for key, tflops in PEAK_BF16_TFLOPS:
        if all(part in name for part in key.split()):
            return tflops, name
    return None, name


def resolve_device(name: str, threads: int | None = None) -> torch.device:
    if threads:
        torch.set_num_threads(threads)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is visible")
    return torch.device(name)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def hardware(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    load = ", load average %.2f" % os.getloadavg()[0] if hasattr(os, "getloadavg") else ""
    return f"CPU: {cpu_model()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}{load}"


def header(title: str, device: torch.device, notes: Sequence[str] = ()) -> None:
    print(f"== {title}")
    print(f"   {datetime.datetime.now().isoformat(timespec='seconds')}  torch {torch.__version__}  {hardware(device)}")
    for n in notes:
        print(f"   {n}")


def add_device_args(ap) -> None:
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    ap.add_argument("--quick", action="store_true", help="small settings that finish in minutes on a 2-core CPU")
    ap.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), default="auto",
                    help="gist-ray's train.precision (auto: bf16 autocast on GPU, fp32 on CPU)")
    ap.add_argument("--compile", action="store_true", help="train.compile=true (torch.compile the model)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")


def csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """An aligned text table (floats with 4 significant digits)."""

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return "-" if v is None else str(v)

    body = [[fmt(v) for v in r] for r in rows]
    cells = [list(headers), *body]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs))


# ----------------------------------------------------------------------------- in-memory data


def _register() -> None:
    from gist_ray.data import DATASETS, Split

    if MEMORY_DATASET in DATASETS:
        return

    def load(cfg, split: str) -> Split:
        try:
            return _SPLITS[cfg.task][split]
        except KeyError:
            raise ValueError(f"{MEMORY_DATASET}: no split {split!r} registered under task {cfg.task!r}") from None

    DATASETS.add(MEMORY_DATASET, load)


def put_splits(splits: dict[str, Any]) -> str:
    """Register decoded splits (``Split`` objects) in memory; returns the ``data.task`` key naming them."""
    _register()
    key = f"bench-{os.getpid()}-{next(_keys)}"
    _SPLITS[key] = splits
    return key


def drop_splits(key: str) -> None:
    _SPLITS.pop(key, None)


def synthetic_images(n: int, size: int, num_classes: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 N x 3 x size x size images and labels: a smooth class-dependent colour field plus noise.

    Learnable (each class has its own low-resolution pattern), smooth enough to JPEG-encode to a realistic
    size, and generated in batches with torch (20k images at 224 px in seconds).
    """
    g = torch.Generator().manual_seed(seed)
    protos = torch.rand(num_classes, 3, 4, 4, generator=g) * 200 + 28
    labels = torch.randint(num_classes, (n,), generator=g)
    out = torch.empty(n, 3, size, size, dtype=torch.uint8)
    for i in range(0, n, 512):
        y = labels[i : i + 512]
        low = protos[y] + torch.randn(len(y), 3, 4, 4, generator=g) * 25
        img = F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)
        img += torch.randn(img.shape, generator=g) * 8
        out[i : i + 512] = img.clamp_(0, 255).to(torch.uint8)
    return out, labels


def backbone_size(backbone: str) -> int:
    """The input side the backbone expects (224 for vit_s/b/l, 32 for the tiny test ViTs)."""
    from gist_ray.backbones import TINY, resolve_name

    name = resolve_name(backbone)
    if name in TINY:
        return TINY[name].img_size
    try:
        import timm

        return int(timm.get_pretrained_cfg(name).input_size[-1])
    except Exception:  # noqa: BLE001 - unknown to this timm: the ViT default
        return 224


# ----------------------------------------------------------------------------- GistRun set-up


def BenchReporter(directory: str, device: torch.device):
    """gist-ray's LocalReporter (checkpoints in ``directory``), on a chosen device (``--device cpu`` on a GPU box)."""
    from gist_ray.train.loop import LocalReporter

    class _Reporter(LocalReporter):
        def device(self) -> torch.device:
            return device

    return _Reporter(directory)


def run_config(task_key: str, backbone: str, method: str, gist: bool, batch_size: int, epochs: int,
               precision: str = "auto", compile: bool = False, eval_split: str | None = None,
               test_split: str | None = None, warmup_epochs: float = 0.0, method_options: dict | None = None):
    """A validated gist-ray Config on the in-memory split ``task_key`` (random-init backbone)."""
    from gist_ray.config import build_config

    raw = {
        "name": "bench",
        "output_dir": tempfile.gettempdir(),
        "model": {"backbone": backbone, "weights": "none"},
        "method": {"name": method, **(method_options or {})},
        "gist": {"enabled": gist},
        "data": {"name": MEMORY_DATASET, "task": task_key, "train_split": "train", "eval_split": eval_split,
                 "test_split": test_split},
        "train": {"epochs": epochs, "batch_size": batch_size, "precision": precision, "compile": compile,
                  "warmup_epochs": warmup_epochs, "checkpoint_every": epochs, "lr": 1e-3},
    }
    return build_config(raw)


def train_run(cfg, device: torch.device, directory: str):
    from gist_ray.train.loop import GistRun

    return GistRun(cfg, BenchReporter(directory, device))


# ----------------------------------------------------------------------------- FLOPs + attention checks


def attention_modules(model: torch.nn.Module) -> list[torch.nn.Module]:
    return [m for m in model.modules() if hasattr(m, "fused_attn")]


def sdpa_calls(model: torch.nn.Module, x: torch.Tensor) -> int:
    """How many times one forward calls F.scaled_dot_product_attention (timm's fused attention)."""
    calls = 0
    orig = F.scaled_dot_product_attention

    def counting(*a, **k):
        nonlocal calls
        calls += 1
        return orig(*a, **k)

    F.scaled_dot_product_attention = counting
    try:
        with torch.no_grad():
            model(x)
    finally:
        F.scaled_dot_product_attention = orig
    return calls


def count_flops(model: torch.nn.Module, x: torch.Tensor, train_step: bool = False) -> int:
    """FLOPs (2 per multiply-add) of one forward, or forward+backward, of ``model`` on ``x``.

    Counted with torch.utils.flop_counter.FlopCounterMode on the explicit-attention path (timm's non-fused
    branch: its two matmuls are counted on every device, whereas FlopCounterMode has no formula for CPU SDPA
    kernels); the arithmetic is the same as the fused kernel's.
    """
    from torch.utils.flop_counter import FlopCounterMode

    attns = attention_modules(model)
    saved = [a.fused_attn for a in attns]
    for a in attns:
        a.fused_attn = False
    was_training = model.training
    try:
        counter = FlopCounterMode(display=False)
        if train_step:
            model.train()
            with counter:
                out = model(x)
                logits = out[0] if isinstance(out, tuple) else out
                total = logits.float().sum()
                if isinstance(out, tuple) and out[1] is not None:
                    total = total + out[1].float().sum()
                total.backward()
            model.zero_grad(set_to_none=True)
        else:
            model.train()  # the training forward: with GIST on, the Gist token's head pass is included
            with counter:  # grad mode on: FlopCounterMode's module tracker trips on no_grad views of parameters
                model(x)
    finally:
        for a, s in zip(attns, saved):
            a.fused_attn = s
        model.train(was_training)
    return int(counter.get_total_flops())
