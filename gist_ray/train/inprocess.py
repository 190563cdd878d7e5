"""One run trained in this process (``gist-ray train`` with one local worker): no Ray, the same loop, checkpoints
and MLflow records as the Ray Train path.

Ray Train would add a controller, helper actors and a worker process (about 25 s on 2 CPU cores before the first
step) and block on every report until its controller polls; a single local worker gains nothing from them. Resume
works the same way: rerunning the same ``name`` continues from the newest checkpoint under
``<output_dir>/<name>/`` and reuses the MLflow run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch

from gist_ray import tracking
from gist_ray.config import Config
from gist_ray.console import Progress
from gist_ray.train.loop import GistRun, LocalReporter

SHOWN = ("train/loss", "train/acc", "val/acc", "test/acc", "test/best_acc")
SHOWN_TEXT = ("train/loss", "train/acc", "val/score", "test/score")  # score: the task's selection metric


def shown(m: dict[str, Any]) -> tuple[str, ...]:
    """The metrics an epoch line shows: accuracy for images, the task's score for text."""
    return SHOWN if "val/acc" in m or "test/acc" in m else SHOWN_TEXT


def runs_in_process(cfg: Config) -> bool:
    """One worker on this machine (``resources.backend`` auto or inline) and local storage."""
    r = cfg.resources
    local = r.address in (None, "", "local") and "://" not in cfg.output_dir
    if r.backend == "inline":
        return True
    return r.backend == "auto" and r.num_workers == 1 and local


def device_for(cfg: Config) -> torch.device:
    use = cfg.resources.use_gpu
    return torch.device("cuda" if torch.cuda.is_available() and use is not False else "cpu")


class EpochLog:
    """Logs each epoch's metrics to an MLflow run once: an epoch the run already holds (a resumed run retraining
    epochs after its last checkpoint) is skipped, so every epoch appears once."""

    def __init__(self, uri: str, run_id: str) -> None:
        self.c, self.run_id = tracking.client(uri), run_id
        self.logged = max((int(m.step) for m in self.c.get_metric_history(run_id, "epoch")), default=0)

    def __call__(self, metrics: dict[str, Any]) -> None:
        epoch = int(metrics.get("epoch", 0))
        if epoch <= self.logged:
            return
        tracking.log_metrics(self.c, self.run_id, tracking.numeric_metrics(metrics), step=epoch)
        self.logged = epoch


def epoch_line(total: int, echo: Callable[[str], None] = print) -> Callable[[dict[str, Any]], None]:
    """A listener printing one line per epoch."""

    def show(m: dict[str, Any]) -> None:
        parts = [f"{k} {m[k]:.4f}" for k in shown(m) if isinstance(m.get(k), float)]
        echo(f"epoch {int(m.get('epoch', 0))}/{total}  " + "  ".join(parts) + f"  ({m.get('epoch_time_s', 0):.1f} s)")

    return show


def epoch_bar(bar: Progress) -> Callable[[dict[str, Any]], None]:
    """A listener advancing a progress bar by one epoch, noting the latest loss and accuracy."""

    def advance(m: dict[str, Any]) -> None:
        bar.update(1, "  ".join(f"{k} {m[k]:.3f}" for k in shown(m) if isinstance(m.get(k), float)))

    return advance


def train_in_process(cfg: Config, run_id: str, echo: Callable[[str], None] = print,
                     progress: str | None = None) -> tuple[dict[str, Any], Path]:
    """Train (or resume) ``cfg`` here, logging to the open MLflow run ``run_id``; returns the final metrics and the
    checkpoint directory. One line per epoch, or with ``progress`` (a label) a progress bar instead."""
    directory = Path(cfg.output_dir) / cfg.name
    bar = Progress(cfg.train.epochs, progress) if progress else None
    show = epoch_bar(bar) if bar else epoch_line(cfg.train.epochs, echo)
    reporter = LocalReporter(directory, device_for(cfg), keep=2, on_report=[EpochLog(cfg.tracking.uri, run_id), show])
    try:
        return GistRun(cfg, reporter).fit(), directory
    finally:
        if bar:
            bar.close()
