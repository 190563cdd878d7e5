"""``gist-ray scale STUDY.yaml``: run a study's unfinished cells as one sweep, then analyse and log it.

The cells still to run become one sweep of the sweep layer (``run_sweep``), named ``<study>-<k>`` (k = 1, 2, ...
one per invocation, so no sweep directory is ever reused), whose trials are exactly those cells: each cell is a
``search.initial_points`` entry of a ``random``-sampler sweep with ``num_samples`` = number of cells to run and
scheduler ``none`` (points to evaluate run first and exactly). After each sweep its runs get the tag
``gist_ray.study=<name>`` and the sweep's parent run hangs under the study run (``gist_ray.kind=study``) that holds
the tables and plots as artifacts. Which cells are done: :mod:`gist_ray.study.resume`.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from gist_ray import tracking
from gist_ray.config import Config
from gist_ray.run_data import validate_run_splits
from gist_ray.errors import ConfigError
from gist_ray.pretrain import ensure_pretrained
from gist_ray.study.analysis import cell_records, log_study_metrics, write_study_outputs
from gist_ray.study.load import load_study
from gist_ray.study.resume import finished_cells, next_sweep_name, unfinished_sweep
from gist_ray.study.spec import Cell, Study
from gist_ray.sweep.driver import run_sweep
from gist_ray.sweep.space import Dist, SearchConfig, SweepSpec


@dataclass
class StudyResult:
    name: str
    output: Path
    cells: int  # in the grid
    skipped: int  # already finished before this invocation
    ran: int  # launched by this invocation
    done: int  # finished after this invocation
    sweep: Optional[str]  # the sweep this invocation ran (None: nothing to run)
    wall_s: float
    records: list[dict] = field(default_factory=list)
    analysis: dict = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    study_run_id: str = ""
    summary: str = ""

    @property
    def complete(self) -> bool:
        return self.done == self.cells


def run_study(path: str | Path, overrides: Sequence[str] = (), verbose: bool = True) -> StudyResult:
    """Run the study's unfinished cells as one sweep, then fit, tabulate, plot and log it all to MLflow."""
    t0 = time.perf_counter()
    say = print if verbose else (lambda *a, **k: None)
    study = load_study(path, overrides)
    check_data(study)
    cells = study.cells()
    done = finished_cells(study)
    todo = [c for c in cells if c.index not in done]
    say(f"[study {study.name}] {len(cells)} cells: {len(done)} already finished, {len(todo)} to run "
        f"(MLflow {study.tracking_uri}, experiment {study.experiment})", flush=True)
    study_run = open_study_run(study)
    c = tracking.client(study.tracking_uri)
    sweep_name, errors, status = None, [], "FAILED"
    try:
        if todo:
            ensure_pretrained([cell.backbone for cell in todo], study.base.model.weights)
            # a sweep a killed invocation left unfinished is continued (its finished trials are not rerun, its
            # unfinished ones continue in their own runs), planned with the cells it had already finished
            sweep_name, resume = unfinished_sweep(study), True
            planned = [c for c in cells if c.index not in done
                       or done[c.index].data.tags.get(tracking.SWEEP_TAG) == sweep_name]
            if sweep_name is None:
                sweep_name, resume, planned = next_sweep_name(study), False, todo
            say(f"[study {study.name}] sweep {sweep_name}{' (continued)' if resume else ''}: {len(todo)} cells, "
                f"{study.max_concurrent_trials} at a time", flush=True)
            try:
                result = run_sweep(sweep_spec(study, planned, sweep_name), resume=resume, verbose=verbose,
                                   role=tracking.CELL)
                errors = [f"{r.config.get('model.backbone')} {r.config.get('method.name')} "
                          f"gist={r.config.get('gist.enabled')} {r.config.get('data.task')} "
                          f"seed={r.config.get('train.seed')}: {r.error}" for r in result.rows if r.error]
            finally:
                adopt_sweep(study, sweep_name, study_run)
        done = finished_cells(study)
        records = cell_records(study, done)
        files: list[Path] = []
        analysis: dict = {}
        summary = ""
        if records:
            analysis, files, summary = write_study_outputs(records, Path(study.output))
            for f in files:
                c.log_artifact(study_run, str(f), "study")
            if study.source:
                c.log_artifact(study_run, study.source, "study")
            log_study_metrics(c, study_run, analysis, len(done), len(cells))
        status = "FINISHED"
    finally:
        c.set_terminated(study_run, status if status == "FINISHED" else "KILLED")
    res = StudyResult(study.name, Path(study.output), len(cells), len(cells) - len(todo), len(todo), len(done),
                      sweep_name, time.perf_counter() - t0, records, analysis, files, errors, study_run, summary)
    if verbose:
        print()
        print(summary or "no finished cells yet: nothing to tabulate")
        for e in errors:
            print(f"errored: {e}")
        state = "complete" if res.complete else f"{res.cells - res.done} cells missing; rerun the same command"
        print(f"[study {study.name}] {res.done}/{res.cells} cells finished ({state}); {res.wall_s:.0f} s; "
              f"tables and plots in {res.output.resolve()}; MLflow study run {study_run}")
    return res


def check_data(study: Study) -> None:
    """Cheap checks of each non-synthetic dataset's list files before Ray starts."""
    seen = set()
    for cell in study.cells():
        if cell.dataset in seen or cell.dataset.source == "synthetic":
            continue
        seen.add(cell.dataset)
        cfg = study.cell_config(cell)
        d = cfg.data
        if d.name == "synthetic_text":
            continue
        if d.root is None:
            raise ConfigError(f"{study.source}: dataset {d.name}/{d.task}: data.root is not set "
                              f"(add data.root=/path/to/{d.name} to the command)")
        validate_run_splits(cfg, [d.train_split, d.eval_split, d.test_split])


# ----------------------------------------------------------------------------- the sweep of the remaining cells


def search_metric(base: Config) -> tuple[str, str]:
    """A metric every epoch reports (Optuna and Tune's metric check need one); it does not choose anything."""
    if base.data.eval_split and base.train.eval_every == 1:
        return ("val/score" if base.modality == "text" else "val/acc"), "max"
    return "train/acc", "max"


def sweep_spec(study: Study, cells: Sequence[Cell], sweep_name: str) -> SweepSpec:
    """A sweep whose trials are exactly ``cells``: random sampler, the cells as initial points, no scheduler."""
    space = {}
    for k in study.space_keys():
        values: list = []
        for c in cells:
            v = dict(c.overrides)[k]
            if not any(v == u and type(v) is type(u) for u in values):
                values.append(v)
        space[k] = Dist("choice", values)
    metric, mode = search_metric(study.base)
    search = SearchConfig(num_samples=len(cells), max_concurrent_trials=study.max_concurrent_trials, metric=metric,
                          mode=mode, sampler="random", scheduler="none",
                          initial_points=[dict(c.overrides) for c in cells])
    first = study.cell_config(cells[0]).data  # the study's base names no dataset; the sweep checks this one's
    data = dataclasses.replace(study.base.data, name=first.name, task=first.task, root=first.root)  # splits early
    return SweepSpec(sweep_name, dataclasses.replace(study.base, data=data), search, space, source=study.source,
                     variants=study.variants)


# ----------------------------------------------------------------------------- MLflow: the study run


def open_study_run(study: Study) -> str:
    """The study's own MLflow run (reopened on a rerun): its grid as params, later its tables and plots."""
    c = tracking.client(study.tracking_uri)
    exp = tracking.experiment_id(c, study.experiment)
    return tracking.open_run(c, exp, {tracking.KIND_TAG: "study", tracking.STUDY_TAG: study.name},
                             f"study-{study.name}", params={
        "study.metric": study.metric, "study.cells": len(study.cells()), "grid.backbones": study.backbones,
        "grid.methods": [m.label() for m in study.methods], "grid.gist": study.gist,
        "grid.datasets": [d.task for d in study.datasets], "grid.seeds": study.seeds,
        "grid.n_train": study.n_train})[0]


def adopt_sweep(study: Study, sweep: str, study_run: str) -> None:
    """Tag the sweep's runs with the study and hang its parent run under the study run."""
    c = tracking.client(study.tracking_uri)
    exp = c.get_experiment_by_name(study.experiment)
    if exp is None:
        return
    for r in tracking.search_all(c, exp.experiment_id, f"tags.`{tracking.SWEEP_TAG}` = '{sweep}'"):
        c.set_tag(r.info.run_id, tracking.STUDY_TAG, study.name)
        if r.data.tags.get(tracking.KIND_TAG) == "sweep":
            c.set_tag(r.info.run_id, tracking.PARENT_TAG, study_run)
