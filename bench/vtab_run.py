"""One VTAB-1k-shaped run end to end: gist-ray's GistRun vs a reference loop in the official recipe's style.

Shape (defaults): 1000 training images (train+val, the VTAB-1k refit), 100 epochs, one final pass over a
20,000-image test split; synthetic class-dependent images at the backbone's size, JPEG-encoded in memory once.
Both sides train the same model (backbone + method + Gist token, random init, same seed) with the same GIST
loss, AdamW, schedule and batch size, in this process:

- gist-ray: decode every JPEG once into uint8 tensors (PIL, thread pool; counted in its time), then
  ``GistRun.fit()`` (data on the device, train.precision auto = bf16 on GPU / fp32 on CPU, no per-epoch
  evaluation, the test split once at the end);
- reference: a torch DataLoader whose Dataset decodes the JPEG bytes with PIL on every access
  (Resize + ToTensor + Normalize, ``--workers`` processes), fp16 autocast + GradScaler on GPU (fp32 on CPU),
  and an evaluation of the whole test split after EVERY epoch, as the official VTAB-1k scripts do.

Prints both wall times, their ratio and, with a peak (``--peak-tflops``, default the GPU model's dense bf16 peak:
989 TFLOP/s H100 SXM / H200, 756 H100 PCIe, 312 A100, printed with the device name), the limit: the
run's FLOPs (epochs x train images x 2 x forward + test images x forward, forward counted by FlopCounterMode)
over the peak. GPU targets: gist-ray within 2x of the limit and >= 5x faster than the reference.

GPU:  python bench/vtab_run.py --device cuda                       (vit_b, gist_adapter, 1000 x 100, 20k test)
CPU:  python bench/vtab_run.py --quick                              (vit_s, 100 images x 2 epochs, 200 test)
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib as bl  # noqa: E402



def parse(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    bl.add_device_args(ap)
    ap.add_argument("--backbone", default=None, help="default vit_b (quick: vit_s)")
    ap.add_argument("--method", default="gist_adapter")
    ap.add_argument("--n-train", type=int, default=None, help="default 1000 (quick: 100)")
    ap.add_argument("--epochs", type=int, default=None, help="default 100 (quick: 2)")
    ap.add_argument("--n-test", type=int, default=None, help="default 20000 (quick: 200)")
    ap.add_argument("--batch", type=int, default=None, help="default 64 (quick: 16)")
    ap.add_argument("--num-classes", type=int, default=10)
    ap.add_argument("--workers", type=int, default=None, help="reference DataLoader workers; default 8 (quick: 1)")
    ap.add_argument("--skip-reference", action="store_true", help="time gist-ray only")
    ap.add_argument("--peak-tflops", type=float, default=None,
                    help="for the limit; default the GPU model's dense bf16 peak, none on CPU")
    return ap.parse_args(argv)


# ----------------------------------------------------------------------------- data


def encode_jpegs(images, quality: int = 90) -> list[bytes]:
    from PIL import Image

    out = []
    for img in images.permute(0, 2, 3, 1).numpy():
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=quality)
        out.append(buf.getvalue())
    return out


def decode_once(blobs: list[bytes], size: int):
    """gist-ray's path: every JPEG decoded once into one uint8 N x 3 x size x size tensor (thread pool)."""
    import numpy as np
    import torch

    from gist_ray.data.decode import decode_image, default_workers

    out = np.empty((len(blobs), 3, size, size), dtype=np.uint8)

    def one(i: int) -> None:
        out[i] = decode_image(io.BytesIO(blobs[i]), size)

    with ThreadPoolExecutor(default_workers()) as pool:
        list(pool.map(one, range(len(blobs))))
    return torch.from_numpy(out)


class JpegDataset:
    """The reference's Dataset: PIL-decodes (and transforms) the JPEG bytes on every access."""

    def __init__(self, blobs: list[bytes], labels, size: int, mean, std) -> None:
        from torchvision import transforms

        self.blobs, self.labels = blobs, [int(v) for v in labels]
        self.tf = transforms.Compose([
            transforms.Resize((size, size), interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.ToTensor(),
            transforms.Normalize(mean, std),
        ])

    def __len__(self) -> int:
        return len(self.blobs)

    def __getitem__(self, i: int):
        from PIL import Image

        img = Image.open(io.BytesIO(self.blobs[i])).convert("RGB")
        return self.tf(img), self.labels[i]


# ----------------------------------------------------------------------------- the two runs


def run_gist_ray(args, device, blobs_train, y_train, blobs_test, y_test, size) -> dict:
    from gist_ray.data import Split

    t0 = time.perf_counter()
    train = Split(decode_once(blobs_train, size), y_train, args.num_classes, "train")
    test = Split(decode_once(blobs_test, size), y_test, args.num_classes, "test")
    t_decode = time.perf_counter() - t0
    key = bl.put_splits({"train": train, "test": test})
    try:
        cfg = bl.run_config(key, args.backbone, args.method, True, args.batch, args.epochs, args.precision,
                            args.compile, eval_split=None, test_split="test", warmup_epochs=0.1 * args.epochs)
        with tempfile.TemporaryDirectory(prefix="gist-bench-vtab-") as tmp:
            run = bl.train_run(cfg, device, tmp)
            final = run.fit()
            bl.sync(device)
    finally:
        bl.drop_splits(key)
    total = time.perf_counter() - t0
    return {"time_s": total, "decode_s": t_decode, "test_acc": final.get("test/acc"),
            "amp": str(run.amp).replace("torch.", "") if run.amp else "fp32"}


def run_reference(args, device, blobs_train, y_train, blobs_test, y_test, size) -> dict:
    import torch
    from torch.utils.data import DataLoader

    from gist_ray.backbones import input_spec, vit_of
    from gist_ray.config import GistConfig
    from gist_ray.losses import gist_objective
    from gist_ray.model import build_model
    from gist_ray.train.optim import param_groups, step_cosine

    t0 = time.perf_counter()
    torch.manual_seed(0)
    g = GistConfig()
    model = build_model(args.backbone, args.num_classes, args.method, gist=g, weights="none").to(device)
    _, mean, std = input_spec(vit_of(model))
    cuda = device.type == "cuda"
    amp = torch.float16 if cuda else None
    common = dict(num_workers=args.workers, pin_memory=cuda)
    train_dl = DataLoader(JpegDataset(blobs_train, y_train, size, mean, std), batch_size=args.batch, shuffle=True,
                          **common)
    test_dl = DataLoader(JpegDataset(blobs_test, y_test, size, mean, std), batch_size=2 * args.batch, **common)
    opt = torch.optim.AdamW(param_groups(model, 1e-4), lr=1e-3)
    steps = len(train_dl)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, step_cosine(int(round(0.1 * args.epochs * steps)),
                                                             steps * args.epochs))
    scaler = torch.amp.GradScaler(enabled=amp == torch.float16)
    acc = None
    for _ in range(args.epochs):
        model.train()
        for x, y in train_dl:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                cls_logits, gist_logits = model(x)
            loss, _ = gist_objective(cls_logits, gist_logits, y, mu=g.mu, lam=g.lam, temperature=g.temperature)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            sched.step()
        model.eval()  # the official recipe: the whole test split after every epoch
        correct = total = 0
        with torch.no_grad():
            for x, y in test_dl:
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                    logits = model(x)
                correct += int((logits.argmax(-1) == y).sum())
                total += len(y)
        acc = correct / max(1, total)
    bl.sync(device)
    return {"time_s": time.perf_counter() - t0, "decode_s": None, "test_acc": acc, "amp": "fp16" if amp else "fp32"}


def main(argv=None) -> dict:
    import torch

    from gist_ray.model import build_model

    args = parse(argv)
    device = bl.resolve_device(args.device, args.threads)
    q = args.quick
    args.backbone = args.backbone or ("vit_s" if q else "vit_b")
    args.n_train = args.n_train or (100 if q else 1000)
    args.epochs = args.epochs or (2 if q else 100)
    args.n_test = args.n_test or (200 if q else 20000)
    args.batch = args.batch or (16 if q else 64)
    if args.workers is None:
        args.workers = 1 if q else 8
    peak_for = "given"
    if args.peak_tflops is None:
        args.peak_tflops, peak_for = bl.peak_bf16_tflops(device)
    size = bl.backbone_size(args.backbone)
    bl.header("VTAB-1k-shaped run: gist-ray vs an official-style loop", device, [
        f"{args.backbone} + {args.method} + GIST, random init, {args.n_train} train images x {args.epochs} epochs, "
        f"{args.n_test} test images, batch {args.batch}, {size}px, {args.num_classes} classes",
        f"reference: DataLoader with {args.workers} workers decoding JPEG per access, test split every epoch"])

    x, y = bl.synthetic_images(args.n_train + args.n_test, size, args.num_classes, seed=0)
    t0 = time.perf_counter()
    blobs = encode_jpegs(x)
    print(f"   encoded {len(blobs)} JPEGs once in {time.perf_counter() - t0:.1f} s "
          f"({sum(map(len, blobs)) / len(blobs) / 1e3:.1f} kB each; not counted)", flush=True)
    del x
    tr = (blobs[: args.n_train], y[: args.n_train])
    te = (blobs[args.n_train :], y[args.n_train :])

    probe = build_model(args.backbone, args.num_classes, args.method, weights="none")
    fwd = bl.count_flops(probe, torch.randn(1, 3, size, size))
    del probe
    run_flops = args.epochs * args.n_train * 2 * fwd + args.n_test * fwd

    results = {"gist-ray": run_gist_ray(args, device, *tr, *te, size)}
    print(f"   gist-ray: {results['gist-ray']['time_s']:.1f} s", flush=True)
    if not args.skip_reference:
        results["reference"] = run_reference(args, device, *tr, *te, size)
        print(f"   reference: {results['reference']['time_s']:.1f} s", flush=True)
    limit_s = run_flops / (args.peak_tflops * 1e12) if args.peak_tflops else None
    rows = []
    for name, r in results.items():
        rows.append([name, r["amp"], r["time_s"], r["time_s"] / args.epochs, r["decode_s"], r["test_acc"],
                     results["reference"]["time_s"] / r["time_s"] if "reference" in results else None,
                     r["time_s"] / limit_s if limit_s else "no peak"])
    print(bl.table(["loop", "precision", "wall s", "s/epoch", "decode once s", "test acc", "speed-up vs ref",
                    "x limit"], rows))
    print(f"   run FLOPs {run_flops / 1e12:.2f} TFLOP (forward {fwd / 1e9:.2f} GFLOP/img); "
          + (f"limit {limit_s:.1f} s at {args.peak_tflops:g} TFLOP/s ({peak_for})" if limit_s else f"no peak known for {peak_for}"))
    out = {k: dict(v) for k, v in results.items()}
    out["limit_s"] = limit_s
    if "reference" in results:
        out["speedup"] = results["reference"]["time_s"] / results["gist-ray"]["time_s"]
    return out


if __name__ == "__main__":
    main()
