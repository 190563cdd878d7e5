"""GLUE loaders (TSV layout and saved-to-disk form), the Table 3 protocol splits, the checker, the tokenisation
cache and the batch interface, on tiny trees the tests write."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from text_fixtures import QUOTED, write_glue_hf, write_glue_tsv  # noqa: E402

from gist_ray.text import glue  # noqa: E402
from gist_ray.text.check import check_glue_root, is_warning  # noqa: E402
from gist_ray.text.data import TextDataConfig, check_text_splits, load_text_split  # noqa: E402
from gist_ray.text.synthetic import word_tokenizer  # noqa: E402

N = 6


@pytest.fixture
def tsv_root(tmp_path):
    expected = write_glue_tsv(tmp_path / "glue", N)
    return tmp_path / "glue", expected


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A fresh GIST_RAY_CACHE root; returns its data-cache directory."""
    d = tmp_path / "cache"
    monkeypatch.setenv("GIST_RAY_CACHE", str(d))
    return d / "data"


@pytest.mark.parametrize("task", list(glue.GLUE_TASKS))
def test_tsv_loader_reads_every_task_layout(tsv_root, task):
    root, expected = tsv_root
    for split, rows in expected[task].items():
        raw = glue.load_raw_split(root, task, split)
        assert len(raw) == N
        assert raw.text_a == [r[0] for r in rows]
        assert raw.text_a[1] == QUOTED  # an unbalanced quote does not swallow rows
        if task == "stsb":
            assert raw.scores.tolist() == pytest.approx([r[1] for r in rows])
            assert raw.labels.tolist() == np.rint(np.array([r[1] for r in rows]) / 0.2).astype(int).tolist()
        else:
            assert raw.labels.tolist() == [r[1] for r in rows]
        assert (raw.text_b is None) == (task in ("cola", "sst2"))
        assert raw.num_classes == (26 if task == "stsb" else 3 if task == "mnli" else 2)


def test_mnli_dev_means_matched_and_test_files_are_unlabelled(tsv_root):
    root, expected = tsv_root
    assert glue.load_raw_split(root, "mnli", "dev").text_a == [r[0] for r in expected["mnli"]["dev_matched"]]
    test = glue.load_raw_split(root, "cola", "test")
    assert test.labels.tolist() == [-1, -1, -1] and test.text_a[0] == "cola test 0"
    assert glue.load_raw_split(root, "RTE", "test").text_b == ["b", "b", "b"]


def test_bad_rows_and_labels_are_errors_naming_the_file(tsv_root):
    root, _ = tsv_root
    f = root / "RTE" / "train.tsv"
    f.write_text(f.read_text() + "99\tonly two columns\n")
    with pytest.raises(ValueError, match=rf"{f}:{N + 2}: 2 columns, expected 4"):
        glue.load_raw_split(root, "rte", "train")
    f = root / "SST-2" / "dev.tsv"
    f.write_text(f.read_text() + "a sentence\tpositive\n")
    with pytest.raises(ValueError, match=rf"{f}: unknown label\(s\) \['positive'\]"):
        glue.load_raw_split(root, "sst2", "dev")
    f = root / "QNLI" / "dev.tsv"
    f.write_text(f.read_text().replace("question\t", "q\t", 1))
    with pytest.raises(ValueError, match=rf"{f}:1: header lacks column\(s\) \['question'\]"):
        glue.load_raw_split(root, "qnli", "dev")
    with pytest.raises(ValueError, match="unknown GLUE task 'sts'"):
        glue.load_raw_split(root, "sts", "train")
    with pytest.raises(ValueError, match="unknown split 'val'"):
        glue.load_raw_split(root, "rte", "val")


def test_saved_to_disk_form_matches_the_tsv_rows(tsv_root, tmp_path):
    pytest.importorskip("datasets")
    root, expected = tsv_root
    hf_root = tmp_path / "hf"
    write_glue_hf(hf_root, N)
    for task, split in (("cola", "train"), ("cola", "dev"), ("stsb", "dev"), ("mnli", "dev_mismatched")):
        tsv, hf = glue.load_raw_split(root, task, split), glue.load_raw_split(hf_root, task, split)
        assert glue.form_of(glue.task_dir(hf_root, task)) == "hf"
        assert hf.text_a == tsv.text_a and hf.labels.tolist() == tsv.labels.tolist()
        assert (hf.text_b == tsv.text_b) and ((hf.scores is None) == (tsv.scores is None))
    test = glue.load_raw_split(hf_root, "cola", "test")
    assert test.labels.tolist() == [-1, -1, -1]
    # a task's own DatasetDict directory works as the root too
    own = glue.load_raw_split(hf_root / "stsb", "stsb", "train")
    assert own.text_a == [r[0] for r in expected["stsb"]["train"]]


def test_attempt_protocol_splits(tmp_path):
    root = tmp_path / "glue"
    write_glue_tsv(root, 40)
    perm = torch.randperm(40, generator=torch.Generator().manual_seed(42)).numpy()
    dev = glue.load_raw_split(root, "rte", "dev")
    val, test = glue.load_raw_split(root, "rte", "attempt_val"), glue.load_raw_split(root, "rte", "attempt_test")
    assert val.text_a == [dev.text_a[i] for i in perm[:20]] and test.text_a == [dev.text_a[i] for i in perm[20:]]
    assert glue.load_raw_split(root, "rte", "attempt_train").text_a == glue.load_raw_split(root, "rte", "train").text_a
    # large tasks: 1000 train rows become val (here the whole tiny train set), dev becomes test
    assert len(glue.load_raw_split(root, "sst2", "attempt_val")) == 40
    with pytest.raises(ValueError, match="empty"):
        glue.load_raw_split(root, "sst2", "attempt_train")
    assert glue.load_raw_split(root, "sst2", "attempt_test").text_a == glue.load_raw_split(root, "sst2", "dev").text_a
    assert glue.protocol_source("mnli", "attempt_val") == "dev_mismatched"
    assert glue.protocol_source("mnli", "attempt_test") == "dev_matched"


def test_checker_reports_each_problem_once_with_its_place(tsv_root):
    root, _ = tsv_root
    problems = check_glue_root(str(root))
    assert len(problems) == 1 and "QQP/train.tsv:4: 4 columns, expected 6 (skipped by the loader" in problems[0]
    assert is_warning(problems[0])
    (root / "MRPC" / "dev.tsv").unlink()
    f = root / "STS-B" / "train.tsv"
    f.write_text(f.read_text().replace("\t1.800\n", "\tn/a\n"))
    f = root / "CoLA" / "train.tsv"
    f.write_text(f.read_text().replace("gj04\t1\t", "gj04\t7\t", 1))
    problems = check_glue_root(str(root))
    text = "\n".join(problems)
    assert sum(not is_warning(p) for p in problems) == 3
    assert f"{root / 'MRPC' / 'dev.tsv'}: missing" in text
    assert f"{root / 'STS-B' / 'train.tsv'}:4: STS-B score 'n/a'" in text
    assert f"{root / 'CoLA' / 'train.tsv'}:2: unknown label '7'" in text
    assert check_glue_root(str(root / "nowhere")) == [f"{root / 'nowhere'}: directory not found"]
    (root.parent / "empty").mkdir()
    assert "no GLUE task directories" in check_glue_root(str(root.parent / "empty"))[0]


def test_checker_on_saved_to_disk_form(tmp_path):
    pytest.importorskip("datasets")
    write_glue_hf(tmp_path / "hf", N)
    assert check_glue_root(str(tmp_path / "hf")) == []


def test_tokenised_once_then_read_from_the_cache(tsv_root, cache, monkeypatch):
    root, _ = tsv_root
    tok = word_tokenizer("bert")
    cfg = TextDataConfig(name="glue", task="mrpc", root=str(root), max_length=12)
    first = load_text_split(cfg, "train", tok)
    entries = sorted(p.name for p in cache.iterdir() if p.suffix in (".npz", ".json"))
    assert len(entries) == 2 and entries[0].startswith("text-glue-mrpc-train-12-")

    def no_reading(*a, **k):
        raise AssertionError("a cache hit must not read the source")

    monkeypatch.setattr(glue, "load_raw_split", no_reading)
    again = load_text_split(cfg, "train", tok)
    for key in ("ids", "offsets", "type_ids", "labels"):
        assert torch.equal(getattr(first, key), getattr(again, key))
    monkeypatch.undo()
    monkeypatch.setenv("GIST_RAY_CACHE", str(cache.parent))
    load_text_split(TextDataConfig(name="glue", task="mrpc", root=str(root), max_length=16), "train", tok)
    load_text_split(cfg, "train", word_tokenizer("t5"))
    f = root / "MRPC" / "train.tsv"
    f.write_text(f.read_text() + "1\t1\t2\tone more\trow\n")
    assert len(load_text_split(cfg, "train", tok)) == N + 1  # the changed file is a new entry, not a stale hit
    assert len(list(cache.glob("*.npz"))) == 4


def test_truncation_and_the_batch_interface(tsv_root, cache):
    root, _ = tsv_root
    tok = word_tokenizer("bert")
    split = load_text_split(TextDataConfig(name="glue", task="qnli", root=str(root), max_length=10), "dev", tok)
    assert int(split.lengths().max()) == 10
    short = load_text_split(TextDataConfig(name="glue", task="cola", root=str(root), max_length=64), "dev", tok)
    lens = short.lengths()
    rows = [int(lens.argmin()), int(lens.argmax())]
    batch = short.inputs(rows)
    assert batch["input_ids"].shape == (2, int(lens.max()))
    assert batch["attention_mask"].sum(1).tolist() == [int(lens.min()), int(lens.max())]
    pad = batch["attention_mask"] == 0
    assert (batch["input_ids"][pad] == tok.pad_token_id).all()
    assert batch["input_ids"][0, 0] == tok.cls_token_id and set(batch) == {"input_ids", "attention_mask",
                                                                           "token_type_ids"}
    wide = short.inputs(rows, pad_to_multiple_of=16)
    assert wide["input_ids"].shape[1] % 16 == 0 and torch.equal(wide["attention_mask"].sum(1),
                                                                batch["attention_mask"].sum(1))


def test_preflight_names_the_missing_file(tsv_root):
    root, _ = tsv_root
    cfg = TextDataConfig(name="glue", task="rte", root=str(root))
    check_text_splits(cfg, ["attempt_train", "attempt_val", "attempt_test"])
    os.remove(root / "RTE" / "dev.tsv")
    with pytest.raises(FileNotFoundError, match=r"RTE/dev.tsv: GLUE rte split 'attempt_val' needs this file"):
        check_text_splits(cfg, ["attempt_train", "attempt_val"])
    with pytest.raises(ValueError, match="data.root"):
        check_text_splits(TextDataConfig(name="glue", task="rte"), ["train"])
