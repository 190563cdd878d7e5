"""Report tables against hand-computed numbers, and the MLflow round trip through a real SQLite store."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest

from gist_ray.report import canonical_dataset, scaling_table, vtab_table, write_report

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


# ----------------------------------------------------------------------------- final runs from a real MLflow store


def _run(c, exp: str, role: str, protocol: str, metrics: dict, status: str | None = "FINISHED", rank: int | None = None,
         sweep: str = "", **cfg) -> str:
    """A run as gist-ray logs it: the flattened config as params, tags from ``tracking.run_tags``."""
    from gist_ray import tracking
    from gist_ray.config import build_config, to_dict

    raw = {"model": {"backbone": "vit_test_tiny", "weights": "none"}, "method": {"name": cfg.get("method", "lora")},
           "gist": {"enabled": cfg.get("gist", True)}, "data": {"task": cfg.get("dataset", "shapes")},
           "train": {"lr": cfg.get("lr", 3e-3), "seed": cfg.get("seed", 0)},
           "objective": {"name": cfg.get("objective", "gist")}}
    cfg_dict = to_dict(build_config(raw))
    tags = tracking.run_tags(cfg_dict, role=role, protocol=protocol)
    tags[tracking.KIND_TAG] = "trial" if role in ("tuning", "repeat", "cell") else "train"
    if sweep:
        tags[tracking.SWEEP_TAG] = sweep
        tags[tracking.CONFIG_TAG] = tracking.json_tag({"train.lr": cfg.get("lr", 3e-3), "gist.enabled": cfg.get("gist", True)})
    if rank is not None:
        tags[tracking.RANK_TAG] = str(rank)
    run_id = c.create_run(exp, tags=tags).info.run_id
    tracking.log_params(c, run_id, tracking.flatten(cfg_dict))
    tracking.log_metrics(c, run_id, {**metrics, "params/total": 1000.0 + 32 * cfg.get("gist", True)}, step=1)
    if status:
        c.set_terminated(run_id, status)
    return run_id


def _store(tmp_path):
    """Tuning trials (their test/acc too), repeats of two ranked configurations over 3 seeds with a duplicate and a
    deleted run, a VTAB refit, VTAB repeats without test/acc, a single run, unfinished and failed runs."""
    from gist_ray import tracking

    uri = f"sqlite:///{tmp_path}/m.db"
    c = tracking.client(uri)
    exp = tracking.experiment_id(c, "exp")
    ids: dict[str, list[str]] = {}
    for i, (gist, lr, acc) in enumerate([(True, 3e-3, 0.90), (True, 1e-3, 0.99), (False, 3e-3, 0.95), (False, 5e-3, 0.10)]):
        ids.setdefault("tuning", []).append(_run(c, exp, "tuning", "none", {"val/acc": acc, "test/acc": acc}, sweep="s1",
                                                 gist=gist, lr=lr))
    rank1 = {0: 0.50, 1: 0.60, 2: 0.70}  # lora* rank 1, seed -> test/acc
    for seed, acc in rank1.items():
        ids.setdefault("lora*", []).append(_run(c, exp, "repeat", "none", {"test/acc": acc, "val/acc": 0.9}, rank=1,
                                               sweep="s1-seeds", seed=seed))
    old_dup = ids["lora*"][1]
    ids["lora*"][1] = _run(c, exp, "repeat", "none", {"test/acc": 0.62, "val/acc": 0.9}, rank=1, sweep="s1-seeds",
                           seed=1)  # the same seed again, newer: it replaces 0.60
    deleted = _run(c, exp, "repeat", "none", {"test/acc": 0.0}, rank=1, sweep="s1-seeds", seed=3)
    c.delete_run(deleted)
    for seed in range(3):  # rank 2: another configuration of the same cell, left out
        _run(c, exp, "repeat", "none", {"test/acc": 0.99}, rank=2, sweep="s1-seeds", seed=seed, lr=1e-3)
    for seed, acc in {0: 0.40, 1: 0.45, 2: 0.47}.items():
        ids.setdefault("lora", []).append(_run(c, exp, "repeat", "none", {"test/acc": acc}, rank=1, sweep="s1-seeds",
                                              seed=seed, gist=False))
    _run(c, exp, "repeat", "none", {"test/acc": 0.01}, status=None, rank=1, sweep="s1-seeds", seed=4)  # running
    _run(c, exp, "repeat", "none", {"test/acc": 0.01}, status="FAILED", rank=1, sweep="s1-seeds", seed=5)
    ids["refit"] = [_run(c, exp, "refit", "vtab", {"test/acc": 0.81}, rank=1, dataset="dtd")]
    ids["vtab repeats"] = [_run(c, exp, "repeat", "vtab", {"val/acc": 0.7}, rank=1, sweep="v1-seeds", dataset="dtd",
                                gist=False, seed=s) for s in range(3)]
    _run(c, exp, "tuning", "vtab", {"val/acc": 0.99}, sweep="v1", dataset="dtd")
    ids["single"] = [_run(c, exp, "single", "none", {"test/acc": 0.33}, dataset="eurosat", gist=False)]
    # a study's cell whose sweep did not say its role: the study's own tag makes it a cell
    ids["cell"] = [_run(c, exp, "tuning", "none", {"test/acc": 0.55}, sweep="toy-1", dataset="count")]
    c.set_tag(ids["cell"][0], tracking.STUDY_TAG, "toy")
    return uri, ids, old_dup, deleted


def test_report_uses_final_runs_only_one_configuration_per_cell_and_names_its_runs(tmp_path, capsys) -> None:
    import statistics

    from gist_ray.report import report
    from gist_ray.results import build_cells, load_runs

    uri, ids, old_dup, deleted = _store(tmp_path)
    final, tuning = load_runs(uri, "exp")
    assert len(tuning) == 5 and {r.role for r in final} == {"repeat", "refit", "single", "cell"}
    cells = {(c.protocol, c.method, c.gist, c.dataset): c for c in build_cells(final, "test/acc")}
    assert set(cells) == {("none", "lora", True, "shapes"), ("none", "lora", False, "shapes"),
                          ("vtab", "lora", True, "dtd"), ("vtab", "lora", False, "dtd"), ("none", "lora", False, "eurosat"),
                          ("none", "lora", True, "count")}
    assert [r.run_id for r in cells[("none", "lora", True, "count")].runs] == ids["cell"]
    on = cells[("none", "lora", True, "shapes")]
    assert [r.run_id for r in on.runs] == ids["lora*"] and old_dup not in ids["lora*"] and deleted not in ids["lora*"]
    assert on.mean == pytest.approx(statistics.fmean([0.50, 0.62, 0.70]))
    assert on.std == pytest.approx(statistics.stdev([0.50, 0.62, 0.70]))
    assert any("left out configuration" in n for n in on.notes) and any("seed 1: 2 runs" in n for n in on.notes)
    off = cells[("none", "lora", False, "shapes")]
    assert [r.run_id for r in off.runs] == ids["lora"] and off.mean == pytest.approx((0.40 + 0.45 + 0.47) / 3)
    assert [r.run_id for r in cells[("vtab", "lora", True, "dtd")].runs] == ids["refit"]
    miss = cells[("vtab", "lora", False, "dtd")]
    assert not miss.runs and "no test/acc" in miss.missing and "val/acc" in miss.missing and "refit" in miss.missing
    assert [r.run_id for r in cells[("none", "lora", False, "eurosat")].runs] == ids["single"]

    paths = report("exp", uri, tmp_path / "rep")
    out = capsys.readouterr().out
    names = {p.name for p in paths}
    assert {"cells.csv", "cells.md", "vtab_none.md", "vtab_vtab.md", "scaling_none.csv"} <= names
    rows = {(r["protocol"], r["method"], r["gist"], r["dataset"]): r
            for r in csv.DictReader(io.StringIO((tmp_path / "rep" / "cells.csv").read_text()))}
    row = rows[("none", "lora", "True", "shapes")]
    assert row["n"] == "3" and row["run_ids"].split(";") == ids["lora*"] and row["roles"] == "repeat"
    assert float(row["mean"]) == pytest.approx(on.mean) and float(row["std"]) == pytest.approx(on.std)
    assert rows[("vtab", "lora", "False", "dtd")]["n"] == "0" and rows[("vtab", "lora", "False", "dtd")]["missing"]
    # one table per protocol: the tuning trials (0.99 and others) and the VTAB refit never enter the protocol-none one
    none_md = (tmp_path / "rep" / "vtab_none.md").read_text()
    assert none_md.splitlines()[2].startswith("| Method | EuroSAT | shapes |")
    assert f"| lora* | – | {100 * on.mean:.1f} ± {100 * on.std:.1f} |" in none_md and "81.0" not in none_md
    assert "| lora* | 81.0 |" in (tmp_path / "rep" / "vtab_vtab.md").read_text()
    assert "missing: vtab lora / dtd / vit_test_tiny: its 3 final runs (repeat) logged no test/acc" in out
    assert "9 final runs in 5 cells (1 missing)" in out and "5 tuning trials left out" in out


def test_report_of_tuning_trials_only_says_what_to_run_and_trials_view_is_labelled(tmp_path, capsys) -> None:
    from gist_ray import tracking
    from gist_ray.cli import main

    uri = f"sqlite:///{tmp_path}/m.db"
    c = tracking.client(uri)
    exp = tracking.experiment_id(c, "tune")
    for gist, lr, acc in [(True, 3e-3, 0.40), (True, 1e-3, 0.45), (False, 3e-3, 0.42)]:
        _run(c, exp, "tuning", "none", {"val/acc": acc, "test/acc": acc}, sweep="qs", gist=gist, lr=lr)
    assert main(["report", "tune", "--tracking-uri", uri, "--out", str(tmp_path / "rep")]) == 1
    out = capsys.readouterr().out
    assert "holds 3 tuning trials (sweeps: qs) and no final run" in out
    assert "repeat_best" in out and "protocol: vtab" in out and "gist-ray scale" in out and "--trials" in out
    assert not (tmp_path / "rep" / "cells.csv").exists()

    assert main(["report", "tune", "--tracking-uri", uri, "--out", str(tmp_path / "rep"), "--trials"]) == 0
    out = capsys.readouterr().out
    assert "not a result" in out and "val/acc (selection)" in out
    rows = {r["method"]: r for r in csv.DictReader(io.StringIO((tmp_path / "rep" / "trials.csv").read_text()))}
    assert float(rows["lora*"]["value"]) == pytest.approx(45.0) and rows["lora*"]["trials"] == "2"
    assert '"train.lr": 0.001' in rows["lora*"]["config"] and float(rows["lora"]["value"]) == pytest.approx(42.0)


def test_runs_of_other_objectives_make_cells_of_their_own(tmp_path) -> None:
    from gist_ray import results, tracking

    uri = f"sqlite:///{tmp_path}/m.db"
    c = tracking.client(uri)
    exp = tracking.experiment_id(c, "skd")
    for seed, (plain, byot) in enumerate([(0.50, 0.40), (0.52, 0.44)]):
        _run(c, exp, "single", "none", {"test/acc": plain}, seed=seed, gist=False, objective="ce")
        _run(c, exp, "single", "none", {"test/acc": byot}, seed=seed, gist=False, objective="byot")
    final, _ = results.load_runs(uri, "skd")
    cells = {cell.method: cell for cell in results.build_cells(final, "test/acc")}
    assert set(cells) == {"lora", "lora+BYOT"}  # not one cell averaging two objectives
    assert cells["lora"].mean == pytest.approx(0.51) and cells["lora+BYOT"].mean == pytest.approx(0.42)
