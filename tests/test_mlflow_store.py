"""A new local SQLite store is a copy of the cached empty one and reads exactly as a store MLflow made itself."""

from __future__ import annotations

import sqlite3

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from gist_ray import mlflow_store, tracking


@pytest.fixture
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GIST_RAY_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def schema(path) -> tuple[list, list]:
    """Tables, indexes and the migration version; each statement's lines sorted (Alembic's batch migrations write
    a table's constraints in no fixed order: two stores MLflow made itself can differ in that order alone)."""
    with sqlite3.connect(path) as db:
        tables = sorted((t, n, sorted((sql or "").replace(",", "").splitlines()))
                        for t, n, sql in db.execute("SELECT type, name, sql FROM sqlite_master"))
        version = db.execute("SELECT version_num FROM alembic_version").fetchall()
    db.close()
    return tables, version


def test_a_new_store_is_the_migrated_empty_one_with_the_default_experiment_of_this_folder(own_cache):
    seeded = tracking.client("sqlite:///seeded.db")
    template = mlflow_store.template_path()
    assert template.is_file() and template.name == f"empty-mlflow-{mlflow.__version__}.db"
    plain = MlflowClient("sqlite:///plain.db")  # MLflow's own migrations, no gist-ray
    plain.search_experiments()
    assert schema(own_cache / "seeded.db") == schema(own_cache / "plain.db")
    a, b = seeded.get_experiment("0"), plain.get_experiment("0")
    assert (a.name, a.artifact_location, a.lifecycle_stage) == (b.name, b.artifact_location, b.lifecycle_stage)
    assert a.artifact_location == f"file://{own_cache}/mlruns/0" or a.artifact_location == str(own_cache / "mlruns" / "0")
    assert abs(a.creation_time - b.creation_time) < 60_000  # now, not when the template was made
    # the store works as a store: an experiment, a run, a metric, read back through another client
    exp = tracking.experiment_id(seeded, "tests")
    run = seeded.create_run(exp).info.run_id
    seeded.log_metric(run, "val/acc", 0.5, step=1)
    assert MlflowClient("sqlite:///seeded.db").get_run(run).data.metrics == {"val/acc": 0.5}
    # made once: a second new store copies it, leaving the template as it was
    stamp = template.stat().st_mtime_ns
    assert mlflow_store.seed_sqlite_store(f"sqlite:///{own_cache}/sub/second.db")
    assert template.stat().st_mtime_ns == stamp and schema(own_cache / "sub/second.db") == schema(own_cache / "plain.db")
    assert not list(own_cache.rglob("*.seed")) and not list(template.parent.glob("*.tmp"))


def test_an_existing_store_is_never_replaced(own_cache):
    c = tracking.client("sqlite:///m.db")
    run = c.create_run(tracking.experiment_id(c, "kept")).info.run_id
    assert not mlflow_store.seed_sqlite_store("sqlite:///m.db")
    assert tracking.client("sqlite:///m.db").get_run(run).info.run_id == run


def test_cache_off_and_other_stores_are_left_to_mlflow(own_cache, monkeypatch):
    for uri in ("http://127.0.0.1:5000", "postgresql://u@h/db", "sqlite:///x.db?timeout=5", "sqlite:///:memory:",
                "file:///tmp/mlruns"):
        assert not mlflow_store.seed_sqlite_store(uri), uri
    monkeypatch.setenv("GIST_RAY_CACHE", "off")
    assert not mlflow_store.seed_sqlite_store("sqlite:///off.db") and not (own_cache / "off.db").exists()
    tracking.experiment_id(tracking.client("sqlite:///off.db"), "made-by-mlflow")
    assert (own_cache / "off.db").is_file() and not (own_cache / "cache").exists()
