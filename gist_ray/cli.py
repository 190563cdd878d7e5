"""``gist-ray``: train | sweep | scale | report | methods | data check | mlflow-server.

Every command validates its input (config fields, files, search spaces) before starting Ray.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from gist_ray.config import ConfigError


def _quiet_env() -> None:
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    os.environ.setdefault("PYTHONWARNINGS", "ignore::DeprecationWarning,ignore::FutureWarning")


def cmd_train(args: argparse.Namespace) -> int:
    from gist_ray.config import load_config, to_dict

    config, overrides = args.config, list(args.overrides)
    if config and "=" in config and not os.path.isfile(config):
        config, overrides = None, [config, *overrides]  # no config file: only overrides
    cfg = load_config(config, overrides)
    from gist_ray.data import preflight

    d = cfg.data
    preflight(d, [d.train_split, d.eval_split, d.test_split])
    from gist_ray.train.launch import init_ray, make_trainer
    from gist_ray.train.mlflow_callback import MlflowTrainCallback, open_train_run

    from gist_ray.pretrain import ensure_pretrained

    ensure_pretrained([cfg.model.backbone], cfg.model.weights)
    init_ray(cfg.resources.address)
    cfg_dict = to_dict(cfg)
    run_id = open_train_run(cfg.tracking.uri, cfg.tracking.experiment, cfg.name, cfg_dict)
    trainer = make_trainer(cfg, callbacks=[MlflowTrainCallback(cfg.tracking.uri, run_id)])
    from gist_ray import tracking

    status = "FAILED"
    try:
        result = trainer.fit()
        status = "FINISHED"
    finally:
        tracking.client(cfg.tracking.uri).set_terminated(run_id, status)
    m = result.metrics or {}
    keys = ["epoch", "train/loss", "val/acc", "test/acc", "params/total"]
    print("result: " + "  ".join(f"{k}={m[k]:.4g}" if isinstance(m.get(k), float) else f"{k}={m.get(k)}" for k in keys))
    print(f"checkpoints: {result.path}   mlflow run: {run_id} ({cfg.tracking.uri})")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from gist_ray.sweep.driver import format_table, run_sweep
    from gist_ray.sweep.space import load_sweep

    spec = load_sweep(args.space, args.overrides)
    if args.resume:
        if args.resume is not True and args.resume != spec.name:
            spec.name = args.resume
    if args.name:
        spec.name = args.name
    result = run_sweep(spec, resume=bool(args.resume))
    print()
    print(format_table(result), end="")
    best = result.best()
    if best is None:
        print("no trial finished successfully")
        return 1
    print(f"\nbest trial {best.trial_id}: {result.metric}={best.metrics[result.metric]:.4f}  config={best.config}")
    print(f"sweep {result.name}: {len(result.rows)} trials in {result.wall_s:.0f} s; state in {result.path}")
    print("browse: mlflow ui --backend-store-uri " + spec.base.get("tracking", {}).get("uri", "sqlite:///mlflow.db"))
    return 0


def cmd_scale(args: argparse.Namespace) -> int:
    from gist_ray.study.run import run_study

    result = run_study(args.study, args.overrides)
    return 0 if result.complete and not result.errors else 1


def cmd_report(args: argparse.Namespace) -> int:
    from gist_ray.report import report

    paths = report(args.experiment, args.tracking_uri, args.out, args.metric)
    print(f"wrote {len(paths)} files to {args.out}")
    return 0


def cmd_methods(args: argparse.Namespace) -> int:
    from gist_ray.methods_table import format_methods_table, methods_table

    print(format_methods_table(methods_table(args.backbone, args.num_classes)))
    return 0


def cmd_data_check(args: argparse.Namespace) -> int:
    from gist_ray.data.check import check_dataset_root

    problems = check_dataset_root(args.root, kind=args.kind)
    for line in problems:
        print(line)
    print(f"{len(problems)} problem(s) in {args.root}" if problems else f"{args.root}: OK")
    return 1 if problems else 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gist-ray", description="Run, sweep and scale GIST fine-tuning on Ray.")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="one training run on Ray Train (rerun with the same name to resume)")
    t.add_argument("config", nargs="?", help="run config YAML (defaults if omitted)")
    t.add_argument("overrides", nargs="*", help="a.b=value overrides")
    t.set_defaults(func=cmd_train)

    s = sub.add_parser("sweep", help="a Ray Tune + Optuna sweep tracked in MLflow")
    s.add_argument("space", help="sweep file (search_spaces/*.yaml or a .py define-by-run file)")
    s.add_argument("overrides", nargs="*", help="a.b=value overrides of the base run config")
    s.add_argument("--resume", nargs="?", const=True, default=False, metavar="NAME",
                   help="continue an interrupted sweep (its name defaults to the file's)")
    s.add_argument("--name", help="sweep name (default: the file's name)")
    s.set_defaults(func=cmd_sweep)

    sc = sub.add_parser("scale", help="a scaling study: backbone x method x GIST x dataset x seed, resumable")
    sc.add_argument("study", help="study YAML (search_spaces/scaling_toy.yaml)")
    sc.add_argument("overrides", nargs="*", help="a.b=value overrides of the study's base run config")
    sc.set_defaults(func=cmd_scale)

    rp = sub.add_parser("report", help="paper-shaped tables (Markdown, CSV, LaTeX) from an MLflow experiment")
    rp.add_argument("experiment", help="MLflow experiment name (default experiment of gist-ray: gist-ray)")
    rp.add_argument("--tracking-uri", default="sqlite:///mlflow.db")
    rp.add_argument("--out", default="report")
    rp.add_argument("--metric", default="test/acc")
    rp.set_defaults(func=cmd_report)

    m = sub.add_parser("methods", help="list PEFT methods with trainable parameter counts")
    m.add_argument("--backbone", default="vit_base_patch16_224")
    m.add_argument("--num-classes", type=int, default=100)
    m.set_defaults(func=cmd_methods)

    from gist_ray.tracking_server import add_cli

    add_cli(sub)  # gist-ray mlflow-server: a tracking server on loopback (refuses public binds without auth)

    d = sub.add_parser("data", help="dataset tools")
    dsub = d.add_subparsers(dest="data_command", required=True)
    dc = dsub.add_parser("check", help="validate a dataset root; one line per problem")
    dc.add_argument("root")
    dc.add_argument("--kind", default="vtab", choices=["vtab", "fgvc", "imagefolder"])
    dc.set_defaults(func=cmd_data_check)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    _quiet_env()
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"gist-ray: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
