"""Text runs through the platform: the run config's text rules, and ``gist-ray train`` of a tiny text config
(in-process path) logging an MLflow run with ``val/score``."""

from __future__ import annotations

import mlflow
import pytest

from gist_ray.config import ConfigError, build_config
from gist_ray.model import build_from_config, trainable_counts
from gist_ray.text.gist import TextGistModel

TEXT = ["model.backbone=bert_test_tiny", "method.name=adapter_houlsby", "data.name=synthetic_text",
        "data.task=match", "data.n_train=64", "data.n_val=32", "data.n_test=32", "train.epochs=2",
        "train.batch_size=16"]


def test_a_text_config_builds_and_derives_its_modality() -> None:
    cfg = build_config({}, TEXT)
    assert cfg.modality == "text" and cfg.data.max_length is None
    assert build_config({}, []).modality == "image"
    model = build_from_config(cfg, 2)
    assert isinstance(model, TextGistModel)
    counts = trainable_counts(model)
    assert counts["token"] == 32 and counts["head"] > 0 and counts["method"] > 0  # hidden 32: one token row


@pytest.mark.parametrize("overrides, field", [
    (["data.name=synthetic", "data.task=shapes"], "data.name"),  # text backbone, image dataset
    (["data.image_size=32"], "data.image_size"),  # image-only field
    (["data.shots=4"], "data.shots"),
    (["model.drop_path=0.1"], "model.drop_path"),
    (["data.task=shapes"], "data.task"),
    (["method.name=gist_adapter"], "method.name"),  # a vision-only method
    (["method.name=adapter_houlsby", "method.no_such_knob=1"], "method.no_such_knob"),
    (["model.backbone=t5_test_tiny", "method.name=bitfit"], "method.name"),  # bitfit: no biases in T5
    (["model.backbone=t5_test_tiny", "method.name=peft_lora", "train.precision=fp16"], "train.precision"),
    (["objective.name=byot"], "objective.name"),
    (["train.schedule=epoch_cosine", "train.warmup_epochs=1"], "train.schedule"),
    (["data.max_length=1"], "data.max_length"),
])
def test_text_config_errors_name_the_field(overrides: list[str], field: str) -> None:
    with pytest.raises(ConfigError) as exc:
        build_config({}, TEXT + overrides)
    assert field in str(exc.value), str(exc.value)


def test_an_image_backbone_refuses_a_text_dataset_and_text_fields() -> None:
    with pytest.raises(ConfigError, match="data.name"):
        build_config({}, ["data.name=synthetic_text", "data.task=match"])
    with pytest.raises(ConfigError, match="data.max_length"):
        build_config({}, ["data.max_length=64"])


def test_gist_ray_train_of_a_text_config_logs_val_score_to_mlflow(tmp_path, monkeypatch, capsys) -> None:
    from gist_ray.cli import main

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    rc = main(["train", "name=text-run", *TEXT, f"tracking.uri={uri}", "tracking.experiment=text"])
    out = capsys.readouterr().out
    assert rc == 0 and "val/score=" in out and "test/score=" in out, out
    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name("text")
    (run,) = client.search_runs([exp.experiment_id])
    m = run.data.metrics
    assert {"val/score", "val/acc", "val/loss", "test/score", "test/acc", "train/loss", "gist/token_norm"} <= set(m)
    assert m["val/score"] == m["val/acc"] and 0.0 <= m["test/score"] <= 1.0
    assert run.data.tags["modality"] == "text" and run.data.tags["dataset"] == "match"
    assert run.data.params["data.name"] == "synthetic_text" and run.info.status == "FINISHED"
    assert len(client.get_metric_history(run.info.run_id, "val/score")) == 2  # one per epoch
