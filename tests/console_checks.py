"""What a successful gist-ray command must not print: the Ray, MLflow and Optuna internals seen on the console
before issue 19 (each line below was seen there), and raw result dicts."""

from __future__ import annotations

import re

NOISE = (
    "PlacementGroupCleaner",
    "State API",
    "core_worker.cc",
    "experiment state snapshotting",
    "Updating database tables",
    "Creating initial MLflow database tables",
    "INFO mlflow",
    "Token authentication is enabled",
    "A new study created in memory",
    "TrainController pid=",
    "RayTrainWorker pid=",
    "Reporting training result",
    "Study.stop",
    "UserWarning",
    "View run",
    "View experiment at",
)
RAW_DICT = re.compile(r"\{'(epoch|train/loss|trial_id|training_iteration)'")


def noise_in(text: str) -> list[str]:
    """The lines of ``text`` that are known noise."""
    return [ln for ln in text.splitlines() if any(n in ln for n in NOISE) or RAW_DICT.search(ln)]


def assert_quiet(stdout: str, stderr: str) -> None:
    bad = noise_in(stdout) + noise_in(stderr)
    assert not bad, "noise on the console:\n" + "\n".join(bad[:20]) + f"\n--- stderr:\n{stderr[-3000:]}"
