"""Report tables against hand-computed numbers, and the MLflow round trip through a real SQLite store."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest

from gist_ray.report import canonical_dataset, records_from_mlflow, scaling_table, vtab_table, write_report

# accuracies by (method, gist) -> dataset -> per-seed values; listed out of the paper's order on purpose
VALUES = {
    ("lora", False): {"shapes": [0.80, 0.80], "eurosat": [0.90, 0.94], "cifar": [0.70, 0.72],
                      "clevr_count": [0.50, 0.40], "dtd": [0.60, 0.64]},
    ("lora", True): {"shapes": [0.85, 0.83], "eurosat": [0.95, 0.95], "cifar": [0.74, 0.76],
                     "clevr_count": [0.55, 0.45], "dtd": [0.62, 0.66]},
    ("linear", False): {"shapes": [0.60], "eurosat": [0.80], "cifar": [0.50], "clevr_count": [0.30], "dtd": [0.40]},
}
PARAMS = {("lora", False): 300_000, ("lora", True): 300_768, ("linear", False): 100_000}


def _records(backbone: str = "vit_b", backbone_params: float = 86e6, shift: float = 0.0) -> list[dict]:
    return [{"backbone": backbone, "backbone_params": backbone_params, "method": m, "gist": g, "dataset": d,
             "seed": s, "test_acc": v + shift, "trainable_params": PARAMS[(m, g)]}
            for (m, g), by_ds in VALUES.items() for d, vals in by_ds.items() for s, v in enumerate(vals)]


def _csv_rows(text: str) -> dict[str, dict[str, str]]:
    return {r["method"]: r for r in csv.DictReader(io.StringIO(text))}


def test_vtab_table_matches_hand_computation() -> None:
    t = vtab_table(_records())
    keys = [k for k, _ in t.columns]
    assert keys == ["method", "cifar", "dtd", "eurosat", "clevr_count", "shapes", "group_natural",
                    "group_specialized", "group_structured", "group_other", "mean", "delta", "params_m"]
    assert [r["method"] for r in t.rows] == ["lora", "lora*", "linear"]
    md = t.to_markdown().splitlines()
    assert md[0].startswith("| Method | Cifar100 | DTD | EuroSAT | Clevr-Count | shapes | Natural |")
    # lora: cifar 70, 72 -> 71.0 ± 1.4; Natural per seed (70+60)/2=65, (72+64)/2=68 -> 66.5 ± 2.1;
    # EuroSAT 92.0 ± 2.8; Structured 45.0 ± 7.1; Other 80.0 ± 0.0; Mean per seed 70, 70 -> 70.0 ± 0.0
    # (the mean over datasets, not of the group means, which would be 70.875)
    assert md[2] == ("| lora | 71.0 ± 1.4 | 62.0 ± 2.8 | 92.0 ± 2.8 | 45.0 ± 7.1 | 80.0 ± 0.0 | 66.5 ± 2.1 "
                     "| 92.0 ± 2.8 | 45.0 ± 7.1 | 80.0 ± 0.0 | 70.0 ± 0.0 | – | 0.30 |")
    # lora*: per-seed means 371/5=74.2 and 365/5=73.0 -> 73.6 ± 0.8; Δ = 73.6 - 70.0 = +3.6
    assert md[3] == ("| lora* | 75.0 ± 1.4 | 64.0 ± 2.8 | 95.0 ± 0.0 | 50.0 ± 7.1 | 84.0 ± 1.4 | 69.5 ± 2.1 "
                     "| 95.0 ± 0.0 | 50.0 ± 7.1 | 84.0 ± 1.4 | 73.6 ± 0.8 | +3.6 | 0.30 |")
    # one seed: no ± ; (50+40+80+30+60)/5 = 52.0
    assert md[4] == "| linear | 50.0 | 40.0 | 80.0 | 30.0 | 60.0 | 45.0 | 80.0 | 30.0 | 60.0 | 52.0 | – | 0.10 |"

    rows = _csv_rows(t.to_csv())
    assert float(rows["lora*"]["mean"]) == pytest.approx(73.6)
    assert float(rows["lora*"]["mean_std"]) == pytest.approx(np.std([74.2, 73.0], ddof=1))
    assert rows["lora*"]["mean_n"] == "2"
    assert float(rows["lora*"]["delta"]) == pytest.approx(3.6)
    assert float(rows["lora"]["group_natural"]) == pytest.approx(66.5)
    assert float(rows["lora*"]["params_m"]) == pytest.approx(0.300768)
    assert rows["lora"]["delta"] == "" and rows["linear"]["mean_std"] == ""

    tex = t.to_latex()
    assert r"\multicolumn{2}{c}{Natural}" in tex and r"\multicolumn{4}{c}{Group means}" in tex
    assert r"73.6 $\pm$ 0.8 & +3.6 & 0.30 \\" in tex and r"$\Delta$" in tex


def test_vtab_table_incomplete_rows_and_names() -> None:
    recs = _records()
    recs = [r for r in recs if not (r["method"] == "linear" and r["dataset"] == "dtd")]
    recs.append({**recs[0], "dataset": "my_task", "method": "lora"})
    t = vtab_table(recs)
    row = {r["method"]: r for r in t.rows}["linear"]
    assert row["dtd"] is None and row["group_natural"] is None and row["mean"] is None
    assert row["cifar"].mean == pytest.approx(50.0) and row["group_specialized"].mean == pytest.approx(80.0)
    assert r"my\_task" in t.to_latex()
    assert canonical_dataset("vtab/cifar100") == "cifar"
    assert canonical_dataset("Oxford-Flowers102") == "oxford_flowers102"
    assert canonical_dataset("Shapes") == "Shapes"


def test_vtab_table_several_backbones_and_filter() -> None:
    recs = _records() + _records("vit_s", 22e6, shift=-0.05)
    both = vtab_table(recs)
    assert [r["method"] for r in both.rows][:4] == ["lora (vit_b)", "lora* (vit_b)", "lora (vit_s)", "lora* (vit_s)"]
    only = vtab_table(recs, backbone="vit_s")
    assert only.rows[0]["method"] == "lora" and only.rows[0]["mean"].mean == pytest.approx(65.0)


def test_scaling_table_orders_by_size() -> None:
    recs = _records() + _records("vit_s", 22e6, shift=-0.05)
    t = scaling_table(recs)
    got = [(r["backbone"], r["method"]) for r in t.rows]
    assert got == [("vit_s", "lora"), ("vit_s", "lora*"), ("vit_s", "linear"),
                   ("vit_b", "lora"), ("vit_b", "lora*"), ("vit_b", "linear")]
    vit_s_gist = t.rows[1]
    assert vit_s_gist["backbone_params_m"] == pytest.approx(22.0)
    assert vit_s_gist["acc"].mean == pytest.approx(68.6) and vit_s_gist["delta"] == pytest.approx(3.6)
    assert "| vit_s | 22.00 | lora* | 0.30 | 5 | 68.6 ± 0.8 | +3.6 |" in t.to_markdown()


def test_write_report_files(tmp_path) -> None:
    paths = write_report(_records(), tmp_path / "report")
    expected = sorted(f"{n}.{e}" for n in ("vtab", "scaling") for e in ("md", "csv", "tex"))
    assert sorted(p.name for p in paths) == expected
    assert all(p.stat().st_size > 0 for p in paths)
    assert (tmp_path / "report" / "vtab.md").read_text().startswith("## VTAB results")


def _log_run(client, exp_id: str, tags: dict, metrics: dict, status: str | None = "FINISHED") -> str:
    from mlflow.entities import Metric

    run = client.create_run(exp_id, tags=tags)
    client.log_batch(run.info.run_id, metrics=[Metric(k, float(v), 0, 0) for k, v in metrics.items()])
    if status:
        client.set_terminated(run.info.run_id, status)
    return run.info.run_id


def test_records_from_mlflow_round_trip(tmp_path, monkeypatch) -> None:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/m.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    client = MlflowClient(tracking_uri=uri)
    exp_id = client.create_experiment("scale")
    parent = _log_run(client, exp_id, {"gist_ray.kind": "sweep", "method": "lora", "dataset": "cifar"},
                      {"test/acc": 0.99})
    logged: dict[tuple[bool, str], list[float]] = {}
    frozen = 85_800_000
    for gist in (False, True):
        for dataset in ("cifar", "eurosat"):
            for seed in (0, 1, 2):
                acc = 0.6 + 0.1 * gist + 0.05 * (dataset == "eurosat") + 0.01 * seed
                total = 300_768 if gist else 300_000
                tags = {"mlflow.parentRunId": parent, "gist_ray.kind": "trial", "method": "lora",
                        "backbone": "vit_b", "gist": "true" if gist else "false", "dataset": dataset,
                        "seed": str(seed)}
                name = "val/acc" if (gist, dataset, seed) == (True, "eurosat", 2) else "test/acc"  # fallback
                _log_run(client, exp_id, tags, {name: acc, "params/total": total, "params/frozen": frozen})
                logged.setdefault((gist, dataset), []).append(acc)
    base = {"method": "lora", "backbone": "vit_b", "gist": "false", "dataset": "cifar", "seed": "9"}
    _log_run(client, exp_id, base, {"test/acc": 0.01}, status=None)  # still running
    _log_run(client, exp_id, base, {"test/acc": 0.01}, status="FAILED")
    _log_run(client, exp_id, {"gist_ray.kind": "other"}, {"test/acc": 0.01})  # no method/dataset tags

    records = records_from_mlflow(uri, "scale")
    assert len(records) == 12
    r = next(x for x in records if x["gist"] and x["dataset"] == "eurosat" and x["seed"] == 2)
    assert r["metric"] == "val/acc" and r["test_acc"] is None and r["acc"] == pytest.approx(0.77)
    assert {x["seed"] for x in records} == {0, 1, 2} and {x["gist"] for x in records} == {False, True}
    assert all(x["backbone_params"] == 300_000 + frozen for x in records)
    assert {x["trainable_params"] for x in records} == {300_000, 300_768}

    t = vtab_table(records)
    rows = {row["method"]: row for row in t.rows}
    for (gist, dataset), vals in logged.items():
        cell = rows["lora*" if gist else "lora"][dataset]
        assert cell.mean == pytest.approx(100 * np.mean(vals))
        assert cell.std == pytest.approx(100 * np.std(vals, ddof=1))
        assert cell.n_seeds == 3
    assert rows["lora*"]["delta"] == pytest.approx(10.0)
    assert rows["lora*"]["params_m"] == pytest.approx(0.300768)

    with pytest.raises(ValueError, match="no MLflow experiment"):
        records_from_mlflow(uri, "missing")
