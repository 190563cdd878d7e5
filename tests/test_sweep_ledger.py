"""The sweep ledger on a real MLflow store and real Optuna: what a resumed sweep treats as done, continues, retires,
and the study its new searcher starts from (TPE, grid, NSGA-II, define-by-run). No Ray."""

from __future__ import annotations

import copy

import pytest

from gist_ray import tracking
from gist_ray.sweep.ledger import optuna_storage, plan_resume, read_ledger, resumed_search_spec
from gist_ray.sweep.search import make_search_alg
from gist_ray.sweep.space import Dist, SearchConfig, SweepSpec
from gist_ray.sweep.trial import config_key

BASE = {"model": {"backbone": "vit_test_tiny", "weights": "none"}, "train": {"epochs": 4}}


def _trial(c, exp, sweep, trial_id, config, status, metrics, epochs=0):
    """A trial run as MlflowSweepCallback writes it."""
    tags = {tracking.SWEEP_TAG: sweep, tracking.KIND_TAG: "trial", tracking.TRIAL_TAG: trial_id,
            tracking.CONFIG_TAG: tracking.json_tag(config), tracking.TRIAL_DIRS_TAG: tracking.json_tag([f"/runs/{trial_id}"]),
            tracking.ROLE_TAG: "tuning"}
    run_id = c.create_run(exp, tags=tags).info.run_id
    for e in range(1, epochs + 1):
        tracking.log_metrics(c, run_id, {"epoch": float(e), **metrics}, step=e)
    if status != "RUNNING":
        c.set_terminated(run_id, status)
    if status == "FAILED":
        c.set_tag(run_id, "error", "FloatingPointError: training loss became nan")
    return run_id


@pytest.fixture
def store(tmp_path):
    c = tracking.client(f"sqlite:///{tmp_path}/m.db")
    return c, tracking.experiment_id(c, "ledger")


def test_done_trials_count_unfinished_ones_continue_once_and_initial_points_are_used_once(store):
    c, exp = store
    p1, p2, p3 = ({"gist.lam": v, "train.lr": 3e-3} for v in (0.25, 0.5, 0.75))
    other = {"gist.lam": 0.1, "train.lr": 1e-3}
    done = _trial(c, exp, "s", "a1", p1, "FINISHED", {"val/acc": 0.5, "params/total": 100.0}, epochs=4)
    failed = _trial(c, exp, "s", "a2", other, "FAILED", {"val/acc": 0.1}, epochs=1)
    running = _trial(c, exp, "s", "a3", p2, "RUNNING", {"val/acc": 0.3}, epochs=2)
    twin = _trial(c, exp, "s", "a4", p2, "KILLED", {"val/acc": 0.3}, epochs=1)  # same config: cannot both continue
    _trial(c, exp, "other-sweep", "b1", p3, "FINISHED", {"val/acc": 0.9}, epochs=4)
    spec = SweepSpec("s", copy.deepcopy(BASE), SearchConfig(num_samples=5, initial_points=[p1, p2, p3]),
                     {"gist.lam": Dist("uniform", [0.1, 1.0]), "train.lr": Dist("loguniform", [1e-3, 1e-2])})
    ledger = read_ledger(c, exp, "s")
    assert [t.run_id for t in ledger.trials] == [done, failed, running, twin] and ledger.parent_id is None
    plan = plan_resume(spec, ledger)
    assert [t.run_id for t in plan.evaluated] == [done, failed]
    assert [t.run_id for t in plan.continued] == [running] and [t.run_id for t in plan.retired] == [twin]
    assert plan.initial_points == [p2, p3] and plan.to_run == 3 and plan.seen == 4
    assert plan.resume_map() == {config_key(p2): {"trial_id": "a3", "trial_dirs": ["/runs/a3"], "max_epoch": 2}}
    assert resumed_search_spec(spec, plan).search.seed == spec.search.seed + 4

    storage, name = optuna_storage(spec, plan.evaluated)
    search = make_search_alg(resumed_search_spec(spec, plan), storage=storage, study_name=name)
    trials = search._ot_study.trials
    assert [(t.state.name, t.params, t.values) for t in trials[:2]] == [("COMPLETE", p1, [0.5]), ("FAIL", other, None)]
    assert search.suggest("n1") == p2 and search.suggest("n2") == p3  # continued first, then the unused point
    assert search.suggest("n3") not in (p1, p2, p3, other)


def test_a_resumed_grid_sweep_samples_only_the_grid_points_not_done(store):
    c, exp = store
    grid = [{"gist.lam": lam, "train.lr": lr} for lam in (0.25, 0.75) for lr in (1e-3, 3e-3)]
    for i, p in enumerate(grid[:2]):
        _trial(c, exp, "g", f"g{i}", p, "FINISHED", {"val/acc": 0.4 + i / 10}, epochs=2)
    spec = SweepSpec("g", copy.deepcopy(BASE), SearchConfig(num_samples=4, sampler="grid", scheduler="none"),
                     {"gist.lam": Dist("choice", [0.25, 0.75]), "train.lr": Dist("choice", [1e-3, 3e-3])})
    plan = plan_resume(spec, read_ledger(c, exp, "g"))
    storage, name = optuna_storage(spec, plan.evaluated)
    search = make_search_alg(resumed_search_spec(spec, plan), storage=storage, study_name=name)
    assert plan.to_run == 2
    assert sorted(map(config_key, [search.suggest("x"), search.suggest("y")])) == sorted(map(config_key, grid[2:]))


def test_multi_objective_and_define_by_run_studies_are_rebuilt(store):
    c, exp = store
    mo = SweepSpec("mo", copy.deepcopy(BASE), SearchConfig(num_samples=3, sampler="nsga2", scheduler="none",
                                                           objectives={"params/total": "min"}),
                   {"gist.lam": Dist("choice", [0.25, 0.75])})
    _trial(c, exp, "mo", "m1", {"gist.lam": 0.25}, "FINISHED", {"val/acc": 0.5, "params/total": 120.0}, epochs=1)
    storage, name = optuna_storage(mo, plan_resume(mo, read_ledger(c, exp, "mo")).evaluated)
    study = make_search_alg(mo, storage=storage, study_name=name)._ot_study
    assert [(t.state.name, t.values) for t in study.trials] == [("COMPLETE", [0.5, 120.0])]

    def space(trial):
        if trial.suggest_categorical("gist.enabled", [True, False]):
            trial.suggest_float("gist.lam", 0.0, 1.5)
        return {"train.epochs": 4}

    dbr = SweepSpec("dbr", copy.deepcopy(BASE), SearchConfig(num_samples=3, scheduler="none"), {}, define_by_run=space)
    cfg_on, cfg_off = {"gist.enabled": True, "gist.lam": 0.3, "train.epochs": 4}, {"gist.enabled": False, "train.epochs": 4}
    _trial(c, exp, "dbr", "d1", cfg_on, "FINISHED", {"val/acc": 0.6}, epochs=1)
    _trial(c, exp, "dbr", "d2", cfg_off, "FINISHED", {"val/acc": 0.4}, epochs=1)
    storage, name = optuna_storage(dbr, plan_resume(dbr, read_ledger(c, exp, "dbr")).evaluated)
    study = make_search_alg(dbr, storage=storage, study_name=name)._ot_study
    assert [(t.params, t.value) for t in study.trials] == [({"gist.enabled": True, "gist.lam": 0.3}, 0.6),
                                                         ({"gist.enabled": False}, 0.4)]
    assert set(study.trials[0].distributions) == {"gist.enabled", "gist.lam"}
