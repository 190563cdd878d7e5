"""Text datasets by name: ``glue`` (either on-disk form) and ``synthetic_text``; each split tokenised through
the cache. :class:`TextDataConfig` lists the data fields a text run needs (the run config's ``data`` section
gains ``max_length``; the rest it has already)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from gist_ray.registry import Registry
from gist_ray.text import glue, synthetic
from gist_ray.text.splits import TextSplit
from gist_ray.text.tokenize_cache import cached_tokenized


@dataclass
class TextDataConfig:
    """Which text dataset, task and splits; ``max_length`` truncates each (pair of) text(s) in tokens."""

    name: str = "synthetic_text"
    task: str = "topic"
    root: Optional[str] = None
    train_split: str = "train"
    eval_split: Optional[str] = "val"
    test_split: Optional[str] = "test"
    max_length: int = 64
    n_train: int = 800  # synthetic only
    n_val: int = 200
    n_test: int = 400
    seed: int = 0


@dataclass(frozen=True)
class TextDataset:
    """A registered text dataset: ``load(cfg, split, tokenizer)``, its classes and metrics, a cheap ``check``."""

    load: Callable[[TextDataConfig, str, Any], TextSplit]
    num_classes: Callable[[TextDataConfig], int]  # known before anything is read (the head is built first)
    metrics: Callable[[TextDataConfig], tuple[tuple[str, ...], str]]  # (every metric, the selection metric)
    check: Callable[[TextDataConfig, str], None]  # raises ValueError naming the field / path; reads no rows


TEXT_DATASETS: Registry[TextDataset] = Registry("text dataset")


# ----------------------------------------------------------------------------- GLUE


def _glue_parts(cfg: TextDataConfig, split: str) -> dict[str, Any]:
    task = glue.glue_task(cfg.task)
    split = glue.canonical_split(task.key, split)
    raw = glue.protocol_source(task.key, split) if split in glue.PROTOCOL_SPLITS else split
    parts: dict[str, Any] = {"dataset": "glue", "task": task.key, "split": split,
                             "source": glue.source_fingerprint(cfg.root, task.key, raw)}
    if split in glue.PROTOCOL_SPLITS:
        parts["protocol"] = {"name": "attempt", "seed": glue.ATTEMPT_SEED, "large_val": glue.ATTEMPT_LARGE_VAL}
    return parts


def _glue_check(cfg: TextDataConfig, split: str) -> None:
    if cfg.root is None:
        raise ValueError("data.root: GLUE needs the directory holding the task folders (TSV or saved-to-disk)")
    task = glue.glue_task(cfg.task)
    split = glue.canonical_split(task.key, split)
    raw = glue.protocol_source(task.key, split) if split in glue.PROTOCOL_SPLITS else split
    d = glue.task_dir(cfg.root, task.key)
    if glue.form_of(d) == "tsv" and not (d / f"{raw}.tsv").is_file():
        raise FileNotFoundError(f"{d / f'{raw}.tsv'}: GLUE {task.key} split {split!r} needs this file")


def _glue_load(cfg: TextDataConfig, split: str, tokenizer: Any) -> TextSplit:
    _glue_check(cfg, split)
    task = glue.glue_task(cfg.task)
    return cached_tokenized(_glue_parts(cfg, split), tokenizer, cfg.max_length, task.num_classes,
                            lambda: glue.load_raw_split(cfg.root, task.key, split))


def _glue_metrics(cfg: TextDataConfig) -> tuple[tuple[str, ...], str]:
    task = glue.glue_task(cfg.task)
    return task.metrics, task.paper_metric


TEXT_DATASETS.add("glue", TextDataset(_glue_load, lambda c: glue.glue_task(c.task).num_classes, _glue_metrics,
                                      _glue_check))


# ----------------------------------------------------------------------------- synthetic


def _synthetic_n(cfg: TextDataConfig, split: str) -> int:
    return {"train": cfg.n_train, "val": cfg.n_val, "test": cfg.n_test}[split]


def _synthetic_check(cfg: TextDataConfig, split: str) -> None:
    if cfg.task not in synthetic.TASKS:
        raise ValueError(f"data.task: unknown synthetic text task {cfg.task!r}; known: {', '.join(synthetic.TASKS)}")
    if split not in synthetic.SPLIT_OFFSETS:
        raise ValueError(f"unknown split {split!r} of synthetic_text; known: {', '.join(synthetic.SPLIT_OFFSETS)}")


def _synthetic_load(cfg: TextDataConfig, split: str, tokenizer: Any) -> TextSplit:
    _synthetic_check(cfg, split)
    n = _synthetic_n(cfg, split)
    parts = {"dataset": "synthetic_text", "task": cfg.task, "split": split, "n": n, "seed": cfg.seed,
             "generator": 1}
    return cached_tokenized(parts, tokenizer, cfg.max_length, synthetic.TASKS[cfg.task],
                            lambda: synthetic.synthetic_split(cfg.task, split, n, cfg.seed))


def _synthetic_metrics(cfg: TextDataConfig) -> tuple[tuple[str, ...], str]:
    return (("pearson", "spearman"), "pearson") if cfg.task == "similarity" else (("acc",), "acc")


TEXT_DATASETS.add("synthetic_text", TextDataset(_synthetic_load, lambda c: synthetic.TASKS[c.task],
                                                _synthetic_metrics, _synthetic_check))


def load_text_split(cfg: TextDataConfig, split: str, tokenizer: Any) -> TextSplit:
    """One tokenised split of dataset ``cfg.name``."""
    return TEXT_DATASETS.get(cfg.name).load(cfg, split, tokenizer)


def check_text_splits(cfg: TextDataConfig, splits: list[str | None]) -> None:
    """Cheap pre-flight checks of the named splits (no rows read, nothing tokenised)."""
    if cfg.root is not None and not Path(cfg.root).expanduser().is_dir():
        raise ValueError(f"data.root: directory not found: {cfg.root}")
    ds = TEXT_DATASETS.get(cfg.name)
    for s in splits:
        if s:
            ds.check(cfg, s)
