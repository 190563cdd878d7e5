"""A run config is built (validated) once per process: the sweep and study drivers pass Config objects and derive
each trial's or cell's config once (``Variants``), instead of rebuilding from raw dicts at every layer."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from gist_ray.config import Config, to_dict
from gist_ray.study.run import run_study
from gist_ray.sweep.driver import run_sweep
from gist_ray.sweep.space import load_sweep
from test_scale import study_file
from test_sweep import sweep_file

pytestmark = pytest.mark.slow


@pytest.fixture
def builds(monkeypatch) -> Counter:
    """Every validated Config built in this process (``Config.check`` runs once per build), by content."""
    seen: Counter = Counter()
    check = Config.check

    def counting(self, where):
        check(self, where)
        seen[json.dumps(to_dict(self), sort_keys=True, default=str)] += 1

    monkeypatch.setattr(Config, "check", counting)
    return seen


def test_a_sweep_builds_each_run_config_once(ray_local, tmp_path, builds):
    p = sweep_file(tmp_path, "once", {"gist.lam": {"choice": [0.25, 0.75]}, "train.lr": {"choice": [1e-3, 3e-3]}},
                   {"num_samples": 3, "max_concurrent_trials": 2, "sampler": "grid", "scheduler": "none"},
                   protocol="vtab")
    result = run_sweep(load_sweep(p), verbose=False)
    assert len(result.rows) == 3 and result.refit  # three trials, then the refit of the best
    assert builds and max(builds.values()) == 1, [n for n in builds.values() if n > 1]


def test_a_study_builds_each_cell_config_once(ray_local, tmp_path, builds, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = run_study(study_file(tmp_path), verbose=False)
    assert res.complete and res.ran == 4
    assert builds and max(builds.values()) == 1, [n for n in builds.values() if n > 1]
