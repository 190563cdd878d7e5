"""What the MLflow UI shows of gist-ray's runs: run names that say what a run is, only the parameters that apply,
datasets as MLflow dataset inputs (the Dataset column and its filter), the experiment's kind, and links that open
the runs table.

The experiment kind: MLflow 3 records it as the experiment tag ``mlflow.experimentKind`` (``genai_development`` or
``custom_model_development``, "Machine learning" in the UI); ``tracking.experiment_id`` sets
``custom_model_development``. MLflow
3.17's UI itself, however, decides what an experiment page opens on from its "GenAI | Model training" switch (the
``workflowType`` URL parameter, else the browser's last choice, else GenAI), not from that tag; so every link
gist-ray prints carries ``workflowType=machine_learning`` and opens the runs table (:func:`runs_url`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from dataclasses import asdict
from typing import Any

from mlflow.entities import Dataset

from gist_ray.config import Config, DataConfig, from_dict
from gist_ray.data import load_splits

EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING = "custom_model_development"
WORKFLOW = "workflowType=machine_learning"
GIST_KNOBS_SHOWN_WHEN_OFF = {"gist.enabled"}
DIGEST_SAMPLE = 64  # images hashed per split (evenly spaced), with every label and the shape
log = logging.getLogger(__name__)
_unreadable: set[str] = set()  # data configs whose splits could not be read here (warned once)


def _fmt(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def run_name(cfg: dict, sampled: dict[str, Any] | None = None, role: str = "") -> str:
    """``gist_adapter+GIST l=0.75 T=3 | svhn | vit_b | s0`` (GIST off: ``gist_adapter | svhn | vit_b | s0``);
    sampled values not already named (a method knob, the learning rate) follow; ``role`` (e.g. ``refit``) leads.
    ``cfg`` is the plain-dict form of a run config."""
    g, m = cfg["gist"], cfg["method"]
    method = m["name"]
    if g["enabled"]:
        method += f"+GIST l={_fmt(g['lam'])} T={_fmt(g['temperature'])}"
        if g["mu"] != 0.5:
            method += f" mu={_fmt(g['mu'])}"
        if g["interaction"] != "bkl":
            method += f" {g['interaction']}"
    parts = [method, dataset_name(cfg), cfg["model"]["backbone"], f"s{cfg['train']['seed']}"]
    named = {"method.name", "gist.enabled", "gist.lam", "gist.temperature", "gist.mu", "gist.interaction",
             "data.task", "model.backbone", "train.seed"}
    extra = [f"{k.split('.')[-1]}={_fmt(v)}" for k, v in (sampled or {}).items() if k not in named
             and not (k.startswith("gist.") and not g["enabled"])]
    if extra:
        parts.append(" ".join(extra[:4]))
    name = " | ".join(parts)
    return f"{role}: {name}" if role else name


def dataset_name(cfg: dict) -> str:
    d = cfg["data"]
    return d["task"] if d["name"] in ("synthetic", "vtab", "fgvc") else d["name"]


def applicable_params(flat: dict[str, Any]) -> dict[str, Any]:
    """The flattened config's parameters that did something: no GIST knob on a GIST-off run (sampled or not), no
    unset (None) field."""
    gist_on = str(flat.get("gist.enabled", flat.get("sampled.gist.enabled", True))).lower() == "true"
    out = {}
    for k, v in flat.items():
        key = k.removeprefix("sampled.")
        if v is None or (not gist_on and key.startswith("gist.") and key not in GIST_KNOBS_SHOWN_WHEN_OFF):
            continue
        out[k] = v
    return out


def runs_url(tracking_uri: str, experiment_id: str, run_id: str | None = None) -> str:
    """A link that opens the experiment's runs table (or one run) in the MLflow UI; for a local store, where
    ``gist-ray mlflow-server --backend-store-uri URI`` serves it by default."""
    base = tracking_uri.rstrip("/") if tracking_uri.startswith(("http://", "https://")) else "http://127.0.0.1:5000"
    page = f"runs/{run_id}" if run_id else "runs"
    return f"{base}/#/experiments/{experiment_id}/{page}?{WORKFLOW}"


def browse_hint(tracking_uri: str, experiment_id: str, run_id: str | None = None) -> str:
    """The line telling how to look at the runs: the link, and for a local store the command that serves it."""
    url = runs_url(tracking_uri, experiment_id, run_id)
    if tracking_uri.startswith(("http://", "https://")):
        return f"browse: {url}"
    return f"browse: gist-ray mlflow-server --backend-store-uri {tracking_uri}  then open {url}"


# ----------------------------------------------------------------------------- datasets


def split_roles(cfg: Config) -> list[tuple[str, str]]:
    """(split name, context) of the splits a run of ``cfg`` reads: train, eval (its model selection), test."""
    d = cfg.data
    return [(s, ctx) for s, ctx in ((d.train_split, "train"), (d.eval_split, "eval"), (d.test_split, "test")) if s]


def dataset_inputs(cfg: Config) -> list:
    """One MLflow dataset input per split the run reads: name (the dataset), a digest of its content, its source,
    and a profile with the split's size and classes; the split's role is the input's ``mlflow.data.context``."""
    from mlflow.entities import DatasetInput, InputTag

    if cfg.modality == "text":  # text splits are tokenised per backbone: the run's tags name the task instead
        return []
    return [DatasetInput(_dataset(_data_key(cfg), split), [InputTag("mlflow.data.context", ctx)])
            for split, ctx in split_roles(cfg)]


def _data_key(cfg: Config) -> str:
    return json.dumps(asdict(cfg.data), sort_keys=True, default=str)


@functools.lru_cache(maxsize=64)
def _dataset(data_key: str, split: str):
    """Cached per (data config, split): a sweep's trials share their datasets."""
    data = json.loads(data_key)
    dcfg = from_dict(DataConfig, data, "data")
    s = load_splits(dcfg, [split])[split]
    name = data["task"] if data["name"] in ("synthetic", "vtab", "fgvc") else data["name"]
    source = {"kind": data["name"], "root": data.get("root"), "task": data.get("task"), "split": split}
    if data["name"] == "synthetic":
        source["seed"] = data.get("seed")
    profile = {"split": split, "num_rows": len(s), "num_classes": s.num_classes,
               "image_shape": list(s.images.shape[1:])}
    return Dataset(name=name, digest=content_digest(s.images, s.labels), source_type="local" if data.get("root")
                   else "code", source=json.dumps(source), profile=json.dumps(profile))


def content_digest(images, labels) -> str:
    """SHA-256 (first 16 hex digits) of every label, the images' shape and up to 64 evenly spaced images."""
    import numpy as np

    h = hashlib.sha256()
    h.update(str(tuple(images.shape)).encode())
    h.update(np.ascontiguousarray(labels.numpy()).tobytes())
    step = max(1, len(labels) // DIGEST_SAMPLE)
    for i in range(0, len(labels), step):
        h.update(np.ascontiguousarray(images[i].numpy()).tobytes())
    return h.hexdigest()[:16]


def log_datasets(client, run_id: str, cfg: Config) -> None:
    """Log ``cfg``'s dataset inputs to ``run_id`` unless the run already has them (a resumed run). A dataset this
    process cannot read is not logged (said once, in a warning): the Dataset column is no reason to stop a run."""
    run = client.get_run(run_id)
    if run.inputs and run.inputs.dataset_inputs:
        return
    try:
        inputs = dataset_inputs(cfg)
    except Exception as exc:  # noqa: BLE001 - any loader failure
        key = _data_key(cfg)
        if key not in _unreadable:
            _unreadable.add(key)
            log.warning("dataset inputs not logged to MLflow for %s/%s: %s", cfg.data.name, cfg.data.task, exc)
        return
    client.log_inputs(run_id, datasets=inputs)
