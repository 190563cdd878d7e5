"""``gist-ray sweep SPACE [a.b=value ...] [--name N] [--resume [N]]``: a Ray Tune + Optuna sweep in MLflow."""

from __future__ import annotations

import argparse

from gist_ray import console, tracking
from gist_ray.mlflow_ui import applicable_params, browse_hint
from gist_ray.sweep.driver import format_table, run_sweep
from gist_ray.sweep.space import load_sweep
from gist_ray.timing import phase


def run(args: argparse.Namespace) -> int:
    with phase("driver/load_sweep"):
        spec = load_sweep(args.space, args.overrides)
    if args.resume and args.resume is not True and args.resume != spec.name:
        spec.name = args.resume
    if args.name:
        spec.name = args.name
    console.start(spec.base.output_dir, spec.name)
    result = run_sweep(spec, resume=bool(args.resume))
    print()
    print(format_table(result), end="")
    best = result.best()
    if best is None:
        print("no trial finished successfully")
        return 1
    print(f"\nbest trial {best.trial_id}: {result.metric}={best.metrics[result.metric]:.4f}  config={applicable_params(best.config)}")
    print(f"sweep {result.name}: {len(result.rows)} trials in {result.wall_s:.0f} s; state in {result.path}")
    t = spec.base.tracking
    print(browse_hint(t.uri, tracking.experiment_id(tracking.client(t.uri), t.experiment)))
    print(console.where_logs_are())
    return 0
