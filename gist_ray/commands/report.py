"""``gist-ray report EXPERIMENT``: paper-shaped tables and plots from an MLflow experiment."""

from __future__ import annotations

import argparse

from gist_ray.report import report


def run(args: argparse.Namespace) -> int:
    paths = report(args.experiment, args.tracking_uri, args.out, args.metric)
    print(f"wrote {len(paths)} files to {args.out}")
    return 0
