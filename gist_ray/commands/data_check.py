"""``gist-ray data check ROOT``: validate a dataset root, one line per problem."""

from __future__ import annotations

import argparse

from gist_ray.data.check import check_dataset_root


def run(args: argparse.Namespace) -> int:
    problems = check_dataset_root(args.root, kind=args.kind)
    for line in problems:
        print(line)
    print(f"{len(problems)} problem(s) in {args.root}" if problems else f"{args.root}: OK")
    return 1 if problems else 0
