"""GLUE: the nine tasks, their metrics, and two on-disk forms.

**TSV distribution layout** (what ``download_glue_data.py`` writes): ``<root>/<DIR>/{train,dev,test}.tsv`` with
``DIR`` one of CoLA, SST-2, MRPC, STS-B, QQP, MNLI, QNLI, RTE, WNLI; MNLI has ``dev_matched.tsv``,
``dev_mismatched.tsv``, ``test_matched.tsv``, ``test_mismatched.tsv``. CoLA's train/dev have no header (columns:
source, label, original mark, sentence); every other file has a header, read by column name. Files are read with
no quoting (``csv.QUOTE_NONE``), as GLUE's own processors do. A row whose column count differs from the header's
is an error naming file and line, except in QQP, whose official train file has a few such rows that every GLUE
processor skips (they are skipped and counted; :func:`gist_ray.text.check.check_glue_root` lists them).

**Hugging Face ``datasets`` saved-to-disk form**: ``load_dataset("nyu-mll/glue", task).save_to_disk(...)``, i.e.
``<root>/<task>/dataset_dict.json`` (task directory named ``cola``, ``sst2``, ... or as in the TSV layout), or
``<root>`` itself being that task's DatasetDict. Columns and label ids are the ``glue`` dataset's.

Splits: ``train``, ``dev`` (MNLI: ``dev_matched`` = ``dev``, ``dev_mismatched``), ``test`` (MNLI: ``test_matched``,
``test_mismatched``; GLUE test labels are not public: rows load with label -1 and cannot be scored), and the
three splits of the protocol behind the paper's Table 3 (ATTEMPT, Asai et al. 2022, ``attempt/data/tasks.py``,
seed 42): ``attempt_train``, ``attempt_val``, ``attempt_test``:

- small tasks (CoLA, STS-B, MRPC, RTE, WNLI): train = train; the dev set, permuted by ``torch.randperm`` with a
  generator seeded 42, is split in halves: first half val, second half test;
- large tasks (SST-2, QQP, QNLI): the train set permuted the same way: its first 1000 rows are val, the rest
  train; test = dev;
- MNLI: train = train, val = dev_mismatched, test = dev_matched.

With rows in the ``glue`` dataset's order (saved-to-disk form) these are ATTEMPT's rows exactly; the TSV files
hold the same rows in the same order except where the Hugging Face builder dropped malformed ones (QQP).

Labels: the ``glue`` dataset's ids (MNLI: entailment 0, neutral 1, contradiction 2; QNLI/RTE: entailment 0,
not_entailment 1; the binary tasks 0/1 as in the files). STS-B scores become 26 class bins of width 0.2
(:mod:`gist_ray.text.metrics`).
"""

from __future__ import annotations

import csv
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gist_ray.text.metrics import STSB_CLASSES, score_to_bin
from gist_ray.text.splits import RawSplit

log = logging.getLogger(__name__)
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # MNLI parse columns are long
ATTEMPT_SEED = 42
ATTEMPT_LARGE_VAL = 1000


@dataclass(frozen=True)
class GlueTask:
    """One GLUE task: its directory, columns in both forms, labels, metrics, and protocol group."""

    key: str
    dir: str
    text_cols: tuple[str, ...]  # TSV header names (CoLA: column indices as strings)
    label_col: str
    hf_cols: tuple[str, ...]
    labels: dict[str, int] | None  # None: a 0-5 similarity score (STS-B)
    metrics: tuple[str, ...]  # every metric reported
    paper_metric: str  # the Table 3 column's metric (the selection score)
    group: str  # "small" | "large" | "mnli" (ATTEMPT protocol)
    header: bool = True

    @property
    def num_classes(self) -> int:
        return STSB_CLASSES if self.labels is None else len(set(self.labels.values()))


BINARY = {"0": 0, "1": 1}
NLI2 = {"entailment": 0, "not_entailment": 1}
GLUE_TASKS: dict[str, GlueTask] = {t.key: t for t in (
    GlueTask("cola", "CoLA", ("3",), "1", ("sentence",), BINARY, ("mcc",), "mcc", "small", header=False),
    GlueTask("sst2", "SST-2", ("sentence",), "label", ("sentence",), BINARY, ("acc",), "acc", "large"),
    GlueTask("mrpc", "MRPC", ("#1 String", "#2 String"), "Quality", ("sentence1", "sentence2"), BINARY,
             ("acc", "f1"), "acc", "small"),
    GlueTask("stsb", "STS-B", ("sentence1", "sentence2"), "score", ("sentence1", "sentence2"), None,
             ("pearson", "spearman"), "pearson", "small"),
    GlueTask("qqp", "QQP", ("question1", "question2"), "is_duplicate", ("question1", "question2"), BINARY,
             ("acc", "f1"), "acc", "large"),
    GlueTask("mnli", "MNLI", ("sentence1", "sentence2"), "gold_label", ("premise", "hypothesis"),
             {"entailment": 0, "neutral": 1, "contradiction": 2}, ("acc",), "acc", "mnli"),
    GlueTask("qnli", "QNLI", ("question", "sentence"), "label", ("question", "sentence"), NLI2, ("acc",), "acc",
             "large"),
    GlueTask("rte", "RTE", ("sentence1", "sentence2"), "label", ("sentence1", "sentence2"), NLI2, ("acc",), "acc",
             "small"),
    GlueTask("wnli", "WNLI", ("sentence1", "sentence2"), "label", ("sentence1", "sentence2"), BINARY, ("acc",),
             "acc", "small"),
)}
TABLE3_TASKS = ("mnli", "qqp", "qnli", "sst2", "stsb", "mrpc", "rte", "cola")  # the paper's eight, its order
SKIP_MALFORMED = ("qqp",)
RAW_SPLITS = ("train", "dev", "test", "dev_matched", "dev_mismatched", "test_matched", "test_mismatched")
PROTOCOL_SPLITS = ("attempt_train", "attempt_val", "attempt_test")
HF_SPLIT = {"train": "train", "dev": "validation", "test": "test", "dev_matched": "validation_matched",
            "dev_mismatched": "validation_mismatched", "test_matched": "test_matched",
            "test_mismatched": "test_mismatched"}


def glue_task(task: str) -> GlueTask:
    key = task.lower().replace("-", "")
    if key not in GLUE_TASKS:
        raise ValueError(f"unknown GLUE task {task!r}; known: {', '.join(GLUE_TASKS)}")
    return GLUE_TASKS[key]


def split_names(task: str) -> tuple[str, ...]:
    """The raw split names a task has (MNLI's matched / mismatched ones instead of dev / test)."""
    if glue_task(task).key == "mnli":
        return ("train", "dev_matched", "dev_mismatched", "test_matched", "test_mismatched")
    return ("train", "dev", "test")


def canonical_split(task: str, split: str) -> str:
    """``split`` with MNLI's aliases resolved (``dev`` -> ``dev_matched``, ``test`` -> ``test_matched``)."""
    t = glue_task(task)
    if t.key == "mnli" and split in ("dev", "test"):
        split = f"{split}_matched"
    if split not in split_names(t.key) and split not in PROTOCOL_SPLITS:
        known = ", ".join(split_names(t.key) + PROTOCOL_SPLITS)
        raise ValueError(f"GLUE {t.key}: unknown split {split!r}; known: {known}")
    return split


# ----------------------------------------------------------------------------- the two on-disk forms


def task_dir(root: str | os.PathLike, task: str) -> Path:
    """The directory of ``task`` under ``root`` (TSV dir name or the HF name), or ``root`` itself if it is one."""
    t = glue_task(task)
    r = Path(root).expanduser()
    for name in (t.dir, t.key, t.dir.lower(), t.dir.replace("-", "")):
        if (r / name).is_dir():
            return r / name
    if r.name.lower().replace("-", "") == t.key or (r / "dataset_dict.json").is_file():
        return r
    raise FileNotFoundError(f"{r}: no directory for GLUE task {t.key} (looked for {t.dir}/ and {t.key}/)")


def form_of(directory: Path) -> str:
    """``hf`` for a ``datasets`` DatasetDict saved to disk, ``tsv`` otherwise."""
    return "hf" if (directory / "dataset_dict.json").is_file() else "tsv"


def source_fingerprint(root: str | os.PathLike, task: str, split: str) -> dict[str, Any]:
    """What identifies the rows of a raw split on disk (hashed into the tokenisation cache key)."""
    d = task_dir(root, task)
    if form_of(d) == "hf":
        state = d / HF_SPLIT[split] / "state.json"
        return {"form": "hf", "state": state.read_text() if state.is_file() else str(d)}
    f = d / f"{split}.tsv"
    st = f.stat()
    return {"form": "tsv", "path": str(f.resolve()), "bytes": st.st_size, "mtime_ns": st.st_mtime_ns}


@dataclass
class TsvRows:
    """Rows of one TSV file: texts, raw label strings (None for test files), each row's line number, and the
    malformed rows as 'file:line: why'."""

    texts: list[list[str]]
    labels: list[str] | None
    lines: list[int]
    malformed: list[str]


def read_tsv(path: Path, task: GlueTask) -> TsvRows:
    """The text columns and the label column of a GLUE TSV file (test files have no label column)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: GLUE file not found")
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        rows = list(reader)
    test_file = path.stem.startswith("test")
    if task.header or test_file:  # CoLA's test.tsv has a header (index, sentence)
        header, body, first_line = rows[0] if rows else [], rows[1:], 2
        cols = {name: i for i, name in enumerate(header)}
        missing = [c for c in task.text_cols + (() if test_file else (task.label_col,)) if c not in cols]
        if task.key == "cola" and test_file:
            missing, text_idx = [], [cols.get("sentence", 1)]
        else:
            text_idx = [cols[c] for c in task.text_cols if c in cols]
        if missing:
            raise ValueError(f"{path}:1: header lacks column(s) {missing}; found {header}")
        label_idx = None if test_file else cols[task.label_col]
        width = len(header)
    else:
        body, first_line = rows, 1
        text_idx, label_idx, width = [int(c) for c in task.text_cols], int(task.label_col), 4
    texts: list[list[str]] = [[] for _ in text_idx]
    labels: list[str] | None = None if label_idx is None else []
    malformed: list[str] = []
    lines: list[int] = []
    for k, row in enumerate(body):
        if len(row) != width:
            malformed.append(f"{path}:{first_line + k}: {len(row)} columns, expected {width}")
            continue
        lines.append(first_line + k)
        for j, i in enumerate(text_idx):
            texts[j].append(row[i])
        if labels is not None:
            labels.append(row[label_idx].strip())
    return TsvRows(texts, labels, lines, malformed)


def _labels_from_strings(task: GlueTask, values: list[str], path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    if task.labels is None:
        try:
            scores = np.array([float(v) for v in values], dtype=np.float32)
        except ValueError as exc:
            raise ValueError(f"{path}: STS-B score is not a number ({exc})") from None
        return score_to_bin(scores), scores
    bad = sorted({v for v in values if v not in task.labels})
    if bad:
        raise ValueError(f"{path}: unknown label(s) {bad[:5]} for GLUE {task.key}; expected {sorted(task.labels)}")
    return np.array([task.labels[v] for v in values], dtype=np.int64), None


def load_tsv_split(directory: Path, task: GlueTask, split: str) -> RawSplit:
    path = directory / f"{split}.tsv"
    rows = read_tsv(path, task)
    if rows.malformed:
        if task.key not in SKIP_MALFORMED:
            raise ValueError(f"{len(rows.malformed)} malformed row(s) in {path}, first: {rows.malformed[0]}")
        log.warning("GLUE %s: skipped %d malformed row(s) in %s (known in the official QQP files)",
                    task.key, len(rows.malformed), path)
    n = len(rows.texts[0])
    if rows.labels is None:
        labels, scores = np.full(n, -1, dtype=np.int64), None
    else:
        labels, scores = _labels_from_strings(task, rows.labels, path)
    text_b = rows.texts[1] if len(rows.texts) > 1 else None
    return RawSplit(rows.texts[0], text_b, labels, task.num_classes, scores, name=split, task=task.key)


def load_hf_split(directory: Path, task: GlueTask, split: str) -> RawSplit:
    import datasets

    name = HF_SPLIT[split]
    dd = datasets.load_from_disk(str(directory))
    if name not in dd:
        raise ValueError(f"{directory}: the saved DatasetDict has no split {name!r} (has {', '.join(dd)})")
    ds = dd[name]
    missing = [c for c in task.hf_cols + ("label",) if c not in ds.column_names]
    if missing:
        raise ValueError(f"{directory}/{name}: lacks column(s) {missing}; has {ds.column_names}")
    text_a = list(ds[task.hf_cols[0]])
    text_b = list(ds[task.hf_cols[1]]) if len(task.hf_cols) > 1 else None
    raw = np.asarray(ds["label"])
    if task.labels is None:
        scores = raw.astype(np.float32)
        unlabelled = scores < 0  # the glue test split stores -1
        labels = np.where(unlabelled, -1, score_to_bin(np.where(unlabelled, 0.0, scores)))
        scores = None if unlabelled.all() else scores
    else:
        labels, scores = raw.astype(np.int64), None
        if labels.max(initial=-1) >= task.num_classes:
            raise ValueError(f"{directory}/{name}: label {int(labels.max())} out of range for GLUE {task.key}")
    return RawSplit(text_a, text_b, labels, task.num_classes, scores, name=split, task=task.key)


def load_raw_split(root: str | os.PathLike, task: str, split: str) -> RawSplit:
    """One raw GLUE split (``train``, ``dev``, ``test``, MNLI's matched / mismatched), from either form."""
    t = glue_task(task)
    split = canonical_split(t.key, split)
    if split in PROTOCOL_SPLITS:
        return load_protocol_split(root, t.key, split)
    d = task_dir(root, t.key)
    return load_hf_split(d, t, split) if form_of(d) == "hf" else load_tsv_split(d, t, split)


# ----------------------------------------------------------------------------- the Table 3 (ATTEMPT) protocol


def attempt_permutation(n: int, seed: int = ATTEMPT_SEED) -> np.ndarray:
    """ATTEMPT's ``shuffled_indices``: ``torch.randperm(n)`` with a generator seeded ``seed``."""
    g = torch.Generator()
    g.manual_seed(seed)
    return torch.randperm(n, generator=g).numpy()


def subset(raw: RawSplit, rows: np.ndarray, name: str) -> RawSplit:
    pick = rows.tolist()
    return RawSplit([raw.text_a[i] for i in pick], [raw.text_b[i] for i in pick] if raw.text_b is not None else None,
                    raw.labels[rows], raw.num_classes, raw.scores[rows] if raw.scores is not None else None,
                    name=name, task=raw.task)


def protocol_source(task: str, split: str) -> str:
    """The raw split a protocol split is cut from."""
    group = glue_task(task).group
    if group == "mnli":
        return {"attempt_train": "train", "attempt_val": "dev_mismatched", "attempt_test": "dev_matched"}[split]
    if group == "small":
        return "train" if split == "attempt_train" else "dev"
    return "dev" if split == "attempt_test" else "train"


def load_protocol_split(root: str | os.PathLike, task: str, split: str) -> RawSplit:
    t = glue_task(task)
    raw = load_raw_split(root, t.key, protocol_source(t.key, split))
    if t.group == "mnli" or (t.group == "small" and split == "attempt_train") or (
            t.group == "large" and split == "attempt_test"):
        raw.name = split
        return raw
    perm = attempt_permutation(len(raw))
    cut = len(raw) // 2 if t.group == "small" else ATTEMPT_LARGE_VAL
    return subset(raw, perm[:cut] if split == "attempt_val" else perm[cut:], split)
