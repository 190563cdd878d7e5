"""``gist-ray report EXPERIMENT``: paper-shaped tables of an MLflow experiment's final runs (``--trials``: the tuning
side, labelled as a selection)."""

from __future__ import annotations

import argparse

from gist_ray.report import NothingToReport, report, report_trials
from gist_ray.report_table3 import report_table3
from gist_ray.report_table11 import report_table11


def run(args: argparse.Namespace) -> int:
    if args.table3:
        tables = report_table3(args.experiment, args.tracking_uri, args.metric, out_dir=args.out, tuning=args.trials)
        print(f"wrote {3 * len(tables)} files to {args.out}")
        return 0 if tables else 1
    if args.table11:
        tables = report_table11(args.experiment, args.tracking_uri, args.metric, out_dir=args.out, tuning=args.trials)
        print(f"wrote {3 * len(tables)} files to {args.out}")
        return 0 if tables else 1
    if args.trials:
        paths = report_trials(args.experiment, args.tracking_uri, args.out, args.metric or "val/acc")
    else:
        try:
            paths = report(args.experiment, args.tracking_uri, args.out, args.metric or "test/acc")
        except NothingToReport as exc:
            print(exc)
            return 1
    print(f"wrote {len(paths)} files to {args.out}")
    return 0
