"""``gist-ray methods``: every PEFT method with its trainable parameters on a backbone (meta device)."""

from __future__ import annotations

import argparse

from gist_ray.methods_table import format_methods_table, methods_table


def run(args: argparse.Namespace) -> int:
    print(format_methods_table(methods_table(args.backbone, args.num_classes)))
    return 0
