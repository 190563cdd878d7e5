"""Scaling studies: the study file, cell enumeration, skipping finished cells (real MLflow SQLite store), the
analysis outputs, ``report``, and one end-to-end study on a local Ray that a rerun does not repeat."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from gist_ray.backbones import backbone_params
from gist_ray.config import ConfigError, to_dict
from gist_ray.study.analysis import cell_records, write_study_outputs
from gist_ray.study.load import load_study
from gist_ray.study.resume import cell_signature, finished_cells, next_sweep_name
from gist_ray.study.run import run_study, sweep_spec

ROOT = Path(__file__).resolve().parents[1]


def tiny_base(tmp_path: Path, **extra) -> dict:
    base = {
        "model": {"weights": "none"},
        "method": {"name": "linear"},
        "data": {"name": "synthetic", "n_train": 64, "n_val": 32, "n_test": 32},
        "train": {"epochs": 1, "batch_size": 32, "warmup_epochs": 0},
        "resources": {"use_gpu": False, "num_workers": 1, "cpus_per_worker": 1},
        "output_dir": str(tmp_path / "runs"),
        "tracking": {"uri": f"sqlite:///{tmp_path}/mlflow.db", "experiment": "scale-tests"},
    }
    for k, v in extra.items():
        base.setdefault(k, {}).update(v) if isinstance(v, dict) else base.__setitem__(k, v)
    return base


def study_file(tmp_path: Path, name: str = "toy", grid: dict | None = None, **top) -> Path:
    doc = {"name": name, "output": str(tmp_path / "out"), "base": tiny_base(tmp_path),
           "grid": grid or {"backbones": ["vit_synth_xs", "vit_synth_s"], "methods": ["linear"], "gist": [True, False],
                            "datasets": ["shapes"], "seeds": [0]}, **top}
    p = tmp_path / f"{name}.yaml"
    p.write_text(yaml.safe_dump(doc))
    return p


# ----------------------------------------------------------------------------- the study file


def test_shipped_study_files_load_and_validate() -> None:
    toy = load_study(ROOT / "search_spaces" / "scaling_toy.yaml")
    assert toy.name == "scaling_toy" and toy.metric == "test/acc" and len(toy.cells()) == 3 * 2 * 2 * 2
    assert {c.backbone for c in toy.cells()} == {"vit_synth_xs", "vit_synth_s", "vit_synth_m"}
    vit = load_study(ROOT / "search_spaces" / "scaling_vit.yaml")
    assert len(vit.cells()) == 3 * 3 * 2 * 19 * 3
    assert {c.dataset.source for c in vit.cells()} == {"vtab"}
    # lora's rank travels with its cells only; the base method's knobs with gist_adapter's only
    lora = next(c for c in vit.cells() if c.method.name == "lora")
    cfg = vit.cell_config(lora)
    assert cfg.method.options == {"rank": 8}
    ga = next(c for c in vit.cells() if c.method.name == "gist_adapter")
    assert vit.cell_config(ga).method.options == {"bottleneck": 4, "scale": 0.1}


@pytest.mark.parametrize("change, message", [
    ({"epochs": 3}, "epochs: unknown top-level key"),
    ({"grid": {"backbones": ["vit_synth_xs"], "methods": ["linear"], "datasets": ["shapes"], "sizes": [1]}},
     "grid.sizes: unknown key"),
    ({"grid": {"methods": ["linear"], "datasets": ["shapes"]}}, "grid.backbones: required"),
    ({"grid": {"backbones": ["vit_synth_xs", "vit_nope"], "methods": ["linear"], "datasets": ["shapes"]}},
     r"grid.backbones\[1\] \(vit_nope\).*unknown backbone"),
    ({"grid": {"backbones": ["vit_synth_xs"], "methods": ["linear", {"name": "lora", "rnk": 4}],
               "datasets": ["shapes"]}}, r"grid.methods\[1\].rnk: method lora has no knob"),
    ({"grid": {"backbones": ["vit_synth_xs"], "methods": ["nope"], "datasets": ["shapes"]}},
     r"grid.methods\[0\] \(nope\).*method.name"),
    ({"grid": {"backbones": ["vit_synth_xs"], "methods": ["linear"], "datasets": ["shapes", "cifar"]}},
     r"grid.datasets\[1\]: unknown synthetic task 'cifar'"),
    ({"grid": {"backbones": ["vit_synth_xs"], "methods": ["linear"], "datasets": [{"name": "vtab", "task": "dtd"}],
               "n_train": [10]}}, "n_train: only the synthetic"),
    ({"grid": {"backbones": ["vit_synth_xs"], "methods": ["linear"], "datasets": ["shapes"], "seeds": [0, 0]}},
     "grid.seeds: duplicate"),
    ({"grid": {"backbones": ["vit_synth_xs"], "methods": ["linear"], "datasets": ["shapes"], "gist": ["yes"]}},
     r"grid.gist\[0\]: expected true/false"),
    ({"name": "bad name"}, "name: 'bad name' must be"),
    ({"metric": "acc"}, "metric: expected a logged metric"),
])
def test_bad_study_files_name_the_key(tmp_path, change, message) -> None:
    p = study_file(tmp_path)
    doc = yaml.safe_load(p.read_text())
    doc.update(change)
    p.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError, match=message):
        load_study(p)


def test_overrides_change_the_study_or_the_base(tmp_path) -> None:
    s = load_study(study_file(tmp_path), ["grid.seeds=[3, 4]", "train.epochs=2", "base.data.n_train=48",
                                            "metric=val/acc"])
    assert s.seeds == [3, 4] and s.metric == "val/acc"
    cfg = s.base
    assert cfg.train.epochs == 2 and cfg.data.n_train == 48
    with pytest.raises(ConfigError, match="train.lr"):
        load_study(study_file(tmp_path), ["train.lr=-1"])


# ----------------------------------------------------------------------------- cells


def test_cell_enumeration_order_knobs_and_labels(tmp_path) -> None:
    grid = {"backbones": ["vit_synth_xs", "vit_synth_s"],
            "methods": ["linear", {"name": "lora", "rank": 2}, {"name": "lora", "rank": 4}],
            "gist": [True, False], "datasets": ["shapes", "count"], "seeds": [0, 1], "n_train": [32, 64]}
    s = load_study(study_file(tmp_path, grid=grid))
    cells = s.cells()
    assert len(cells) == 2 * 3 * 2 * 2 * 2 * 2 and [c.index for c in cells] == list(range(len(cells)))
    # seed-major: every seed-0 cell first; GIST varies fastest
    assert {c.seed for c in cells[: len(cells) // 2]} == {0}
    assert (cells[0].gist, cells[1].gist) == (True, False) and cells[0].method == cells[1].method
    keys = s.space_keys()
    assert keys == ["model.backbone", "method.name", "method.rank", "gist.enabled", "data.name", "data.task",
                    "train.seed", "data.n_train"]
    assert all([k for k, _ in c.overrides] == keys for c in cells)  # complete points for the sweep layer
    lin = dict(cells[0].overrides)
    assert lin["method.name"] == "linear" and lin["method.rank"] == 0  # placeholder, dropped for linear
    assert s.variants.get(lin).method.options == {}
    labels = s.method_labels()
    assert sorted(labels.values()) == ["linear", "lora(rank=2)", "lora(rank=4)"]
    # distinct cells have distinct run configs
    sigs = {tuple(sorted(cell_signature(s, c).items())) for c in cells}
    assert len(sigs) == len(cells)


def _log_cell_run(client, exp_id, study, cell, sweep, status="FINISHED", acc=0.5, base=None, metric="test/acc"):
    """A trial run as the sweep layer logs it: tags, the flattened config as params, metrics."""
    from gist_ray import tracking

    cfg = to_dict((base or study.base).with_overrides(dict(cell.overrides), foreign_knobs="drop"))
    tags = {tracking.SWEEP_TAG: sweep, tracking.KIND_TAG: "trial", tracking.TRIAL_TAG: f"t{cell.index}",
            **tracking.run_tags(cfg)}
    run_id = client.create_run(exp_id, tags=tags).info.run_id
    tracking.log_params(client, run_id, {**tracking.flatten(cfg), **{f"sampled.{k}": v for k, v in cell.overrides}})
    tracking.log_metrics(client, run_id, {metric: acc, "params/total": 1000.0}, step=1)
    if status:
        client.set_terminated(run_id, status)
    return run_id


def test_finished_cells_are_skipped_from_a_real_mlflow_store(tmp_path) -> None:
    from gist_ray import tracking

    s = load_study(study_file(tmp_path, grid={"backbones": ["vit_synth_xs", "vit_synth_s"],
                                                  "methods": ["linear", "bitfit"], "gist": [True, False],
                                                  "datasets": ["shapes"], "seeds": [0, 1]}))
    cells = s.cells()
    assert len(cells) == 16
    c = tracking.client(s.tracking_uri)
    exp = tracking.experiment_id(c, s.experiment)
    assert finished_cells(s) == {} and next_sweep_name(s) == "toy-1"
    c.create_run(exp, tags={tracking.SWEEP_TAG: "toy-1", tracking.KIND_TAG: "sweep"})
    done_ids = {}
    for cell in cells[:5]:
        done_ids[cell.index] = _log_cell_run(c, exp, s, cell, "toy-1")
    _log_cell_run(c, exp, s, cells[5], "toy-1", status="FAILED")
    _log_cell_run(c, exp, s, cells[6], "toy-1", status=None)  # still RUNNING (a crashed driver)
    _log_cell_run(c, exp, s, cells[7], "toy-1", metric="val/acc")  # finished without the study metric
    _log_cell_run(c, exp, s, cells[8], "toyx-1")  # another study whose name shares the prefix
    _log_cell_run(c, exp, s, cells[9], "toy_extra-1")
    stale = s.base.with_overrides({"train.epochs": 5})
    _log_cell_run(c, exp, s, cells[10], "toy-1", base=stale)  # same tags, other base config (epochs)
    # a rerun of cell 0 in a later sweep: the newest FINISHED run wins
    newer = _log_cell_run(c, exp, s, cells[0], "toy-2", acc=0.9)

    done = finished_cells(s)
    assert set(done) == {0, 1, 2, 3, 4}
    assert done[0].info.run_id == newer and done[3].info.run_id == done_ids[3]
    todo = [cell for cell in cells if cell.index not in done]
    spec = sweep_spec(s, todo, next_sweep_name(s))
    assert spec.name == "toy-3"  # toy-2 is taken by the rerun's child run
    assert spec.search.sampler == "random" and spec.search.scheduler == "none"
    assert spec.search.num_samples == len(todo) == 11
    assert spec.search.initial_points == [dict(cell.overrides) for cell in todo]
    assert set(spec.space) == set(s.space_keys()) and spec.search.metric == "val/acc"
    for k, d in spec.space.items():
        assert d.kind == "choice" and all(p[k] in d.args for p in spec.search.initial_points)
    (Path(s.base.output_dir) / "sweeps" / "toy-7").mkdir(parents=True)
    assert next_sweep_name(s) == "toy-8"
    recs = cell_records(s, done)
    assert len(recs) == 5 and {r["acc"] for r in recs if r["cell"] == 0} == {0.9}
    assert [r["backbone_params"] for r in recs] == [backbone_params(cell.backbone) for cell in cells[:5]]
    assert [r["backbone"] for r in recs] == ["vit_synth_xs"] * 4 + ["vit_synth_s"]


def test_backbone_params_are_exact_and_head_free() -> None:
    from gist_ray.backbones import create_backbone

    m = create_backbone("vit_synth_s", 10, weights="none")
    head = sum(p.numel() for p in m.head.parameters())
    assert backbone_params("vit_synth_s") == sum(p.numel() for p in m.parameters()) - head
    sizes = [backbone_params(n) for n in ("vit_synth_xs", "vit_synth_s", "vit_synth_m")]
    assert sizes == sorted(sizes) and len(set(sizes)) == 3
    assert 85e6 < backbone_params("vit_b") < 87e6  # meta device: no weights allocated or downloaded


# ----------------------------------------------------------------------------- analysis and report


def _synthetic_records(b: float = 0.5, gain: float = 0.03, seeds: int = 4) -> list[dict]:
    rng = np.random.default_rng(0)
    out = []
    for name, n in (("xs", 4e4), ("s", 2e5), ("m", 7e5), ("l", 3e6)):
        for seed in range(seeds):
            noise = rng.normal(0, 0.002)  # shared by the pair: a seed effect
            for gist in (False, True):
                err = 30.0 * n ** -b + 0.1 - (gain if gist else 0.0)
                acc = 1 - err + noise + rng.normal(0, 0.001)
                out.append({"backbone": name, "backbone_params": n, "method": "lora", "gist": gist,
                            "dataset": "shapes", "seed": seed, "acc": acc, "trainable_params": 1e3})
    return out


def test_analysis_recovers_exponent_and_gain_and_writes_everything(tmp_path) -> None:
    recs = _synthetic_records()
    analysis, paths, summary = write_study_outputs(recs, tmp_path / "out")
    fit = next(f for f in analysis["fits"] if f["gist"] == "off")
    assert fit["b"] == pytest.approx(0.5, abs=0.1) and fit["law"] == "a*N^-b + c"
    assert fit["df"] == 1 and fit["b_lo"] is None  # 4 sizes, 3 parameters: no interval from 1 residual df
    assert [g["gain"] for g in analysis["gains"]] == pytest.approx([0.03] * 4, abs=0.003)
    assert all(g["gain_lo"] <= g["gain"] <= g["gain_hi"] and g["gain_lo"] > 0.02 for g in analysis["gains"])
    t = analysis["tests"][0]
    assert t["pairs"] == 16 and t["mean_gain"] == pytest.approx(0.03, abs=0.002) and t["t_p"] < 1e-6
    names = {p.name for p in paths}
    for stem in ("scaling", "gist_gain", "fits", "paired_tests"):
        assert {f"{stem}.md", f"{stem}.csv", f"{stem}.tex"} <= names
    for stem in ("accuracy_vs_backbone", "gist_gain", "pareto_trainable"):
        assert {f"{stem}.png", f"{stem}.svg"} <= names
    assert {"records.csv", "summary.md"} <= names and all(p.is_file() for p in paths)
    assert "| lora | xs | 0.040 | 1 | 4 |" in (tmp_path / "out" / "gist_gain.md").read_text()
    assert "| lora | off | backbone params | 4 | 4 | a*N^-b + c |" in summary and "Plots:" in summary


# ----------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_study_runs_then_a_rerun_runs_nothing(ray_local, tmp_path, monkeypatch, builds) -> None:
    import mlflow

    monkeypatch.chdir(tmp_path)
    p = study_file(tmp_path)
    first = run_study(p, verbose=False)
    # the first run built (validated) each cell's config once (issue 12); the reruns below load the study again
    assert builds and max(builds.values()) == 1, [n for n in builds.values() if n > 1]
    assert (first.cells, first.skipped, first.ran, first.done, first.sweep) == (4, 0, 4, 4, "toy-1")
    assert first.complete and not first.errors
    assert {r["gist"] for r in first.records} == {True, False} and len(first.records) == 4
    assert len(first.analysis["gains"]) == 2 and first.analysis["fits"][0].get("b") is None  # 2 sizes: no fit
    assert (tmp_path / "out" / "gist_gain.png").is_file() and (tmp_path / "out" / "scaling.md").is_file()

    second = run_study(p, verbose=False)
    assert (second.skipped, second.ran, second.done, second.sweep) == (4, 0, 4, None)
    from gist_ray.cli import main

    assert main(["scale", str(p)]) == 0  # the CLI: complete study, no errors -> exit 0 (and still runs nothing)

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    df = mlflow.search_runs(experiment_names=["scale-tests"])
    kinds = df["tags.gist_ray.kind"].value_counts().to_dict()
    assert kinds == {"trial": 4, "sweep": 1, "study": 1}
    assert set(df["status"]) == {"FINISHED"} and set(df["tags.gist_ray.study"]) == {"toy"}
    study_id = df[df["tags.gist_ray.kind"] == "study"].run_id.iloc[0]
    assert df[df["tags.gist_ray.kind"] == "sweep"]["tags.mlflow.parentRunId"].iloc[0] == study_id
    arts = {a.path for a in mlflow.tracking.MlflowClient().list_artifacts(study_id, "study")}
    assert "study/gist_gain.md" in arts and "study/accuracy_vs_backbone.png" in arts
    assert not math.isnan(df[df["tags.gist_ray.kind"] == "study"]["metrics.study/cells_done"].iloc[0])
