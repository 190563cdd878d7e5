"""Every problem of a GLUE root, one line each, before any training (``gist-ray data check ROOT --kind glue``).

For each task directory found under ``root`` (either form; ``root`` may also be one task's directory): the
split files are present (train and dev, MNLI's dev_matched and dev_mismatched; test files are optional), headers
hold the columns the loader reads, every row has the header's column count (QQP's known malformed rows are
reported as skipped), labels are known (STS-B: numbers in [0, 5]), and train uses every class.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gist_ray.text import glue
from gist_ray.text.metrics import STSB_MAX

REQUIRED = {"mnli": ("train", "dev_matched", "dev_mismatched")}
SKIPPED = " (skipped by the loader: known in the official QQP files)"


def is_warning(line: str) -> bool:
    """A reported line that does not stop loading (QQP's malformed rows, which the loader skips)."""
    return line.endswith(SKIPPED)


def _label_problems(task: glue.GlueTask, rows: glue.TsvRows, path: Path) -> list[str]:
    problems: list[str] = []
    for value, line in zip(rows.labels or [], rows.lines):
        if task.labels is None:
            try:
                ok = 0.0 <= float(value) <= 5.0
            except ValueError:
                ok = False
            if not ok:
                problems.append(f"{path}:{line}: STS-B score {value!r} is not a number in [0, 5]")
        elif value not in task.labels:
            problems.append(f"{path}:{line}: unknown label {value!r}; expected one of {sorted(task.labels)}")
        if len(problems) >= 20:
            problems.append(f"{path}: more bad labels not listed")
            break
    return problems


def _check_tsv_task(d: Path, task: glue.GlueTask) -> list[str]:
    problems: list[str] = []
    required = REQUIRED.get(task.key, ("train", "dev"))
    for split in glue.split_names(task.key):
        path = d / f"{split}.tsv"
        if not path.is_file():
            if split in required:
                problems.append(f"{path}: missing (GLUE {task.key} needs {', '.join(required)})")
            continue
        try:
            rows = glue.read_tsv(path, task)
        except (ValueError, OSError, UnicodeDecodeError) as exc:
            problems.append(str(exc))
            continue
        skipped = SKIPPED if task.key in glue.SKIP_MALFORMED else ""
        problems += [m + skipped for m in rows.malformed[:20]]
        if len(rows.malformed) > 20:
            problems.append(f"{path}: {len(rows.malformed) - 20} more malformed rows not listed{skipped}")
        if not rows.lines:
            problems.append(f"{path}: no rows")
            continue
        problems += _label_problems(task, rows, path)
        if split == "train" and task.labels is not None and rows.labels:
            used = {task.labels[v] for v in rows.labels if v in task.labels}
            if len(used) != task.num_classes:
                problems.append(f"{path}: train uses {len(used)} of {task.num_classes} classes")
    return problems


def _check_hf_task(d: Path, task: glue.GlueTask) -> list[str]:
    import datasets

    try:
        dd = datasets.load_from_disk(str(d))
    except Exception as exc:  # any failure to open the saved dataset is the problem to report
        return [f"{d}: not a readable saved DatasetDict ({type(exc).__name__}: {exc})"]
    problems: list[str] = []
    required = REQUIRED.get(task.key, ("train", "dev"))
    for split in glue.split_names(task.key):
        name = glue.HF_SPLIT[split]
        if name not in dd:
            if split in required:
                problems.append(f"{d}: split {name!r} missing (has {', '.join(dd)})")
            continue
        ds = dd[name]
        missing = [c for c in task.hf_cols + ("label",) if c not in ds.column_names]
        if missing:
            problems.append(f"{d}/{name}: lacks column(s) {missing}; has {ds.column_names}")
            continue
        labels = np.asarray(ds["label"], dtype=np.float64)
        if split.startswith("test"):
            continue
        hi = STSB_MAX if task.labels is None else task.num_classes - 1
        bad = np.flatnonzero((labels < 0) | (labels > hi))
        if len(bad):
            problems.append(f"{d}/{name}: {len(bad)} label(s) outside [0, {hi}], first at row {int(bad[0])}")
        if split == "train" and task.labels is not None and len(np.unique(labels)) != task.num_classes:
            problems.append(f"{d}/{name}: train uses {len(np.unique(labels))} of {task.num_classes} classes")
    return problems


def _task_dirs(root: Path) -> list[tuple[glue.GlueTask, Path]]:
    found = []
    for task in glue.GLUE_TASKS.values():
        try:
            d = glue.task_dir(root, task.key)
        except FileNotFoundError:
            continue
        if d == root and not (root.name.lower().replace("-", "") == task.key):
            continue  # a bare DatasetDict root names no task; it is checked when its task is asked for
        found.append((task, d))
    return found


def check_glue_root(root: str, tasks: list[str] | None = None) -> list[str]:
    """Every problem found under a GLUE ``root`` (for ``tasks``, default: every task directory present)."""
    path = Path(root).expanduser().absolute()
    if not path.is_dir():
        return [f"{path}: directory not found"]
    if tasks:
        found = []
        for t in tasks:
            try:
                found.append((glue.glue_task(t), glue.task_dir(path, t)))
            except (ValueError, FileNotFoundError) as exc:
                return [str(exc)]
    else:
        found = _task_dirs(path)
    if not found:
        names = ", ".join(t.dir for t in glue.GLUE_TASKS.values())
        return [f"{path}: no GLUE task directories (expected some of: {names}, or their datasets names)"]
    problems: list[str] = []
    for task, d in found:
        check = _check_hf_task if glue.form_of(d) == "hf" else _check_tsv_task
        problems += check(d, task)
    return problems
