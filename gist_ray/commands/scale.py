"""``gist-ray scale STUDY [overrides]``: a resumable study; exit 1 while cells are missing or errored."""

from __future__ import annotations

import argparse

from gist_ray.study.run import run_study


def run(args: argparse.Namespace) -> int:
    result = run_study(args.study, args.overrides)
    return 0 if result.complete and not result.errors else 1
