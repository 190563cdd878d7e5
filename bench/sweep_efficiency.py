"""Sweep efficiency: the share of a sweep's wall time spent inside training epochs, and the fixed cost per trial.

Runs a sweep file (default ``search_spaces/quickstart.yaml``) through ``gist_ray.sweep.driver.run_sweep`` under a
unique name, with its output and MLflow store in a temporary directory, then reads every reported result of
every trial (Tune's ``result.json``) and prints:

- efficiency = sum over trials and epochs of ``epoch_time_s`` / (sweep wall time x concurrency), where
  ``epoch_time_s`` is the time of one epoch inside ``GistRun.fit`` (training steps plus that epoch's validation)
  and the concurrency is the number of trials that can run at once (min of ``max_concurrent_trials``, the
  number of trials and the trial slots the Ray cluster's CPUs/GPUs allow);
- fixed overhead per trial = (wall time x concurrency - sum of ``epoch_time_s``) / number of trials: trial
  process start, imports, config, data, model build, checkpoints, the final test, reporting, scheduling.

The sweep wall time is ``SweepResult.wall_s``; Ray is started (and timed) before it, and synthetic-pretrained
backbones are built (cached) before it, so neither one-off cost is in the per-trial figure.
GPU targets: efficiency >= 80 %, fixed overhead <= 5 s per trial on a GPU node.

GPU:  python bench/sweep_efficiency.py --num-samples 16 --concurrency 8 --set resources.use_gpu=true \\
          --set resources.gpus_per_worker=0.125 --set resources.backend=inline
CPU:  python bench/sweep_efficiency.py --quick      (quickstart, 4 trials x 4 epochs, 2 at a time)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib as bl  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def parse(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sweep", default=str(ROOT / "search_spaces" / "quickstart.yaml"), help="sweep file")
    ap.add_argument("--num-samples", type=int, default=None, help="trials (default: the file's; quick: 4)")
    ap.add_argument("--concurrency", type=int, default=None, help="max_concurrent_trials (default: the file's)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override of the sweep's base run config, e.g. train.epochs=4 (repeatable)")
    ap.add_argument("--address", default=None, help="Ray address (default: a local Ray instance)")
    ap.add_argument("--quick", action="store_true", help="4 trials of 4 epochs (CPU, a few minutes)")
    return ap.parse_args(argv)


def trial_demand(cfg) -> dict[str, float]:
    """Resources one trial holds while it runs (the trial process, plus its Train workers if any)."""
    from gist_ray.sweep.trial import trial_resources, uses_inline

    res = dict(trial_resources(cfg))
    if not uses_inline(cfg):
        r = cfg.resources
        res["CPU"] = res.get("CPU", 0) + r.num_workers * r.cpus_per_worker
        if r.use_gpu:
            res["GPU"] = res.get("GPU", 0) + r.num_workers * r.gpus_per_worker
    return res


def concurrency(spec, cfg) -> tuple[int, int]:
    """(trials that can run at once, trial slots of the cluster)."""
    import ray

    have = ray.cluster_resources()
    slots = min(int(math.floor(have.get(k, 0) / v + 1e-9)) for k, v in trial_demand(cfg).items() if v > 0)
    return max(1, min(spec.search.max_concurrent_trials, spec.search.num_samples, slots)), slots


def read_results(path: str) -> dict[str, list[dict]]:
    """Every reported result of every trial of the sweep at ``path`` (Tune's per-trial result.json)."""
    out = {}
    for f in sorted(Path(path).glob("*/result.json")):
        rows = [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
        if rows:
            out[f.parent.name] = rows
    return out


def main(argv=None) -> dict:
    import torch

    from gist_ray.sweep.driver import prepare_weights, run_sweep
    from gist_ray.sweep.space import load_sweep
    from gist_ray.train.launch import cluster_has_gpu, init_ray

    args = parse(argv)
    overrides = (["train.epochs=4"] if args.quick else []) + list(args.set)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with tempfile.TemporaryDirectory(prefix="gist-bench-sweep-") as tmp:
        where = [f"output_dir={tmp}/runs", f"tracking.uri=sqlite:///{tmp}/mlflow.db",
                 "tracking.experiment=bench-sweep-efficiency"]
        spec = load_sweep(args.sweep, [*overrides, *where])
        if args.num_samples or args.quick:
            spec.search.num_samples = args.num_samples or 4
        if args.concurrency:
            spec.search.max_concurrent_trials = args.concurrency
        spec.search.initial_points = spec.search.initial_points[: spec.search.num_samples]
        spec.search.repeat_best = 0
        spec.name = f"bench-eff-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
        prepare_weights(spec)  # one-off (cached) pretraining of vit_synth_* backbones: not a per-trial cost
        t0 = time.perf_counter()
        init_ray(args.address)
        t_ray = time.perf_counter() - t0
        cfg = spec.base
        if cfg.resources.use_gpu is None:
            cfg = dataclasses.replace(cfg, resources=dataclasses.replace(cfg.resources, use_gpu=cluster_has_gpu()))
        conc, slots = concurrency(spec, cfg)
        bl.header("Sweep efficiency: time inside training epochs vs sweep wall time", device, [
            f"sweep {Path(args.sweep).name} as {spec.name}: {spec.search.num_samples} trials, "
            f"max_concurrent_trials {spec.search.max_concurrent_trials}, {slots} trial slots -> concurrency {conc}; "
            f"overrides {overrides or 'none'}",
            f"Ray started in {t_ray:.1f} s (once per sweep; not in the wall time below)"])
        result = run_sweep(spec, verbose=False)
        results = read_results(result.path)
    n = len(result.rows)
    epochs = sum(1 for rows in results.values() for r in rows if "epoch_time_s" in r)
    in_epochs = sum(float(r["epoch_time_s"]) for rows in results.values() for r in rows if "epoch_time_s" in r)
    in_trial = sum(float(rows[-1].get("time_total_s", 0.0)) for rows in results.values())
    wall = result.wall_s
    eff = in_epochs / (wall * conc)
    overhead = (wall * conc - in_epochs) / max(1, n)
    errors = [r for r in result.rows if r.status != "TERMINATED"]
    print(bl.table(
        ["trials", "errored", "epochs run", "concurrency", "wall s", "sum epoch_time_s", "sum trial time s",
         "efficiency", "overhead/trial s"],
        [[n, len(errors), epochs, conc, wall, in_epochs, in_trial, f"{100 * eff:.1f}%", overhead]]))
    print("   sum trial time = Tune's time_total_s per trial (from the trial function's start to its last report); "
          f"per trial: {(in_trial - in_epochs) / max(1, n):.2f} s inside the trial but outside epochs")
    return {"trials": n, "errored": len(errors), "epochs": epochs, "concurrency": conc, "wall_s": wall,
            "in_epochs_s": in_epochs, "in_trial_s": in_trial, "efficiency": eff, "overhead_per_trial_s": overhead,
            "ray_start_s": t_ray}


if __name__ == "__main__":
    main()
