"""``gist-ray``: train | sweep | scale | report | methods | data check | mlflow-server.

Every command validates its input (config fields, files, search spaces) before starting Ray. Each command's
body is a module (:mod:`gist_ray.commands`) imported when the command runs, with a ``run(args)`` function.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from typing import Sequence

from gist_ray import console
from gist_ray.errors import ConfigError
from gist_ray.timing import mark, phase
from gist_ray.tracking_server import add_arguments as add_server_arguments


def _quiet_env() -> None:
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    os.environ.setdefault("PYTHONWARNINGS", "ignore::DeprecationWarning,ignore::FutureWarning")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gist-ray", description="Run, sweep and scale GIST fine-tuning on Ray.")
    sub = p.add_subparsers(dest="command", required=True)
    loud = argparse.ArgumentParser(add_help=False)
    loud.add_argument("-v", "--verbose", action="store_true",
                      help="show Ray's, MLflow's and Optuna's console output too (otherwise in <output_dir>/logs/)")

    t = sub.add_parser("train", parents=[loud],
                       help="one training run (rerun with the same name to resume)")
    t.add_argument("config", nargs="?", help="run config YAML (defaults if omitted)")
    t.add_argument("overrides", nargs="*", help="a.b=value overrides")
    t.set_defaults(command_module="gist_ray.commands.train")

    s = sub.add_parser("sweep", parents=[loud], help="a Ray Tune + Optuna sweep tracked in MLflow")
    s.add_argument("space", help="sweep file (search_spaces/*.yaml or a .py define-by-run file)")
    s.add_argument("overrides", nargs="*", help="a.b=value overrides of the base run config")
    s.add_argument("--resume", nargs="?", const=True, default=False, metavar="NAME",
                   help="continue an interrupted sweep (its name defaults to the file's)")
    s.add_argument("--name", help="sweep name (default: the file's name)")
    s.set_defaults(command_module="gist_ray.commands.sweep")

    sc = sub.add_parser("scale", parents=[loud], help="a scaling study: backbone x method x GIST x dataset x seed, resumable")
    sc.add_argument("study", help="study YAML (search_spaces/scaling_toy.yaml)")
    sc.add_argument("overrides", nargs="*", help="a.b=value overrides of the study's base run config")
    sc.set_defaults(command_module="gist_ray.commands.scale")

    rp = sub.add_parser("report", help="paper-shaped tables (Markdown, CSV, LaTeX) of an MLflow experiment's final "
                                       "runs (refits, repeats, study cells, single runs), one table per protocol")
    rp.add_argument("experiment", help="MLflow experiment name (default experiment of gist-ray: gist-ray)")
    rp.add_argument("--tracking-uri", default="sqlite:///mlflow.db")
    rp.add_argument("--out", default="report")
    rp.add_argument("--metric", default=None, help="what the cells hold, never swapped for another "
                                                    "(default test/acc; with --trials val/acc)")
    rp.add_argument("--trials", action="store_true",
                    help="the tuning side instead: the best trial per (method, GIST) and its configuration, "
                         "a selection score, not a result")
    rp.add_argument("--table11", action="store_true",
                    help="the paper's Table 11: one row per (method, objective: CE, BYOT, CS-KD, USKD, GIST), the "
                         "VTAB group means and parameters (search_spaces/skd_table11.yaml)")
    rp.add_argument("--table3", action="store_true",
                    help="the paper's Table 3 (GLUE): one column per task with its metric, the mean, parameters and "
                         "the GIST delta; lambda chosen on val/score per task (search_spaces/glue_table3.yaml)")
    rp.set_defaults(command_module="gist_ray.commands.report")

    m = sub.add_parser("methods", help="list PEFT methods with trainable parameter counts")
    m.add_argument("--backbone", default="vit_base_patch16_224")
    m.add_argument("--num-classes", type=int, default=100)
    m.add_argument("--objectives", action="store_true",
                   help="the training objectives' own trainable parameters instead (BYOT's classifiers, ...), "
                        "with gist_adapter")
    m.set_defaults(command_module="gist_ray.commands.methods")

    ms = sub.add_parser("mlflow-server", help="run an MLflow tracking server (127.0.0.1 unless --auth)")
    add_server_arguments(ms)
    ms.set_defaults(command_module="gist_ray.tracking_server")

    d = sub.add_parser("data", help="dataset tools")
    dsub = d.add_subparsers(dest="data_command", required=True)
    dc = dsub.add_parser("check", help="validate a dataset root; one line per problem")
    dc.add_argument("root")
    dc.add_argument("--kind", default="vtab", choices=["vtab", "fgvc", "imagefolder", "glue"])
    dc.add_argument("--task", nargs="+", default=None, help="glue: only these tasks (default: every task present)")
    dc.set_defaults(command_module="gist_ray.commands.data_check")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    mark("cli/start")
    _quiet_env()
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # a.b=value overrides may also come after options (`sweep FILE --name N a.b=1`)
    if extra and hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if isinstance(getattr(args, "resume", None), str) and "=" in args.resume:  # `--resume a.b=1`: an override,
        args.overrides, args.resume = [*args.overrides, args.resume], True  # not the name of a sweep
    console.set_verbose(getattr(args, "verbose", False))
    try:
        with phase("cli/imports"):
            command = importlib.import_module(args.command_module)
        with phase("cli/command"):
            return int(command.run(args) or 0)
    except ConfigError as exc:
        print(f"gist-ray: error: {exc}", file=sys.stderr)
        return 2
    except BaseException:
        if console.log_file() is not None:  # the traceback follows on stderr; the libraries' side is in the file
            print(f"gist-ray: failed; {console.where_logs_are()}", file=sys.stderr)
        raise
    finally:
        console.stop()
        mark("cli/end")


def run() -> None:
    """The ``gist-ray`` console script: :func:`main`, then a fast exit. Once the command has returned, everything
    it wrote is flushed and Ray is shut down; tearing down the interpreter (torch, Ray, MLflow modules) would only
    add about 2 s to every command, so the process ends there."""
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    if "ray" in sys.modules and sys.modules["ray"].is_initialized():
        sys.modules["ray"].shutdown()
    os._exit(code)


if __name__ == "__main__":
    run()
