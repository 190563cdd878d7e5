"""``gist-ray report EXPERIMENT --table3`` on GLUE runs this test trains (``gist-ray train``, tiny GLUE tree)."""

from __future__ import annotations

import math

import mlflow
import pytest

from text_fixtures import write_glue_tsv

TINY = ["model.backbone=bert_test_tiny", "method.name=linear", "data.name=glue", "data.train_split=attempt_train",
        "data.eval_split=attempt_val", "data.test_split=attempt_test", "data.max_length=32", "train.epochs=1",
        "train.batch_size=4", "train.lr=3e-4"]


@pytest.mark.slow
def test_report_table3_through_the_cli(tmp_path, monkeypatch, capsys) -> None:
    from gist_ray.cli import main

    root = tmp_path / "glue"
    write_glue_tsv(root)
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    common = [*TINY, f"data.root={root}", f"tracking.uri={uri}", "tracking.experiment=glue"]
    runs = [(task, gist, lam) for task in ("rte", "cola") for gist, lam in ((False, 0.75), (True, 0.25), (True, 0.75))]
    for task, gist, lam in runs:
        assert main(["train", f"name={task}-{gist}-{lam}", *common, f"data.task={task}", f"gist.enabled={gist}",
                     f"gist.lam={lam}"]) == 0
    capsys.readouterr()
    assert main(["report", "glue", "--tracking-uri", uri, "--out", str(tmp_path / "rep"), "--table3"]) == 0
    out = capsys.readouterr().out
    assert "| Method | GIST | RTE (Acc) | CoLA (MCC) | Mean | Params (M) | Δ vs no GIST |" in out, out
    assert (tmp_path / "rep" / "table3_none.md").is_file() and (tmp_path / "rep" / "table3_none.csv").is_file()

    # the expected cells, from the runs themselves: per (gist, task) the best-val lambda's test/score x100
    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name("glue")
    logged = client.search_runs([exp.experiment_id])
    assert len(logged) == 6 and all(r.data.tags["modality"] == "text" for r in logged)
    best: dict[tuple[bool, str], tuple[float, float]] = {}
    for r in logged:
        key = (r.data.tags["gist"] == "true", r.data.tags["dataset"].split("/")[1])
        m = r.data.metrics
        if key not in best or m["val/score"] > best[key][0]:
            best[key] = (m["val/score"], 100 * m["test/score"])
    rows = {line.split("|")[2].strip(): [c.strip() for c in line.split("|")[3:-1]]
            for line in out.splitlines() if line.startswith("| linear")}
    for gist, label in ((False, "off"), (True, "on")):
        assert rows[label][:2] == [f"{best[(gist, 'rte')][1]:.2f}", f"{best[(gist, 'cola')][1]:.2f}"], out
    mean = {g: (best[(g, "rte")][1] + best[(g, "cola")][1]) / 2 for g in (False, True)}
    assert rows["on"][2] == f"{mean[True]:.2f}" and rows["off"][4] == "–"
    assert math.isclose(float(rows["on"][4]), mean[True] - mean[False], abs_tol=0.006)
    assert "rte" in {r.data.params["data.task"] for r in logged}
