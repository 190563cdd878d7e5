"""A new local SQLite MLflow store starts as a copy of an empty, fully migrated one.

MLflow builds a new SQLite store by running every Alembic migration of its schema: about 2 s of CPU on the 2-core
machines here, paid by every fresh ``mlflow.db`` (each new project folder, each test). The first time a version
of MLflow creates a store, gist-ray keeps the empty result in the cache (``<cache>/mlflow-stores/``, one file per
MLflow version); later new stores are a copy of it (milliseconds), with the ``Default`` experiment's artifact
location and creation time set as MLflow would have set them for this store. An existing file is never touched;
a store that is not a plain local SQLite file, or ``GIST_RAY_CACHE=off``, is left to MLflow.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import time
from pathlib import Path

from gist_ray.cache import cache_root, caching_enabled

PREFIX = "sqlite:///"


def local_sqlite_path(uri: str) -> Path | None:
    """The file of a ``sqlite:///path`` URI (relative or absolute); None for anything else."""
    if not uri.startswith(PREFIX) or "?" in uri or uri.endswith(":memory:"):
        return None
    return Path(uri[len(PREFIX):])


def template_path() -> Path:
    import mlflow

    return cache_root() / "mlflow-stores" / f"empty-mlflow-{mlflow.__version__}.db"


def default_artifact_location() -> str:
    """What MLflow gives the ``Default`` experiment (id 0) of a store created here and now."""
    from mlflow.store.tracking import DEFAULT_LOCAL_FILE_AND_ARTIFACT_PATH
    from mlflow.tracking._tracking_service.utils import _SERVER_ARTIFACT_ROOT_ENV_VAR
    from mlflow.utils.uri import append_to_uri_path, resolve_uri_if_local

    root = os.environ.get(_SERVER_ARTIFACT_ROOT_ENV_VAR, DEFAULT_LOCAL_FILE_AND_ARTIFACT_PATH)
    return append_to_uri_path(resolve_uri_if_local(root), "0")


def _make_template(template: Path) -> None:
    """Let MLflow create an empty store, then move it into place atomically (concurrent makers are harmless)."""
    from mlflow.tracking import MlflowClient

    template.parent.mkdir(parents=True, exist_ok=True)
    tmp = template.with_name(f"{template.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    client = MlflowClient(tracking_uri=f"{PREFIX}{tmp.resolve()}")
    client.search_experiments()  # runs the migrations
    client._tracking_client.store.engine.dispose()  # noqa: SLF001 - close the file before moving it
    os.replace(tmp, template)


def seed_sqlite_store(uri: str) -> bool:
    """Create the store of ``uri`` from the cached empty one if it is a local SQLite file that does not exist yet.
    Returns whether it did; on any failure nothing is left at the store's path and MLflow creates it as usual (a
    process killed while copying leaves only a hidden ``.<name>.<pid>.seed`` file beside it)."""
    path = local_sqlite_path(uri)
    if path is None or path.exists() or not caching_enabled():
        return False
    template = template_path()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.seed")
    try:
        if not template.is_file():
            _make_template(template)
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(template, tmp)
        now = int(time.time() * 1000)
        with sqlite3.connect(tmp) as db:
            db.execute("UPDATE experiments SET artifact_location = ?, creation_time = ?, last_update_time = ? "
                       "WHERE experiment_id = 0", (default_artifact_location(), now, now))
        db.close()
        os.link(tmp, path)  # fails if another process created the store meanwhile: theirs stays
        return True
    except Exception:  # noqa: BLE001 - only a shortcut: whatever went wrong, MLflow creates the store as before
        return False
    finally:
        tmp.unlink(missing_ok=True)
