"""``gist-ray train CONFIG [a.b=value ...]``: one run on Ray Train, logged to MLflow; rerun the same name to resume."""

from __future__ import annotations

import argparse
import os

from gist_ray import tracking
from gist_ray.config import load_config, to_dict
from gist_ray.data import preflight
from gist_ray.pretrain import ensure_pretrained
from gist_ray.train.launch import init_ray, make_trainer
from gist_ray.train.mlflow_callback import MlflowTrainCallback, open_train_run


def run(args: argparse.Namespace) -> int:
    config, overrides = args.config, list(args.overrides)
    if config and "=" in config and not os.path.isfile(config):
        config, overrides = None, [config, *overrides]  # no config file: only overrides
    cfg = load_config(config, overrides)
    d = cfg.data
    preflight(d, [d.train_split, d.eval_split, d.test_split])
    ensure_pretrained([cfg.model.backbone], cfg.model.weights)
    init_ray(cfg.resources.address)
    run_id = open_train_run(cfg.tracking.uri, cfg.tracking.experiment, cfg.name, to_dict(cfg))
    trainer = make_trainer(cfg, callbacks=[MlflowTrainCallback(cfg.tracking.uri, run_id)])
    status = "FAILED"
    try:
        result = trainer.fit()
        status = "FINISHED"
    finally:
        tracking.client(cfg.tracking.uri).set_terminated(run_id, status)
    m = result.metrics or {}
    keys = ["epoch", "train/loss", "val/acc", "test/acc", "params/total"]
    print("result: " + "  ".join(f"{k}={m[k]:.4g}" if isinstance(m.get(k), float) else f"{k}={m.get(k)}" for k in keys))
    print(f"checkpoints: {result.path}   mlflow run: {run_id} ({cfg.tracking.uri})")
    return 0
