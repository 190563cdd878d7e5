"""Shared fixtures: a private cache dir, tiny configs, one local Ray instance for the slow tests and one MLflow server."""

from __future__ import annotations

import json
import os
import sys
from collections import Counter
from pathlib import Path

import pytest

from gist_ray.tracking_server import ServerOptions
from mlflow_server import BackgroundServer, free_port, launch_server

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

os.environ.setdefault("OMP_NUM_THREADS", "1")  # tiny models: threads only oversubscribe the 2 cores
os.environ.pop("RAY_ADDRESS", None)  # tests always start their own local Ray
os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "1")
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")  # as gist_ray.train.launch.init_ray sets it
# a session-wide cache so the synthetic-pretrained backbone is built at most once per test session
os.environ.setdefault("GIST_RAY_CACHE", str(Path(os.environ.get("TMPDIR", "/tmp")) / "gist-ray-test-cache"))

TINY_OVERRIDES = [
    "model.backbone=vit_test_tiny",
    "model.weights=none",
    "data.n_train=96",
    "data.n_val=32",
    "data.n_test=32",
    "train.epochs=2",
    "train.batch_size=16",
]


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray instance (2 CPUs) shared by every test that needs Ray."""
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory) -> BackgroundServer:
    """One real ``mlflow server`` on loopback (SQLite, proxied artifacts in ``.dir``) shared by the tests that log
    through a server (test_tracking_server.py, the README's cluster command): each start costs ~10 s. Returned
    while it starts (a test may ask for it early and do other work meanwhile): call ``.ready()`` before using it.
    Every user writes to an experiment of its own."""
    d = tmp_path_factory.mktemp("mlflow-server")
    srv = launch_server(ServerOptions(f"sqlite:///{d}/mlflow.db", str(d / "artifacts"), port=free_port()),
                        log_file=d / "server.log")
    srv.dir = d
    yield srv
    assert srv.running(), srv.log_tail()  # it survived everything the tests threw at it
    srv.stop()


@pytest.fixture
def builds(monkeypatch) -> Counter:
    """Every validated Config built in this process (``Config.check`` runs once per build), by content: the sweep
    and study drivers pass Config objects and derive each trial's or cell's config once (issue 12)."""
    from gist_ray.config import Config, to_dict

    seen: Counter = Counter()
    check = Config.check

    def counting(self, where):
        check(self, where)
        seen[json.dumps(to_dict(self), sort_keys=True, default=str)] += 1

    monkeypatch.setattr(Config, "check", counting)
    return seen


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` run where CUDA is available and are skipped, with the reason, elsewhere."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (marked gpu)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
