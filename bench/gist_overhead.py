"""Step time of a PEFT method + GIST over the method alone (same backbone, batch, method, data).

For each backbone x method, two gist-ray runs are built (``gist.enabled`` true / false, random-init
backbone, in-memory uint8 images at the backbone's size) and timed in interleaved repeats: A B A B ...,
each repeat one ``GistRun.train_epoch`` of ``--steps`` steps (the epoch ends with one host sync, so the
wall time is the device time). Prints the median ms/step of each and their ratio. Target: <= 1.03x.

GPU:  python bench/gist_overhead.py --device cuda --batch 64 --repeats 10 --steps 20
CPU:  python bench/gist_overhead.py --quick     (batch 4, 2 steps x 3 repeats; a few minutes on 2 cores)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib as bl  # noqa: E402

TARGET = 1.03


def parse(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    bl.add_device_args(ap)
    ap.add_argument("--backbones", default="vit_s,vit_b", help="comma-separated (vit_s, vit_b, vit_l, vit_test_tiny)")
    ap.add_argument("--methods", default="gist_adapter,lora,vpt_shallow", help="comma-separated PEFT methods")
    ap.add_argument("--batch", type=int, default=None, help="default 64 (GPU), 4 (CPU)")
    ap.add_argument("--steps", type=int, default=None, help="steps per timed repeat; default 20 (GPU), 2 (CPU)")
    ap.add_argument("--repeats", type=int, default=None, help="A/B pairs; the median is reported; default 10 / 3")
    ap.add_argument("--warmup", type=int, default=1, help="untimed epochs per run first")
    return ap.parse_args(argv)


def measure(backbone: str, method: str, args, device) -> dict:
    import torch

    from gist_ray.data import Split

    size = bl.backbone_size(backbone)
    n = args.batch * args.steps
    images, labels = bl.synthetic_images(n, size, 10, seed=0)
    key = bl.put_splits({"train": Split(images, labels, 10, "train")})
    epochs = args.warmup + args.repeats
    runs = {}
    try:
        with tempfile.TemporaryDirectory(prefix="gist-bench-") as tmp:
            for gist in (False, True):
                torch.manual_seed(0)
                cfg = bl.run_config(key, backbone, method, gist, args.batch, epochs, args.precision, args.compile)
                runs[gist] = bl.train_run(cfg, device, f"{tmp}/{gist}")
            for e in range(args.warmup):
                for gist in (False, True):
                    runs[gist].train_epoch(e)
            times = {False: [], True: []}
            for r in range(args.repeats):
                for gist in (False, True):  # A B A B ...
                    bl.sync(device)
                    t0 = time.perf_counter()
                    runs[gist].train_epoch(args.warmup + r)  # ends with one .tolist(): a device sync
                    times[gist].append((time.perf_counter() - t0) / args.steps)
    finally:
        bl.drop_splits(key)
    base, with_gist = bl.median(times[False]), bl.median(times[True])
    pair = bl.median([b / a for a, b in zip(times[False], times[True])])
    return {"backbone": backbone, "method": method, "batch": args.batch, "ms_method": 1e3 * base,
            "ms_gist": 1e3 * with_gist, "ratio": with_gist / base, "pair_ratio": pair}


def main(argv=None) -> list[dict]:
    args = parse(argv)
    device = bl.resolve_device(args.device, args.threads)
    gpu = device.type == "cuda"
    quick_cpu = args.quick or not gpu
    args.batch = args.batch or (4 if quick_cpu else 64)
    args.steps = args.steps or (2 if quick_cpu else 20)
    args.repeats = args.repeats or (3 if quick_cpu else 10)
    notes = [f"batch {args.batch}, {args.steps} steps per repeat, {args.repeats} interleaved A/B repeats (median), "
             f"{args.warmup} warm-up epoch(s); random-init backbones; precision {args.precision}"
             f"{', compiled' if args.compile else ''}"]
    if not gpu:
        notes.append("CPU: small batch and few repeats so it finishes in minutes; CPU ratios are noisy and say "
                     "nothing about a GPU")
    bl.header("GIST overhead: method + GIST vs method alone (per training step)", device, notes)
    rows = []
    for backbone in bl.csv(args.backbones):
        for method in bl.csv(args.methods):
            row = measure(backbone, method, args, device)
            rows.append(row)
            print(f"   {backbone} {method}: {row['ms_method']:.1f} -> {row['ms_gist']:.1f} ms/step "
                  f"({row['ratio']:.3f}x)", flush=True)
    print(bl.table(
        ["backbone", "method", "batch", "ms/step method", "ms/step +GIST", "ratio", "median pair ratio",
         f"<= {TARGET}x"],
        [[r["backbone"], r["method"], r["batch"], r["ms_method"], r["ms_gist"], r["ratio"], r["pair_ratio"],
          "yes" if r["ratio"] <= TARGET else "NO"] for r in rows]))
    return rows


if __name__ == "__main__":
    main()
