"""``gist-ray scale STUDY [overrides]``: a resumable study; exit 1 while cells are missing or errored."""

from __future__ import annotations

import argparse

from gist_ray import console
from gist_ray.study.load import load_study
from gist_ray.study.run import run_study


def run(args: argparse.Namespace) -> int:
    study = load_study(args.study, args.overrides)
    console.start(study.base.output_dir, f"study-{study.name}")
    result = run_study(args.study, args.overrides)
    print(console.where_logs_are())
    return 0 if result.complete and not result.errors else 1
