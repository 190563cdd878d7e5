"""Training images/s of gist-ray's GistRun and its fraction of the hardware limit, per backbone x PEFT method.

Each row times ``GistRun.train_epoch`` (the real hot loop: uint8 images already on the device, BatchPrep,
autocast, GIST loss, AdamW) on in-memory images at the backbone's size, random-init backbone, GIST on.

The limit: forward FLOPs per image are counted with torch.utils.flop_counter.FlopCounterMode (2 FLOPs per
multiply-add; ViT-B/16 at 224 counts 35.1 GFLOP = 17.6 GMAC); a PEFT training step costs about 2x the forward
(activation gradients, no weight gradients for frozen weights; ``full`` fine-tuning 3x). The limit is
``peak / train FLOPs per image`` with ``--peak-tflops`` (default: the device's dense bf16 peak, 989 TFLOP/s for an
H100 SXM or H200, 756 for an H100 PCIe, 312 for an A100, printed with the device's name; on CPU no
peak is known unless given, and only the measured rate is printed). The counted forward+backward / forward
ratio is printed as a check on the 2x rule (with GIST on, the trainable Gist token enters before the first
block, so every method back-propagates through the whole backbone; ``linear`` without GIST needs only ~1x).

GPU:  python bench/throughput.py --device cuda --backbones vit_s,vit_b,vit_l --batch 128
CPU:  python bench/throughput.py --quick        (vit_s, batch 4, 2 steps x 2 epochs)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib as bl  # noqa: E402

DEFAULT_METHODS = "linear,gist_adapter,lora,vpt_shallow,vpt_deep,adaptformer,ssf,bitfit"


def parse(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    bl.add_device_args(ap)
    ap.add_argument("--backbones", default=None, help="comma-separated; default vit_s,vit_b,vit_l (CPU/quick: vit_s)")
    ap.add_argument("--methods", default=None, help=f"comma-separated, or 'all'; default {DEFAULT_METHODS} "
                                                   "(CPU/quick: gist_adapter,lora)")
    ap.add_argument("--batch", type=int, default=None, help="default 128 (GPU), 4 (CPU)")
    ap.add_argument("--steps", type=int, default=None, help="steps per timed epoch; default 20 (GPU), 2 (CPU)")
    ap.add_argument("--epochs", type=int, default=None, help="timed epochs (median); default 5 (GPU), 2 (CPU)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed epochs first (compile, allocator, cudnn)")
    ap.add_argument("--no-gist", action="store_true", help="time the methods without the Gist token")
    ap.add_argument("--peak-tflops", type=float, default=None,
                    help="hardware peak for the limit; default: the GPU model's bf16 peak (benchlib.PEAK_BF16_TFLOPS, "
                         "dense), none on CPU")
    return ap.parse_args(argv)


def measure(backbone: str, method: str, args, device) -> dict:
    import torch

    from gist_ray.blocks import blocks
    from gist_ray.data import Split
    from gist_ray.model import unwrap

    size = bl.backbone_size(backbone)
    images, labels = bl.synthetic_images(args.batch * args.steps, size, 10, seed=0)
    key = bl.put_splits({"train": Split(images, labels, 10, "train")})
    try:
        with tempfile.TemporaryDirectory(prefix="gist-bench-") as tmp:
            torch.manual_seed(0)
            cfg = bl.run_config(key, backbone, method, not args.no_gist, args.batch, args.warmup + args.epochs,
                                args.precision, args.compile)
            run = bl.train_run(cfg, device, tmp)
            model = unwrap(run.model)
            x1 = run.prep(images[:1].to(device))
            fwd = bl.count_flops(model, x1)
            fwd_bwd = bl.count_flops(model, x1, train_step=True)
            sdpa = bl.sdpa_calls(model, x1)
            depth = len(blocks(model.backbone))
            for e in range(args.warmup):
                run.train_epoch(e)
            times = []
            for e in range(args.epochs):
                bl.sync(device)
                t0 = time.perf_counter()
                run.train_epoch(args.warmup + e)  # ends with one device sync (.tolist() of the sums)
                times.append(time.perf_counter() - t0)
            amp = run.amp
    finally:
        bl.drop_splits(key)
    ips = args.batch * args.steps / bl.median(times)
    factor = 3.0 if method == "full" else 2.0
    train_flops = factor * fwd
    row = {"backbone": backbone, "method": method, "batch": args.batch, "img_s": ips, "fwd_gflop": fwd / 1e9,
           "counted_ratio": fwd_bwd / fwd, "train_gflop": train_flops / 1e9, "tflops": ips * train_flops / 1e12,
           "fused_attn": f"{sdpa}/{depth}", "amp": str(amp).replace("torch.", "") if amp else "fp32"}
    if args.peak_tflops:
        limit = args.peak_tflops * 1e12 / train_flops
        row.update(limit_img_s=limit, fraction=ips / limit)
    else:
        row.update(limit_img_s=None, fraction=None)
    return row


def main(argv=None) -> list[dict]:
    from gist_ray.methods import METHODS

    args = parse(argv)
    device = bl.resolve_device(args.device, args.threads)
    small = args.quick or device.type != "cuda"
    args.backbones = args.backbones or ("vit_s" if small else "vit_s,vit_b,vit_l")
    methods = args.methods or ("gist_adapter,lora" if small else DEFAULT_METHODS)
    methods = METHODS.names() if methods == "all" else bl.csv(methods)
    args.batch = args.batch or (4 if small else 128)
    args.steps = args.steps or (2 if small else 20)
    args.epochs = args.epochs or (2 if small else 5)
    peak_for = "given"
    if args.peak_tflops is None:
        args.peak_tflops, peak_for = bl.peak_bf16_tflops(device)
    peak = (f"peak {args.peak_tflops:g} TFLOP/s ({peak_for})" if args.peak_tflops
            else f"no peak known for {peak_for} (pass --peak-tflops)")
    bl.header("Training throughput and fraction of the hardware limit", device, [
        f"batch {args.batch}, {args.steps} steps x {args.epochs} timed epochs (median), {args.warmup} warm-up; "
        f"GIST {'off' if args.no_gist else 'on'}; precision {args.precision}{', compiled' if args.compile else ''}; "
        f"{peak}",
        "train FLOPs/img = 2 x counted forward (3x for full); 'fwd+bwd/fwd' is the counted ratio; "
        "'SDPA' = fused-attention calls per forward / blocks"])
    rows = []
    for backbone in bl.csv(args.backbones):
        for method in methods:
            row = measure(backbone, method, args, device)
            rows.append(row)
            print(f"   {backbone} {method}: {row['img_s']:.1f} img/s", flush=True)
    print(bl.table(
        ["backbone", "method", "batch", "amp", "SDPA", "fwd GFLOP/img", "fwd+bwd/fwd", "img/s", "TFLOP/s",
         "limit img/s", "of limit"],
        [[r["backbone"], r["method"], r["batch"], r["amp"], r["fused_attn"], r["fwd_gflop"], r["counted_ratio"],
          r["img_s"], r["tflops"], r["limit_img_s"] if r["limit_img_s"] else "no peak",
          f"{100 * r['fraction']:.1f}%" if r["fraction"] is not None else "-"] for r in rows]))
    return rows


if __name__ == "__main__":
    main()
