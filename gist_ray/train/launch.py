"""Build a Ray Train ``TorchTrainer`` for a config; start Ray locally or join a cluster."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import ray
import ray.train
from ray.train.torch import TorchConfig, TorchTrainer

from gist_ray.config import Config, to_dict
from gist_ray.train.ray_worker import train_loop_per_worker


# Ray Train's controller polls its workers every RAY_TRAIN_HEALTH_CHECK_INTERVAL_S (default 2 s) and a worker's
# report waits for that poll: at 2 s, every epoch of a small model cost 2 s more than its work. Local Ray
# processes inherit this process's environment; on a cluster the job's runtime environment carries it.
RAY_ENV = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2"}


def init_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Join ``address`` (``auto``, ``ray://...``) or start a local Ray instance; no-op if already up."""
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    for key, value in RAY_ENV.items():
        os.environ.setdefault(key, value)
    if address in (None, "") and os.environ.get("RAY_ADDRESS"):
        address = os.environ["RAY_ADDRESS"]  # e.g. a driver started by `ray job submit`
    if address in (None, "", "local"):
        # a new local instance, never whatever cluster happens to run on this machine
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=True,
                 configure_logging=True, logging_level="WARNING")
    else:
        ray.init(address=address, logging_level="WARNING", runtime_env={"env_vars": dict(RAY_ENV)})


def cluster_has_gpu() -> bool:
    return ray.cluster_resources().get("GPU", 0) > 0


def storage_path(cfg: Config) -> str:
    """Ray needs an absolute path (or a URI such as ``s3://`` for shared storage on a cluster)."""
    out = cfg.output_dir
    return out if "://" in out else str(Path(out).resolve())


def make_trainer(cfg: Config, callbacks: Sequence[Any] = (), name: str | None = None):
    """A TorchTrainer running :func:`train_loop_per_worker` with ``cfg``; same name + storage = resume."""
    r = cfg.resources
    use_gpu = cluster_has_gpu() if r.use_gpu is None else r.use_gpu
    per_worker = {"CPU": r.cpus_per_worker, **({"GPU": r.gpus_per_worker} if use_gpu else {})}
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config=to_dict(cfg),
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(num_workers=r.num_workers, use_gpu=use_gpu, resources_per_worker=per_worker),
        run_config=ray.train.RunConfig(
            name=name or cfg.name,
            storage_path=storage_path(cfg),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            failure_config=ray.train.FailureConfig(max_failures=r.max_failures),
            callbacks=list(callbacks),
        ),
    )
