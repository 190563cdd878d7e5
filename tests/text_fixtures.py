"""Tiny GLUE trees the tests write: the nine tasks in the TSV distribution layout (real column layouts), and
the Hugging Face ``datasets`` saved-to-disk form of a few tasks."""

from __future__ import annotations

from pathlib import Path

# A sentence with an unbalanced double quote: read with default CSV quoting it would swallow the next rows.
QUOTED = 'He said "it is fine and left'

MNLI_TRAIN_HEAD = ["index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
                   "sentence1_parse", "sentence2_parse", "sentence1", "sentence2", "label1", "gold_label"]
MNLI_DEV_HEAD = MNLI_TRAIN_HEAD[:-2] + ["label1", "label2", "label3", "label4", "label5", "gold_label"]
MNLI_LABELS = ("entailment", "neutral", "contradiction")


def _write(path: Path, rows: list[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join("\t".join(r) + "\n" for r in rows), encoding="utf-8")


def _sent(task: str, split: str, i: int, side: str = "a") -> str:
    return QUOTED if i == 1 else f"{task} {split} row {i} side {side} words here"


def write_glue_tsv(root: Path, n: int = 6) -> dict[str, dict[str, list]]:
    """Write the nine tasks under ``root``; returns the expected (text_a, label) per task and split."""
    expected: dict[str, dict[str, list]] = {}

    def keep(task: str, split: str, rows: list) -> None:
        expected.setdefault(task, {})[split] = rows

    for split in ("train", "dev"):
        # CoLA: no header; source, label, original mark, sentence
        _write(root / "CoLA" / f"{split}.tsv",
               [["gj04", str(i % 2), "" if i % 2 else "*", _sent("cola", split, i)] for i in range(n)])
        keep("cola", split, [(_sent("cola", split, i), i % 2) for i in range(n)])
        _write(root / "SST-2" / f"{split}.tsv",
               [["sentence", "label"]] + [[_sent("sst2", split, i), str(i % 2)] for i in range(n)])
        keep("sst2", split, [(_sent("sst2", split, i), i % 2) for i in range(n)])
        _write(root / "MRPC" / f"{split}.tsv", [["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"]]
               + [[str(i % 2), str(100 + i), str(200 + i), _sent("mrpc", split, i), _sent("mrpc", split, i, "b")]
                  for i in range(n)])
        keep("mrpc", split, [(_sent("mrpc", split, i), i % 2) for i in range(n)])
        _write(root / "STS-B" / f"{split}.tsv",
               [["index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1", "sentence2",
                 "score"]]
               + [[str(i), "main-captions", "MSRvid", "2012test", str(i), "none", "none", _sent("stsb", split, i),
                   _sent("stsb", split, i, "b"), f"{(i * 0.9) % 5:.3f}"] for i in range(n)])
        keep("stsb", split, [(_sent("stsb", split, i), round((i * 0.9) % 5, 3)) for i in range(n)])
        qqp = [["id", "qid1", "qid2", "question1", "question2", "is_duplicate"]]
        qqp += [[str(i), str(2 * i), str(2 * i + 1), _sent("qqp", split, i), _sent("qqp", split, i, "b"), str(i % 2)]
                for i in range(n)]
        if split == "train":
            qqp.insert(3, ["999", "1", "2", "a question without its pair"])  # the official file has such rows
        _write(root / "QQP" / f"{split}.tsv", qqp)
        keep("qqp", split, [(_sent("qqp", split, i), i % 2) for i in range(n)])
        for task, d, labels in (("qnli", "QNLI", ("entailment", "not_entailment")),
                                ("rte", "RTE", ("entailment", "not_entailment")), ("wnli", "WNLI", ("0", "1"))):
            cols = ["index", "question", "sentence", "label"] if task == "qnli" else \
                ["index", "sentence1", "sentence2", "label"]
            _write(root / d / f"{split}.tsv", [cols] + [[str(i), _sent(task, split, i), _sent(task, split, i, "b"),
                                                         labels[i % 2]] for i in range(n)])
            keep(task, split, [(_sent(task, split, i), i % 2) for i in range(n)])
    for split, head in (("train", MNLI_TRAIN_HEAD), ("dev_matched", MNLI_DEV_HEAD), ("dev_mismatched", MNLI_DEV_HEAD)):
        rows = [head]
        for i in range(n):
            lab = MNLI_LABELS[i % 3]
            votes = [lab] * (len(head) - 10)
            rows.append([str(i), str(i), f"{i}e", "fiction", "( x )", "( y )", "(ROOT x)", "(ROOT y)",
                         _sent("mnli", split, i), _sent("mnli", split, i, "b")] + votes)
        _write(root / "MNLI" / f"{split}.tsv", rows)
        keep("mnli", split, [(_sent("mnli", split, i), i % 3) for i in range(n)])
    # test files: headers, no labels
    _write(root / "CoLA" / "test.tsv", [["index", "sentence"]] + [[str(i), f"cola test {i}"] for i in range(3)])
    _write(root / "RTE" / "test.tsv", [["index", "sentence1", "sentence2"]] + [[str(i), f"rte t {i}", "b"]
                                                                              for i in range(3)])
    return expected


def write_glue_hf(root: Path, n: int = 6) -> None:
    """``cola``, ``stsb`` and ``mnli`` as saved DatasetDicts, with the ``glue`` dataset's columns."""
    import datasets

    def dd(splits: dict[str, dict[str, list]]) -> datasets.DatasetDict:
        return datasets.DatasetDict({k: datasets.Dataset.from_dict(v) for k, v in splits.items()})

    rows = range(n)
    tsv = {"train": "train", "validation": "dev", "validation_matched": "dev_matched",
           "validation_mismatched": "dev_mismatched"}  # sentences name the TSV split they mirror
    dd({s: {"sentence": [_sent("cola", tsv[s], i) for i in rows], "label": [i % 2 for i in rows], "idx": list(rows)}
        for s in ("train", "validation")}
       | {"test": {"sentence": ["cola t"] * 3, "label": [-1] * 3, "idx": [0, 1, 2]}}).save_to_disk(root / "cola")
    dd({s: {"sentence1": [_sent("stsb", tsv[s], i) for i in rows],
            "sentence2": [_sent("stsb", tsv[s], i, "b") for i in rows],
            "label": [round((i * 0.9) % 5, 3) for i in rows], "idx": list(rows)} for s in ("train", "validation")}
       ).save_to_disk(root / "stsb")
    dd({s: {"premise": [_sent("mnli", tsv[s], i) for i in rows],
            "hypothesis": [_sent("mnli", tsv[s], i, "b") for i in rows],
            "label": [i % 3 for i in rows], "idx": list(rows)}
        for s in ("train", "validation_matched", "validation_mismatched")}).save_to_disk(root / "mnli")
