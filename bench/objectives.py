"""What each training objective costs per step against plain CE, and how the objectives compare on a toy task.

1. Cost: one PEFT method on one backbone (default: the paper's Adapter, ``gist_adapter``, on ViT-S/16 at 224 px,
   random weights), one gist-ray run per objective on the same in-memory images, timed in interleaved repeats
   (ce, byot, cs_kd, uskd, gist, ce, ...), each repeat one ``GistRun.train_epoch`` of ``--steps`` steps.
   Prints the median ms/step of each and its ratio to ``ce`` (CS-KD's step also forwards the B partners, without
   gradient; ``train.batch_size`` counts anchors), by wall clock and by this process's CPU time
   (``time.process_time``: what the step costs in CPU, insensitive to other jobs taking the cores; with
   ``--threads 1`` no OpenMP spin-waiting enters it either).
2. Toy comparison (``--toy``): ``vit_synth_s`` (synthetic-pretrained, cached) + the method on the synthetic
   ``shapes`` task with the quickstart's recipe, each objective over ``--seeds``; test accuracy mean +- std
   (ddof=1) over seeds. A 0.2M-parameter toy: it shows the objectives run and learn, not the paper's Table 11.

CPU:  python bench/objectives.py --device cpu --threads 1 --toy   (ViT-S/16 cost: batch 4, 2 steps x 3 repeats)
GPU:  python bench/objectives.py --device cuda --batch 64 --steps 20 --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib as bl  # noqa: E402

OBJECTIVES = "ce,byot,cs_kd,uskd,gist"


def parse(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    bl.add_device_args(ap)
    ap.add_argument("--backbone", default="vit_small_patch16_224")
    ap.add_argument("--method", default="gist_adapter")
    ap.add_argument("--objectives", default=OBJECTIVES, help="comma-separated; the first is the reference (ce)")
    ap.add_argument("--batch", type=int, default=None, help="default 64 (GPU), 4 (CPU)")
    ap.add_argument("--steps", type=int, default=None, help="steps per timed repeat; default 20 (GPU), 2 (CPU)")
    ap.add_argument("--repeats", type=int, default=None, help="interleaved repeats; the median is reported")
    ap.add_argument("--warmup", type=int, default=1, help="untimed epochs per run first")
    ap.add_argument("--toy", action="store_true", help="also run the toy comparison on the synthetic suite")
    ap.add_argument("--no-cost", action="store_true", help="skip the cost measurement")
    ap.add_argument("--seeds", default="0,1,2", help="toy comparison seeds")
    ap.add_argument("--toy-backbone", default="vit_synth_s")
    ap.add_argument("--toy-epochs", type=int, default=8)
    ap.add_argument("--toy-n-train", type=int, default=800)
    return ap.parse_args(argv)


def measure_cost(args, device) -> list[dict]:
    import torch

    from gist_ray.data import Split

    objectives = bl.csv(args.objectives)
    size = bl.backbone_size(args.backbone)
    images, labels = bl.synthetic_images(args.batch * args.steps, size, 10, seed=0)
    key = bl.put_splits({"train": Split(images, labels, 10, "train")})
    epochs = args.warmup + args.repeats
    times: dict[str, list[float]] = {o: [] for o in objectives}
    cpu: dict[str, list[float]] = {o: [] for o in objectives}
    try:
        with tempfile.TemporaryDirectory(prefix="gist-bench-") as tmp:
            base = bl.run_config(key, args.backbone, args.method, True, args.batch, epochs, args.precision, args.compile)
            runs = {}
            for o in objectives:
                torch.manual_seed(0)
                runs[o] = bl.train_run(base.with_overrides({"objective.name": o}), device, f"{tmp}/{o}")
            for e in range(args.warmup):
                for o in objectives:
                    runs[o].train_epoch(e)
            for r in range(args.repeats):
                for o in objectives:  # interleaved: load changes hit every objective alike
                    bl.sync(device)
                    t0, c0 = time.perf_counter(), time.process_time()
                    runs[o].train_epoch(args.warmup + r)
                    times[o].append((time.perf_counter() - t0) / args.steps)
                    cpu[o].append((time.process_time() - c0) / args.steps)
            counts = {o: runs[o].counts for o in objectives}
    finally:
        bl.drop_splits(key)
    ref = objectives[0]
    rows = []
    for o in objectives:
        rows.append({"objective": o, "ms_step": 1e3 * bl.median(times[o]),
                     "ratio": bl.median(times[o]) / bl.median(times[ref]),
                     "pair_ratio": bl.median([t / b for t, b in zip(times[o], times[ref])]),
                     "cpu_ms_step": 1e3 * bl.median(cpu[o]), "cpu_ratio": bl.median(cpu[o]) / bl.median(cpu[ref]),
                     "objective_params": counts[o]["objective"], "total_params": counts[o]["total"]})
    return rows


def toy_comparison(args, device) -> list[dict]:
    from gist_ray.config import build_config
    from gist_ray.pretrain import ensure_pretrained

    ensure_pretrained([args.toy_backbone], "auto")
    seeds = [int(s) for s in bl.csv(args.seeds)]
    rows = []
    for o in bl.csv(args.objectives):
        accs = []
        for seed in seeds:
            cfg = build_config({
                "name": f"toy-{o}-{seed}", "model": {"backbone": args.toy_backbone, "weights": "auto"},
                "method": {"name": args.method}, "objective": {"name": o},
                "data": {"name": "synthetic", "task": "shapes", "n_train": args.toy_n_train, "n_val": 200,
                         "n_test": 1000},
                "train": {"epochs": args.toy_epochs, "batch_size": 32, "lr": 3e-3, "warmup_epochs": 1,
                          "checkpoint_every": args.toy_epochs, "seed": seed, "precision": args.precision},
            })
            with tempfile.TemporaryDirectory(prefix="gist-bench-toy-") as tmp:
                t0 = time.perf_counter()
                final = bl.train_run(cfg, device, tmp).fit()
            accs.append(final["test/acc"])
            print(f"   toy {o} seed {seed}: test/acc {final['test/acc']:.4f} ({time.perf_counter() - t0:.0f} s)",
                  flush=True)
        rows.append({"objective": o, "mean": statistics.fmean(accs),
                     "std": statistics.stdev(accs) if len(accs) > 1 else float("nan"), "accs": accs})
    return rows


def main(argv=None) -> dict[str, list[dict]]:
    args = parse(argv)
    device = bl.resolve_device(args.device, args.threads)
    gpu = device.type == "cuda"
    args.batch = args.batch or (64 if gpu and not args.quick else 4)
    args.steps = args.steps or (20 if gpu and not args.quick else 2)
    args.repeats = args.repeats or (5 if gpu and not args.quick else 3)
    out: dict[str, list[dict]] = {}
    if not args.no_cost:
        bl.header(f"Objective cost per training step relative to {bl.csv(args.objectives)[0]}", device, [
            f"{args.backbone} (random weights) + {args.method}, batch {args.batch} (CS-KD: {args.batch} anchors + "
            f"{args.batch} partners), {args.steps} steps per repeat, {args.repeats} interleaved repeats (median), "
            f"{args.warmup} warm-up epoch(s), precision {args.precision}"])
        rows = measure_cost(args, device)
        print(bl.table(["objective", "wall ms/step", "wall ratio", "median pair ratio", "CPU ms/step", "CPU ratio",
                        "objective params", "total params"],
                       [[r["objective"], r["ms_step"], r["ratio"], r["pair_ratio"], r["cpu_ms_step"], r["cpu_ratio"],
                         r["objective_params"], r["total_params"]] for r in rows]))
        out["cost"] = rows
    if args.toy:
        bl.header("Toy comparison on the synthetic suite (test accuracy over seeds)", device, [
            f"{args.toy_backbone} (synthetic-pretrained) + {args.method}, task shapes (15 classes), "
            f"{args.toy_n_train} train / 200 val / 1000 test, {args.toy_epochs} epochs, batch 32, lr 3e-3, "
            f"seeds {args.seeds}"])
        rows = toy_comparison(args, device)
        print(bl.table(["objective", "test acc mean", "std (ddof=1)", "per seed"],
                       [[r["objective"], r["mean"], r["std"], " ".join(f"{a:.3f}" for a in r["accs"])] for r in rows]))
        out["toy"] = rows
    return out


if __name__ == "__main__":
    main()
