"""The shipped Table-11 sweep runs end to end on a local Ray with tiny overrides (its protocol kept): every
objective x method trains, MLflow records the objective and its parameters, and the Table-11 report prints."""

from pathlib import Path

import mlflow
import pytest
import yaml

from gist_ray.cli import main
from gist_ray.report_table11 import report_table11
from gist_ray.sweep.driver import run_sweep
from gist_ray.sweep.space import load_sweep

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
OBJECTIVES = ["ce", "byot", "cs_kd", "uskd", "gist"]
METHODS = ["gist_adapter", "lora", "vpt_deep"]
PART = {"ce": "ce_cls", "byot": "kd_block1", "cs_kd": "cls_kd", "uskd": "uskd_non_target", "gist": "agreement"}


def tiny(tmp_path) -> list[str]:
    return ["model.backbone=vit_test_tiny", "model.weights=none", "data.name=synthetic", "data.task=shapes",
            "data.n_train=48", "data.n_val=16", "data.n_test=16", "train.epochs=1", "train.batch_size=16",
            "train.warmup_epochs=0", "train.cooldown_epochs=0", "train.precision=fp32", "train.eval_every=1",
            "train.checkpoint_every=1", "resources.use_gpu=false", f"output_dir={tmp_path}/runs",
            f"tracking.uri=sqlite:///{tmp_path}/mlflow.db", "tracking.experiment=tests"]


def shipped_with_one_seed(tmp_path) -> Path:
    """The shipped file with one repeat seed instead of three (the suite's time); protocol, grid, space, recipe kept."""
    shipped = ROOT / "search_spaces" / "skd_table11.yaml"
    doc = yaml.safe_load(shipped.read_text())
    assert doc["protocol"] == "vtab" and doc["search"]["repeat_best"] == 15 and len(doc["search"]["repeat_seeds"]) > 1
    doc["search"]["repeat_seeds"] = [0]
    doc["per_task"] = str(shipped.parent / doc["per_task"])
    p = tmp_path / "skd_table11.yaml"
    p.write_text(yaml.safe_dump(doc))
    return p


def test_skd_table11_runs_every_objective_and_method_and_prints_table11(ray_local, tmp_path, capsys):
    spec = load_sweep(shipped_with_one_seed(tmp_path), tiny(tmp_path))
    assert spec.protocol == "vtab" and spec.search.sampler == "grid"
    result = run_sweep(spec, verbose=False)
    ran = {(r.config["objective.name"], r.config["method.name"]): r.status for r in result.rows}
    assert ran == {(o, m): "TERMINATED" for o in OBJECTIVES for m in METHODS}, ran
    assert 0.0 <= result.refit["test/acc"] <= 1.0  # the best cell, refit on train+val and tested once
    repeated = {(r.config["objective.name"], r.config["method.name"]): r.status for r in result.repeats.rows}
    assert repeated == ran  # every cell refit (a repeat under protocol vtab) and tested

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    df = mlflow.search_runs(experiment_names=["tests"])
    assert set(df["status"]) == {"FINISHED"}
    trials = df[df["tags.gist_ray.role"] == "tuning"]
    assert len(trials) == 15 and (df["tags.gist_ray.role"] == "repeat").sum() == 15
    for objective in OBJECTIVES:
        mine = trials[trials["params.objective.name"] == objective]
        assert len(mine) == 3, objective
        assert set(mine["tags.gist"]) == {"true" if objective == "gist" else "false"}  # only gist has a token
        assert mine[f"metrics.train/{PART[objective]}"].notna().all(), objective
        has_own = objective in ("byot", "uskd")
        assert ((mine["metrics.params/objective"] > 0) == has_own).all(), objective
        assert (mine["metrics.params/total"] >= mine["metrics.params/objective"]).all()

    (table,) = report_table11("tests", f"sqlite:///{tmp_path}/mlflow.db", out_dir=tmp_path / "report")
    labels = [r["method"] for r in table.rows]
    suffix = {"ce": "", "byot": "+BYOT", "cs_kd": "+CS-KD", "uskd": "+USKD", "gist": "*"}
    groups = [labels[i : i + 5] for i in range(0, 15, 5)]  # a method's rows together, objectives in the paper's order
    assert sorted(groups) == sorted([m + suffix[o] for o in OBJECTIVES] for m in METHODS), labels
    for row in table.rows:
        assert 0.0 <= row["mean"].mean <= 100.0 and row["params_m"] > 0
    printed = capsys.readouterr().out
    assert "| Method | Mean | Natural | Specialized | Structured | Other | Params (M) | Objective (M) |" in printed
    assert "gist_adapter+BYOT" in printed and "vpt_deep*" in printed and "protocol vtab; test/acc of final runs" in printed
    assert {p.name for p in (tmp_path / "report").iterdir()} == {"table11_vtab.md", "table11_vtab.csv", "table11_vtab.tex"}
    # the command a user types prints the same table
    assert main(["report", "tests", "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db", "--table11",
                 "--out", str(tmp_path / "cli-report")]) == 0
    assert "| Method | Mean | Natural | Specialized | Structured | Other | Params (M) | Objective (M) |" in \
        capsys.readouterr().out
    (tuned,) = report_table11("tests", f"sqlite:///{tmp_path}/mlflow.db", tuning=True)  # the selection side
    assert len(tuned.rows) == 15 and "val/acc of tuning trials" in tuned.title
