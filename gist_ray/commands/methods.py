"""``gist-ray methods``: every PEFT method with its trainable parameters on a backbone (meta device)."""

from __future__ import annotations

import argparse

from gist_ray.methods_table import format_methods_table, methods_table
from gist_ray.objectives_table import format_objectives_table, objectives_table


def run(args: argparse.Namespace) -> int:
    if args.objectives:
        print(format_objectives_table(objectives_table(args.backbone, args.num_classes)))
    else:
        print(format_methods_table(methods_table(args.backbone, args.num_classes)))
    return 0
