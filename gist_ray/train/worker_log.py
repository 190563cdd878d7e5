"""A Ray Train callback that appends every worker's metrics per report to a JSONL file (debugging, tests)."""

from __future__ import annotations

import json
from typing import Any

from ray.train import UserCallback


class WorkerMetricsLog(UserCallback):
    """One line per report: ``{"workers": [metrics of rank 0, rank 1, ...], "checkpoint": bool}``."""

    def __init__(self, path: str) -> None:
        self.path = path

    def after_report(self, run_context, metrics: list[dict[str, Any]], checkpoint) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps({"workers": metrics, "checkpoint": checkpoint is not None}, default=str) + "\n")
