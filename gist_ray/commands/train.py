"""``gist-ray train CONFIG [a.b=value ...]``: one run, logged to MLflow; rerun the same name to resume.

One local worker trains in this process (:mod:`gist_ray.train.inprocess`); several workers, a cluster address or
``resources.backend=train`` go through Ray Train (DDP, worker restarts, shared storage).
"""

from __future__ import annotations

import argparse
import os

from gist_ray import console, tracking
from gist_ray.config import Config, load_config, to_dict
from gist_ray.errors import ConfigError
from gist_ray.mlflow_ui import applicable_params, browse_hint
from gist_ray.run_data import preflight_run
from gist_ray.pretrain import ensure_pretrained
from gist_ray.timing import phase
from gist_ray.train.inprocess import runs_in_process, train_in_process
from gist_ray.train.launch import init_ray, make_trainer
from gist_ray.train.mlflow_callback import MlflowTrainCallback, open_train_run


# a rerun with the same name continues that run from its checkpoints: what they were trained as may not change
FIXED_ON_RESUME = ("model.", "method.", "gist.", "data.")


def refuse_a_different_run(cfg: Config) -> None:
    """Fail, naming the fields, when a run called ``cfg.name`` exists in MLflow with another model, method, GIST
    setting or dataset: continuing it would load checkpoints of a different model into this one."""
    c = tracking.client(cfg.tracking.uri)
    exp = c.get_experiment_by_name(cfg.tracking.experiment)
    found = exp and tracking.find_run(c, exp.experiment_id, {tracking.RUN_TAG: cfg.name, tracking.KIND_TAG: "train"})
    if not found:
        return
    old = found.data.params
    new = {k: str(v) for k, v in applicable_params(tracking.flatten(to_dict(cfg))).items()}  # as they were logged
    changed = sorted((k for k in set(old) | set(new) if k.startswith(FIXED_ON_RESUME) and old.get(k) != new.get(k)),
                     key=lambda k: (not k.endswith(("name", "enabled", "backbone", "task")), k))  # the headline first
    if changed:
        what = ", ".join(f"{k} {old.get(k, '-')} -> {new.get(k, '-')}" for k in changed[:4])
        raise ConfigError(f"name={cfg.name}: a run of that name already exists (MLflow run {found.info.run_id}) and "
                          f"rerunning a name continues it, but this config differs ({what}); give this run its own "
                          f"name, e.g. name={cfg.name}-2")


def run(args: argparse.Namespace) -> int:
    config, overrides = args.config, list(args.overrides)
    if config and "=" in config and not os.path.isfile(config):
        config, overrides = None, [config, *overrides]  # no config file: only overrides
    cfg = load_config(config, overrides)
    console.start(cfg.output_dir, cfg.name)
    refuse_a_different_run(cfg)
    d = cfg.data
    with phase("driver/preflight"):
        preflight_run(cfg, [d.train_split, d.eval_split, d.test_split])
    with phase("driver/pretrain"):
        ensure_pretrained([cfg.model.backbone], cfg.model.weights)
    with phase("driver/mlflow_open"):
        run_id = open_train_run(cfg.tracking.uri, cfg.tracking.experiment, cfg.name, to_dict(cfg))
    status = "FAILED"
    try:
        if runs_in_process(cfg):
            metrics, where = train_in_process(cfg, run_id)
        else:
            with phase("driver/ray_init"):
                init_ray(cfg.resources.address)
            result = make_trainer(cfg, callbacks=[MlflowTrainCallback(cfg.tracking.uri, run_id)]).fit()
            metrics, where = result.metrics or {}, result.path
        status = "FINISHED"
    finally:
        with phase("driver/mlflow_close"):
            tracking.client(cfg.tracking.uri).set_terminated(run_id, status)
    keys = ["epoch", "train/loss", "val/acc", "test/acc", "params/total"]
    if cfg.modality == "text":
        keys[2:4] = ["val/score", "test/score"]
    print("result: " + "  ".join(f"{k}={metrics[k]:.4g}" if isinstance(metrics.get(k), float) else
                                 f"{k}={metrics.get(k)}" for k in keys))
    print(f"checkpoints: {where}")
    t = cfg.tracking
    print(browse_hint(t.uri, tracking.experiment_id(tracking.client(t.uri), t.experiment), run_id))
    print(console.where_logs_are())
    return 0
