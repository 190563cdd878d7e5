"""Which cells of a study are done, found in MLflow, and the name of the next sweep.

A cell counts as done when the experiment holds a FINISHED trial run (tag ``gist_ray.kind=trial``) of a sweep
named ``<study>-<k>`` whose logged config (MLflow params) equals the cell's full run config, except ``name``,
``output_dir``, ``tracking.*`` and ``resources.*``, and which logged the study's metric. Rerunning a study
therefore runs only the missing or failed cells; editing the base config (e.g. more epochs) makes every cell
new.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Optional

from gist_ray import tracking
from gist_ray.config import to_dict
from gist_ray.mlflow_ui import applicable_params
from gist_ray.study.spec import Cell, Study

# config fields that do not change what a cell computes (paths, run name, where it runs)
IGNORED = ("name", "output_dir")
IGNORED_PREFIXES = ("tracking.", "resources.")


def cell_signature(study: Study, cell: Cell) -> dict[str, str]:
    """The cell's run config as MLflow params (``str`` values) as trials log them (only the fields that apply:
    ``gist_ray.mlflow_ui.applicable_params``), without the fields that do not change results. Runs logged with
    every field still match: their params are a superset with the same values."""
    flat = applicable_params(tracking.flatten(to_dict(study.cell_config(cell))))
    return {k: str(v)[:6000] for k, v in flat.items()
            if k not in IGNORED and not k.startswith(IGNORED_PREFIXES)}


def study_sweep_re(name: str) -> re.Pattern:
    return re.compile(rf"^{re.escape(name)}-(\d+)$")


def study_runs(uri: str, experiment: str, name: str, kind: Optional[str] = "trial",
               status: Optional[str] = "FINISHED") -> list:
    """Runs of kind ``kind`` (None: any) of the study's sweeps (``gist_ray.sweep`` = ``<name>-<k>``)."""
    c = tracking.client(uri)
    exp = c.get_experiment_by_name(experiment)
    if exp is None:
        return []
    # LIKE's '_' matches any character; the exact names are checked below
    flt = f"tags.`{tracking.SWEEP_TAG}` LIKE '{name}-%'"
    if kind:
        flt += f" and tags.`{tracking.KIND_TAG}` = '{kind}'"
    if status:
        flt += f" and attributes.status = '{status}'"
    pattern = study_sweep_re(name)
    return [r for r in tracking.search_all(c, exp.experiment_id, flt)
            if pattern.match(r.data.tags.get(tracking.SWEEP_TAG, ""))]


def finished_cells(study: Study) -> dict[int, Any]:
    """Cell index -> its newest FINISHED MLflow run (with the study's metric), for the cells already done."""
    runs = [r for r in study_runs(study.tracking_uri, study.experiment, study.name) if study.metric in r.data.metrics]
    runs.sort(key=lambda r: r.info.start_time or 0)  # newest last: it wins below
    index: dict[tuple[str, ...], dict[tuple, Any]] = {}  # signature keys -> their values -> newest run
    done: dict[int, Any] = {}
    for cell in study.cells():
        sig = cell_signature(study, cell)
        keys = tuple(sorted(sig))
        if keys not in index:
            index[keys] = {tuple(r.data.params.get(k) for k in keys): r for r in runs}
        run = index[keys].get(tuple(sig[k] for k in keys))
        if run is not None:
            done[cell.index] = run
    return done


def unfinished_sweep(study: Study) -> Optional[str]:
    """The study's newest sweep if a killed or interrupted invocation left it unfinished (its parent run is not
    FINISHED): the next invocation continues it instead of starting another."""
    c = tracking.client(study.tracking_uri)
    exp = c.get_experiment_by_name(study.experiment)
    if exp is None:
        return None
    pattern = study_sweep_re(study.name)
    parents = [r for r in study_runs(study.tracking_uri, study.experiment, study.name, kind="sweep", status=None)]
    if not parents:
        return None
    newest = max(parents, key=lambda r: int(pattern.match(r.data.tags[tracking.SWEEP_TAG]).group(1)))
    return None if newest.info.status == "FINISHED" else newest.data.tags[tracking.SWEEP_TAG]


def next_sweep_name(study: Study) -> str:
    """``<study>-<k>`` with k above every sweep of the study in MLflow and on disk."""
    pattern = study_sweep_re(study.name)
    used = [0]
    for r in study_runs(study.tracking_uri, study.experiment, study.name, kind=None, status=None):
        m = pattern.match(r.data.tags.get(tracking.SWEEP_TAG, ""))
        used.append(int(m.group(1)))
    out = study.base.output_dir
    sweeps = Path(out) / "sweeps"
    if "://" not in out and sweeps.is_dir():
        for p in sweeps.iterdir():
            m = pattern.match(p.name)
            if m:
                used.append(int(m.group(1)))
    return f"{study.name}-{max(used) + 1}"
