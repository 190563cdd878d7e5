"""The Tune trial: apply the sampled overrides to the base config and train.

``inline`` trains in the trial's own process (one worker; no Train controller to start). ``train`` builds and
fits a Ray Train ``TorchTrainer`` (any number of workers, GPUs) that reports to Tune through
``TuneReportCallback``; a restarted trial reuses the trainer's name and storage, so it resumes from its last
checkpoint.
"""

from __future__ import annotations

import logging
from typing import Any

from ray import tune
from ray.tune.integration.ray_train import TuneReportCallback

from gist_ray.config import Config, build_config
from gist_ray.data import load_splits
from gist_ray.model import build_from_config, trainable_counts
from gist_ray.sweep.space import apply_overrides
from gist_ray.timing import mark
from gist_ray.train.launch import make_trainer
from gist_ray.train.loop import GistRun
from gist_ray.train.ray_worker import TuneReporter


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


def run_trial(config: dict[str, Any], base: dict, budget: int | None = None) -> None:
    """Tune entry point; ``config`` is the sampled ``{a.b: value}`` overrides."""
    mark("trial/start")
    for name in ("ray.tune", "ray.train"):
        logging.getLogger(name).setLevel(logging.WARNING)
    cfg = build_config(apply_overrides(base, config))
    if uses_inline(cfg):
        run = GistRun(cfg, TuneReporter())
        check_budget(run.counts, budget)
        run.fit()
        return
    if budget is not None:
        classes = load_splits(cfg.data, [cfg.data.train_split])[cfg.data.train_split].num_classes
        check_budget(trainable_counts(build_from_config(cfg, classes)), budget)
    trial_id = tune.get_context().get_trial_id()
    trainer = make_trainer(cfg, callbacks=[TuneReportCallback()], name=f"{cfg.name}-{trial_id}")
    trainer.fit()
