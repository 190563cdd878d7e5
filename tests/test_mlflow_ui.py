"""What the MLflow UI shows: run names, the parameters that apply, dataset inputs, the experiment kind, links, and
the sweep's comparison plot (real SQLite store, real matplotlib). The same, read over a real server's REST API
after a sweep: tests/test_tracking_server.py."""

from __future__ import annotations

import math

import pytest

from gist_ray import mlflow_ui, tracking
from gist_ray.config import load_config, to_dict
from gist_ray.sweep.comparison import Point, best_by_method, plot_comparison, point_of

SMALL = ["data.n_train=48", "data.n_val=16", "data.n_test=24"]


def cfg(*overrides: str):
    return load_config(None, [*SMALL, *overrides])


def test_run_names_say_method_gist_setting_dataset_backbone_seed() -> None:
    on = to_dict(cfg("method.name=gist_adapter", "gist.lam=0.75", "gist.temperature=3", "model.backbone=vit_b",
                     "train.seed=0"))
    assert mlflow_ui.run_name(on) == "gist_adapter+GIST l=0.75 T=3 | shapes | vit_b | s0"
    off = to_dict(cfg("method.name=vpt_deep", "gist.enabled=false", "train.seed=2"))
    sampled = {"gist.enabled": False, "gist.lam": 0.3, "train.lr": 0.00412, "method.length": 10}
    assert mlflow_ui.run_name(off, sampled, role="refit") == \
        f"refit: vpt_deep | shapes | {off['model']['backbone']} | s2 | lr=0.00412 length=10"
    odd = to_dict(cfg("gist.mu=0.2", "gist.interaction=js"))
    assert "+GIST l=0.75 T=3 mu=0.2 js |" in mlflow_ui.run_name(odd)


def test_a_gist_off_run_has_no_gist_knobs_and_no_unset_fields() -> None:
    off = tracking.flatten(to_dict(cfg("gist.enabled=false")))
    shown = mlflow_ui.applicable_params({**off, "sampled.gist.lam": 0.5, "sampled.gist.enabled": False})
    assert {k for k in shown if "gist." in k} == {"gist.enabled", "sampled.gist.enabled"}
    assert "data.root" not in shown and None not in shown.values()
    on = mlflow_ui.applicable_params(tracking.flatten(to_dict(cfg())))
    assert {"gist.lam", "gist.temperature", "gist.mu"} <= set(on)


def test_dataset_inputs_name_each_split_with_size_and_a_content_digest(tmp_path) -> None:
    import json

    c = tracking.client(f"sqlite:///{tmp_path}/mlflow.db")
    exp = tracking.experiment_id(c, "ui")
    assert c.get_experiment(exp).tags[mlflow_ui.EXPERIMENT_KIND_TAG] == "custom_model_development"
    run = c.create_run(exp).info.run_id
    mlflow_ui.log_datasets(c, run, cfg())
    mlflow_ui.log_datasets(c, run, cfg())  # a resumed run: not logged twice
    inputs = c.get_run(run).inputs.dataset_inputs
    contexts = {i.tags[0].value: i.dataset for i in inputs}
    assert sorted(contexts) == ["eval", "test", "train"] and len(inputs) == 3
    assert {d.name for d in contexts.values()} == {"shapes"}
    assert [json.loads(contexts[k].profile)["num_rows"] for k in ("train", "eval", "test")] == [48, 16, 24]
    digests = {d.digest for d in contexts.values()}
    assert len(digests) == 3  # each split its own content
    other_seed = {mlflow_ui._dataset(mlflow_ui._data_key(cfg("data.seed=1")), "train").digest}
    assert other_seed.isdisjoint(digests)  # other images, another digest


def test_links_open_the_runs_table() -> None:
    assert mlflow_ui.runs_url("sqlite:///mlflow.db", "3") == \
        "http://127.0.0.1:5000/#/experiments/3/runs?workflowType=machine_learning"
    assert mlflow_ui.runs_url("http://head:5000/", "3", "abc") == \
        "http://head:5000/#/experiments/3/runs/abc?workflowType=machine_learning"


def test_comparison_takes_the_best_per_method_and_gist_setting_and_draws_it(tmp_path) -> None:
    on = to_dict(cfg("method.name=vpt_deep", "gist.lam=0.5", "gist.temperature=2"))
    assert point_of(on, 0.4) == Point("vpt_deep", True, 0.5, 2.0, 0.4)
    assert point_of(to_dict(cfg("gist.enabled=false")), 0.3).lam is None
    pts = [Point("a", True, 0.5, 3.0, 0.4), Point("a", True, 1.0, 2.0, 0.6), Point("a", False, None, None, 0.5),
           Point("b", False, None, None, math.nan), Point("b", True, 0.2, 4.0, 0.1)]
    assert best_by_method(pts) == {"a": {True: 0.6, False: 0.5}, "b": {True: 0.1}}
    assert best_by_method(pts, maximise=False)["a"] == {True: 0.4, False: 0.5}
    path = plot_comparison(pts, "val/acc", tmp_path / "gist_vs_off.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000


@pytest.mark.slow
def test_a_name_is_one_run_so_another_configuration_under_it_is_refused(tmp_path, monkeypatch, capsys) -> None:
    from gist_ray.cli import main

    monkeypatch.chdir(tmp_path)
    tiny = ["model.backbone=vit_test_tiny", "model.weights=none", "train.epochs=1", "resources.use_gpu=false", *SMALL]
    assert main(["train", *tiny, "name=one"]) == 0
    capsys.readouterr()
    assert main(["train", *tiny, "name=one", "gist.enabled=false", "method.name=vpt_deep"]) == 2
    err = capsys.readouterr().err
    assert "name=one: a run of that name already exists" in err and "method.name gist_adapter -> vpt_deep" in err
    assert "gist.enabled True -> False" in err and "name=one-2" in err
    assert not (tmp_path / "runs" / "one-2").exists()
    assert main(["train", *tiny, "name=one", "train.epochs=2"]) == 0  # the same run, longer: continued
