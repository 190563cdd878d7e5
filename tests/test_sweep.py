"""End-to-end sweeps on a local Ray: Tune + Optuna + MLflow, errors, budgets, Pareto fronts, the VTAB protocol."""

from pathlib import Path

import mlflow
import pytest
import yaml

from conftest import TINY_OVERRIDES
from gist_ray.sweep.driver import run_sweep
from gist_ray.sweep.space import load_sweep

pytestmark = pytest.mark.slow


def tiny_base(tmp_path) -> dict:
    base: dict = {}
    for text in TINY_OVERRIDES:
        key, value = text.split("=", 1)
        sec, field = key.split(".")
        base.setdefault(sec, {})[field] = yaml.safe_load(value)
    base["output_dir"] = str(tmp_path / "runs")
    base["tracking"] = {"uri": f"sqlite:///{tmp_path}/mlflow.db", "experiment": "tests"}
    base["resources"] = {"use_gpu": False}
    return base


def sweep_file(tmp_path, name, space, search, **extra) -> Path:
    doc = {"name": name, "base": tiny_base(tmp_path), "search": search, "space": space, **extra}
    p = tmp_path / f"{name}.yaml"
    p.write_text(yaml.safe_dump(doc))
    return p


def runs(tmp_path):
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    return mlflow.search_runs(experiment_names=["tests"])


def test_nan_and_over_budget_trials_error_with_reasons_and_the_sweep_goes_on(ray_local, tmp_path):
    p = sweep_file(tmp_path, "faults", {"method.name": {"choice": ["linear", "full"]}, "train.lr": {"choice": [3e-3, 1e30]}},
                   {"num_samples": 4, "max_concurrent_trials": 2, "sampler": "grid", "scheduler": "none",
                    "max_trainable_params": 5000},
                   overrides=["train.warmup_epochs=0"])
    result = run_sweep(load_sweep(p), verbose=False)
    status = {(r.config["method.name"], r.config["train.lr"]): r.status for r in result.rows}
    assert status == {("linear", 3e-3): "TERMINATED", ("linear", 1e30): "ERROR",
                      ("full", 3e-3): "ERROR", ("full", 1e30): "ERROR"}
    best = result.best()
    assert best.config == {"method.name": "linear", "train.lr": 3e-3}
    df = runs(tmp_path)
    trials = df[df["tags.gist_ray.kind"] == "trial"]
    assert len(trials) == 4 and "RUNNING" not in set(df["status"])
    failed = trials[trials["status"] == "FAILED"]
    errors = " ".join(failed["tags.error"])
    assert "training loss became" in errors and "max_trainable_params" in errors
    assert len(failed) == 3


def test_multi_objective_sweep_writes_and_logs_the_pareto_front(ray_local, tmp_path):
    p = sweep_file(tmp_path, "pareto", {"method.name": {"choice": ["linear", "gist_adapter", "vpt_deep"]},
                                        "gist.enabled": {"choice": [True, False]}},
                   {"num_samples": 4, "max_concurrent_trials": 2, "sampler": "nsga2", "scheduler": "none",
                    "objectives": {"params/total": "min"}})
    result = run_sweep(load_sweep(p), verbose=False)
    out = Path(result.pareto_dir)
    assert (out / "pareto.csv").stat().st_size > 0 and (out / "pareto.png").stat().st_size > 0
    lines = (out / "pareto.csv").read_text().splitlines()
    assert lines[0].startswith("trial_id,status,on_front,val/acc,params/total") and len(lines) == 5
    df = runs(tmp_path)
    parent = df[df["tags.gist_ray.kind"] == "sweep"].run_id.iloc[0]
    arts = {a.path for a in mlflow.tracking.MlflowClient().list_artifacts(parent, "pareto")}
    assert arts == {"pareto/pareto.csv", "pareto/pareto.png"}


def test_vtab_protocol_never_shows_test_to_the_tuner_refits_once_and_builds_each_config_once(ray_local, tmp_path,
                                                                                               builds):
    p = sweep_file(tmp_path, "proto", {"gist.lam": {"choice": [0.25, 0.75]}, "train.lr": {"choice": [1e-3, 3e-3]}},
                   {"num_samples": 3, "max_concurrent_trials": 2, "sampler": "grid", "scheduler": "none"},
                   protocol="vtab")
    spec = load_sweep(p)
    result = run_sweep(spec, verbose=False)
    assert len(result.rows) == 3  # three trials, then the refit of the best
    for row in result.rows:  # everything the tuner saw
        assert not [k for k in row.metrics if k.startswith("test/")], row.metrics
    assert "test/acc" in result.refit and 0.0 <= result.refit["test/acc"] <= 1.0
    df = runs(tmp_path)
    refit = df[df["tags.gist_ray.kind_phase"] == "refit"]
    assert len(refit) == 1 and refit["params.data.train_split"].iloc[0] == "trainval"
    trials = df[df["tags.gist_ray.kind"] == "trial"]
    assert len(trials) == 3 and trials["metrics.test/acc"].isna().all()
    # the driver built (validated) each run config once: the sweep's base, each trial's, the refit's
    assert builds and max(builds.values()) == 1, [n for n in builds.values() if n > 1]


def test_every_registered_method_runs_inside_a_sweep(ray_local, tmp_path, capsys):
    from gist_ray.methods import METHODS

    names = METHODS.names()
    p = sweep_file(tmp_path, "all-methods", {"method.name": {"choice": names}},
                   {"num_samples": len(names), "max_concurrent_trials": 2, "sampler": "grid", "scheduler": "none"},
                   overrides=["train.epochs=1", "data.n_train=32", "data.n_val=16", "data.n_test=16"])
    result = run_sweep(load_sweep(p), verbose=True)
    ran = {r.config["method.name"]: r.status for r in result.rows}
    assert ran == {n: "TERMINATED" for n in names}, {n: s for n, s in ran.items() if s != "TERMINATED"}
    progress = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("[sweep ")]
    assert f"{len(names)}/{len(names)} finished (0 errored), 0 running" in progress[-1], progress[-3:]
    trials = runs(tmp_path)
    trials = trials[trials["tags.gist_ray.kind"] == "trial"]
    assert set(trials["status"]) == {"FINISHED"}
    # each run keeps its own end time: the first trials ended long before the last ones started
    assert trials["end_time"].min() < trials["start_time"].max()


def test_a_sweep_writes_one_mlflow_run_per_trial_then_repeats_the_best_over_seeds(ray_local, tmp_path):
    p = sweep_file(tmp_path, "two", {"gist.enabled": {"choice": [True, False]}, "gist.lam": {"choice": [0.25, 0.75]}},
                   {"num_samples": 2, "max_concurrent_trials": 2, "sampler": "tpe", "scheduler": "asha",
                    "initial_points": [{"gist.enabled": True, "gist.lam": 0.25}, {"gist.enabled": False, "gist.lam": 0.75}],
                    "repeat_best": 1, "repeat_seeds": [1, 2]})
    # a trial run left by a killed driver whose trial Tune never saved: retired (soft-deleted) at the sweep's end
    from gist_ray import tracking

    c = tracking.client(f"sqlite:///{tmp_path}/mlflow.db")
    orphan = c.create_run(tracking.experiment_id(c, "tests"), tags={tracking.SWEEP_TAG: "two", tracking.KIND_TAG: "trial",
                                                                   tracking.TRIAL_TAG: "lost0001"}).info.run_id
    result = run_sweep(load_sweep(p), verbose=False)
    assert c.get_run(orphan).info.lifecycle_stage == "deleted"
    assert c.get_run(orphan).data.tags["gist_ray.orphaned"]
    assert len(result.rows) == 2 and result.best() is not None
    assert sorted(r.config["gist.enabled"] for r in result.rows) == [False, True]
    df = runs(tmp_path)
    assert set(df["status"]) == {"FINISHED"}
    sweep = df[df["tags.gist_ray.sweep"] == "two"]
    trials = sweep[sweep["tags.gist_ray.kind"] == "trial"]
    assert len(trials) == 2 and len(sweep[sweep["tags.gist_ray.kind"] == "sweep"]) == 1
    parent = sweep[sweep["tags.gist_ray.kind"] == "sweep"].iloc[0]
    assert set(trials["tags.mlflow.parentRunId"]) == {parent.run_id}
    for col in ("params.gist.lam", "params.method.name", "tags.method", "tags.backbone", "tags.gist", "tags.dataset",
                "metrics.val/acc", "metrics.train/ce_cls", "metrics.train/kl_cls_gist", "metrics.train/agreement"):
        assert col in df.columns, col
    on = trials[trials["tags.gist"] == "true"]
    assert on["metrics.train/kl_gist_cls"].notna().all()
    history = mlflow.tracking.MlflowClient().get_metric_history(trials.run_id.iloc[0], "train/loss")
    assert [m.step for m in history] == [1, 2]  # one point per epoch

    # the best configuration again over seeds 1 and 2: the repeats, final runs, are tested once each
    best = result.best()
    reps = result.repeats
    assert reps is not None and reps.name == "two-seeds" and len(reps.rows) == 2
    assert sorted(r.config["train.seed"] for r in reps.rows) == [1, 2]
    assert all({k: v for k, v in r.config.items() if k != "train.seed"} == best.config and r.status == "TERMINATED"
               for r in reps.rows)
    assert len(df[(df["tags.gist_ray.sweep"] == "two-seeds") & (df["tags.gist_ray.kind"] == "trial")]) == 2
    vals = [r.metrics["val/acc"] for r in reps.rows]
    assert parent["metrics.repeat1/val/acc/mean"] == pytest.approx(sum(vals) / 2)
    assert all("test/acc" not in r.metrics for r in result.rows)  # tuning trials never saw the test split
    assert all(0.0 <= r.metrics["test/acc"] <= 1.0 for r in reps.rows)
