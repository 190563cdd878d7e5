"""``gist-ray data check ROOT [--kind vtab|fgvc|imagefolder|glue]``: validate a dataset root, one line per problem.

``--kind glue`` checks a GLUE root in either form (:func:`gist_ray.text.check.check_glue_root`; ``--task rte cola``
restricts it); lines the loader only warns about (QQP's skipped malformed rows) are printed but do not fail.
"""

from __future__ import annotations

import argparse

from gist_ray.data.check import check_dataset_root
from gist_ray.text.check import check_glue_root, is_warning


def run(args: argparse.Namespace) -> int:
    if args.kind == "glue":
        lines = check_glue_root(args.root, getattr(args, "task", None))
        problems = [line for line in lines if not is_warning(line)]
    else:
        lines = problems = check_dataset_root(args.root, kind=args.kind)
    for line in lines:
        print(line)
    warnings = len(lines) - len(problems)
    note = f" ({warnings} warning(s))" if warnings else ""
    print(f"{len(problems)} problem(s) in {args.root}{note}" if problems else f"{args.root}: OK{note}")
    return 1 if problems else 0
