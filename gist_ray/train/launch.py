"""Build a Ray Train ``TorchTrainer`` for a config; start Ray locally or join a cluster."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import ray
import ray.train
from ray.train.torch import TorchConfig, TorchTrainer

from gist_ray import console
from gist_ray.config import Config, to_dict
from gist_ray.train.ray_worker import train_loop_per_worker


# Ray Train's controller polls its workers every RAY_TRAIN_HEALTH_CHECK_INTERVAL_S (default 2 s) and a worker's
# report waits for that poll: at 2 s, every epoch of a small model cost 2 s more than its work. Local Ray
# processes inherit this process's environment; on a cluster the job's runtime environment carries it.
RAY_ENV = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2"}


def init_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Join ``address`` (``auto``, ``ray://...``) or start a local Ray instance; no-op if already up.

    Without ``--verbose`` (:mod:`gist_ray.console`) Ray's processes keep their output in Ray's session log files
    (linked next to the command's log file) instead of streaming it to this terminal, and Ray's own driver logging
    is left to the console module (errors only on the terminal, the rest in the log file).
    """
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    for key, value in RAY_ENV.items():
        os.environ.setdefault(key, value)
    if address in (None, "") and os.environ.get("RAY_ADDRESS"):
        address = os.environ["RAY_ADDRESS"]  # e.g. a driver started by `ray job submit`
    loud = console.verbose()
    # Ray keeps the handlers of its "ray" logger (console.start's file and quieted console) and sets the level;
    # configure_logging=False would remove them all, and Python's last-resort handler would print to stderr
    logging_kw = {"configure_logging": True, "logging_level": "WARNING" if loud else "INFO"}
    if address in (None, "", "local"):
        # a new local instance, never whatever cluster happens to run on this machine
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=loud, **logging_kw)
        console.link_ray_logs(session_logs_dir())
    else:
        ray.init(address=address, log_to_driver=loud, runtime_env={"env_vars": dict(RAY_ENV)}, **logging_kw)


def session_logs_dir() -> str | None:
    """The local Ray session's log folder (None if Ray does not say)."""
    try:
        from ray._private.worker import _global_node  # Ray has no public accessor for it

        return _global_node.get_logs_dir_path() if _global_node is not None else None
    except Exception:  # noqa: BLE001 - a different Ray version: just no link
        return None


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
