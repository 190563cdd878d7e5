"""The Tune trial: apply the sampled overrides to the base config and train.

``inline`` trains in the trial's own process (one worker; no Train controller to start). ``train`` builds and
fits a Ray Train ``TorchTrainer`` (any number of workers, GPUs) that reports to Tune through
``TuneReportCallback``; a restarted trial reuses the trainer's name and storage, so it resumes from its last
checkpoint.

A resumed sweep continues a trial its killed driver left unfinished as a new Tune trial with the same sampled
config; ``resume`` maps that config (``config_key``) to where the old trial's checkpoints are: the Tune trial
directories that trained it (inline) and its original trial id (the ``TorchTrainer``'s name).
"""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path
from typing import Any, Iterator

import pyarrow.fs as pafs
import torch
from ray import tune
from ray.tune.integration.ray_train import TuneReportCallback

from gist_ray.config import Config
from gist_ray.model import build_from_config, trainable_counts
from gist_ray.run_data import run_num_classes
from gist_ray.timing import mark
from gist_ray.train.launch import make_trainer
from gist_ray.train.loop import STATE_FILE, GistRun
from gist_ray.train.ray_worker import TuneReporter, as_directories

log = logging.getLogger(__name__)


def uses_inline(cfg: Config) -> bool:
    r = cfg.resources
    if r.backend != "auto":
        return r.backend == "inline"
    return r.num_workers == 1 and not r.use_gpu


def trial_resources(cfg: Config) -> dict[str, float]:
    """What Tune reserves for the trial process itself."""
    r = cfg.resources
    if uses_inline(cfg):
        res = {"CPU": r.cpus_per_worker}
        if r.use_gpu:
            res["GPU"] = r.gpus_per_worker
        return res
    return {"CPU": 0.01}  # the trial only drives its TorchTrainer, whose workers reserve their own resources


class OverBudget(RuntimeError):
    """A configuration with more trainable parameters than ``search.max_trainable_params``."""


def check_budget(counts: dict[str, int], budget: int | None) -> None:
    if budget is not None and counts["total"] > budget:
        raise OverBudget(f"rejected before training: {counts['total']:,} trainable parameters > "
                         f"search.max_trainable_params {budget:,} (method {counts['method']:,}, "
                         f"token {counts['token']:,}, head {counts['head']:,})")


def config_key(config: dict[str, Any]) -> str:
    """One text per sampled configuration (the same on the driver and in the trial process)."""
    return json.dumps(config, sort_keys=True, default=str)


class ContinuingReporter(TuneReporter):
    """A trial that continues an unfinished one: its own checkpoints once it has any, else the old trial's
    (newest first, across the Tune trial directories that trained it), skipping any checkpoint past
    ``max_epoch``, the last epoch MLflow holds: a driver killed between a checkpoint and its log line must not
    leave that epoch out of MLflow."""

    def __init__(self, trial_dirs: list[str], max_epoch: int) -> None:
        self.trial_dirs, self.max_epoch = trial_dirs, max_epoch

    @contextlib.contextmanager
    def checkpoints(self) -> Iterator[Iterator[str]]:
        if tune.get_checkpoint() is not None:
            with super().checkpoints() as dirs:
                yield dirs
            return
        with as_directories([c for d in self.trial_dirs for c in checkpoints_in(d)]) as dirs:
            yield (d for d in dirs if checkpoint_epoch(d) <= self.max_epoch)


def checkpoint_epoch(directory: str) -> int:
    """The epoch a checkpoint ends (unreadable: 0, and the loop's own checks say why when it tries it)."""
    try:
        return int(torch.load(Path(directory) / STATE_FILE, map_location="cpu", weights_only=True)["epoch"])
    except Exception:  # noqa: BLE001 - any unreadable state file
        return 0


def checkpoints_in(trial_dir: str) -> list[Any]:
    """The ``checkpoint_*`` directories of a Tune trial directory (a local path or a URI), newest first."""
    try:
        fs, path = pafs.FileSystem.from_uri(trial_dir)
        infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    except Exception as exc:  # noqa: BLE001 - an unreadable directory only means: nothing to continue from
        log.warning("cannot list checkpoints in %s (%s); the trial starts over", trial_dir, exc)
        return []
    names = sorted((i.base_name for i in infos if i.type == pafs.FileType.Directory
                    and i.base_name.startswith("checkpoint_")), reverse=True)
    return [tune.Checkpoint(f"{path}/{n}", filesystem=fs) for n in names]


def run_trial(config: dict[str, Any], base: Config, budget: int | None = None,
              resume: dict[str, dict] | None = None) -> None:
    """Tune entry point; ``config`` is the sampled ``{a.b: value}`` overrides; ``resume``: see the module."""
    mark("trial/start")
    for name in ("ray.tune", "ray.train"):
        logging.getLogger(name).setLevel(logging.WARNING)
    cfg = base.with_overrides(config, foreign_knobs="drop")
    prior = (resume or {}).get(config_key(config))
    if uses_inline(cfg):
        rep = ContinuingReporter(prior["trial_dirs"], prior["max_epoch"]) if prior else TuneReporter()
        run = GistRun(cfg, rep)
        check_budget(run.counts, budget)
        run.fit()
        return
    if budget is not None:
        classes = run_num_classes(cfg)
        check_budget(trainable_counts(build_from_config(cfg, classes)), budget)
    trial_id = prior["trial_id"] if prior else tune.get_context().get_trial_id()  # same trainer name: it resumes
    trainer = make_trainer(cfg, callbacks=[TuneReportCallback()], name=f"{cfg.name}-{trial_id}")
    trainer.fit()
