"""Which MLflow runs are results: final runs only, one configuration per cell, one run per seed.

A *final* run is a FINISHED, not deleted run whose role (``gist_ray.tracking``) is ``refit``, ``repeat``, ``cell``
or ``single``; tuning trials are selection scores and never enter a mean. Final runs are grouped into *cells*:
(protocol, method, GIST on/off, dataset, backbone). A cell uses one configuration (the run config without the
seed, paths, names and resources): the best-ranked one of the search that selected it (``gist_ray.selection_rank``),
else the one with the most seeds, else the newest; and per seed its newest run. A cell's value is the mean ± std
(ddof=1) over those seeds of the asked metric, never another one: a run without it is left out, and a cell where no
run has it is *missing*, with the reason. Runs trained with another objective than GIST's or plain CE (BYOT,
CS-KD, USKD: ``gist_ray.objectives``) make cells of their own, their method labelled ``method+BYOT`` etc.
"""

from __future__ import annotations

import hashlib
import json
import math
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from gist_ray import tracking

OBJECTIVE_SUFFIX = {"ce": "", "byot": "+BYOT", "cs_kd": "+CS-KD", "uskd": "+USKD", "gist": ""}

# config fields that do not make a different configuration
IGNORED = ("name", "output_dir", "train.seed", "data.root")
IGNORED_PREFIXES = ("tracking.", "resources.", "sampled.")


@dataclass
class FinalRun:
    run_id: str
    role: str
    protocol: str
    method: str
    gist: bool
    dataset: str
    backbone: str
    seed: Any
    config: str  # short fingerprint of the configuration
    rank: int | None
    end_time: int
    metrics: dict[str, float]
    params: dict[str, str]
    tags: dict[str, str]
    objective: str = "gist"


def run_objective(params: dict[str, str], tags: dict[str, str]) -> str:
    """The objective a run trained with: its ``objective.name`` parameter; runs logged before objectives existed
    trained GIST's when their ``gist`` tag is true, else plain CE; a ``gist`` run without the token is CE."""
    gist_on = str(tags.get("gist", params.get("gist.enabled", "false"))).lower() == "true"
    name = params.get("objective.name") or ("gist" if gist_on else "ce")
    return "ce" if name == "gist" and not gist_on else name


def method_label(method: str, objective: str) -> str:
    """``gist_adapter``, or ``gist_adapter+BYOT`` for a run trained with a self-distillation objective."""
    return method + OBJECTIVE_SUFFIX.get(objective, f"+{objective}")


@dataclass
class Cell:
    protocol: str
    method: str
    gist: bool
    dataset: str
    backbone: str
    metric: str
    runs: list[FinalRun] = field(default_factory=list)  # the runs whose values make the cell, one per seed
    notes: list[str] = field(default_factory=list)
    missing: str = ""  # why the cell has no value

    @property
    def values(self) -> list[float]:
        return [r.metrics[self.metric] for r in self.runs]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values) if self.runs else math.nan

    @property
    def std(self) -> float:
        return statistics.stdev(self.values) if len(self.runs) > 1 else math.nan

    def label(self) -> str:
        return f"{self.method}{'*' if self.gist else ''} / {self.dataset} / {self.backbone}"


def fingerprint(params: dict[str, str]) -> str:
    keep = {k: v for k, v in params.items() if k not in IGNORED and not k.startswith(IGNORED_PREFIXES)}
    return hashlib.sha1(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:10]


def load_runs(uri: str, experiment: str) -> tuple[list[FinalRun], list[FinalRun]]:
    """(final runs, tuning trials): the FINISHED active runs of ``experiment`` that carry method and dataset."""
    c = tracking.client(uri)
    exp = c.get_experiment_by_name(experiment)
    if exp is None:
        raise ValueError(f"no MLflow experiment {experiment!r} at {uri}")
    final, tuning = [], []
    for run in tracking.search_all(c, exp.experiment_id, "attributes.status = 'FINISHED'"):
        tags = run.data.tags
        role = tracking.role_of(tags)
        if role is None or "method" not in tags or "dataset" not in tags:
            continue
        seed: Any = tags.get("seed", run.data.params.get("train.seed", 0))
        try:
            seed = int(seed)
        except (TypeError, ValueError):
            pass
        try:
            rank = int(tags[tracking.RANK_TAG])
        except (KeyError, ValueError):
            rank = None
        objective = run_objective(run.data.params, tags)
        r = FinalRun(run.info.run_id, role, tracking.protocol_of(tags), method_label(tags["method"], objective),
                     str(tags.get("gist", "false")).lower() == "true", tags["dataset"], tags.get("backbone", ""), seed,
                     fingerprint(run.data.params), rank, run.info.end_time or 0, dict(run.data.metrics),
                     dict(run.data.params), dict(tags), objective)
        (tuning if role == tracking.TUNING else final).append(r)
    return final, tuning


def build_cells(final: list[FinalRun], metric: str) -> list[Cell]:
    """One cell per (protocol, method, gist, dataset, backbone), in first-seen order."""
    groups: dict[tuple, list[FinalRun]] = defaultdict(list)
    for r in final:
        groups[(r.protocol, r.method, r.gist, r.dataset, r.backbone)].append(r)
    return [_cell(key, runs, metric) for key, runs in groups.items()]


def _cell(key: tuple, runs: list[FinalRun], metric: str) -> Cell:
    cell = Cell(*key, metric=metric)
    configs: dict[str, list[FinalRun]] = defaultdict(list)
    for r in runs:
        configs[r.config].append(r)

    def preference(item: tuple[str, list[FinalRun]]) -> tuple:
        rs = item[1]
        ranks = [r.rank for r in rs if r.rank is not None]
        return (min(ranks) if ranks else math.inf, -len({r.seed for r in rs}), -max(r.end_time for r in rs))

    ordered = sorted(configs.items(), key=preference)
    chosen = ordered[0][1]
    for fp, rs in ordered[1:]:
        cell.notes.append(f"left out configuration {fp} ({len(rs)} runs: {', '.join(sorted({r.role for r in rs}))})")
    per_seed: dict[Any, list[FinalRun]] = defaultdict(list)
    for r in chosen:
        per_seed[r.seed].append(r)
    without = []
    for seed, rs in per_seed.items():
        rs.sort(key=lambda r: r.end_time)
        if len(rs) > 1:
            cell.notes.append(f"seed {seed}: {len(rs)} runs of one configuration, used the newest {rs[-1].run_id}")
        if metric in rs[-1].metrics and math.isfinite(rs[-1].metrics[metric]):
            cell.runs.append(rs[-1])
        else:
            without.append(rs[-1])
    if without and cell.runs:
        cell.notes.append(f"{len(without)} runs without {metric} left out ({', '.join(r.run_id for r in without)})")
    if not cell.runs:
        cell.missing = _why_missing(chosen, metric)
    cell.runs.sort(key=lambda r: str(r.seed))
    return cell


def _why_missing(runs: list[FinalRun], metric: str) -> str:
    roles = sorted({r.role for r in runs})
    logged = sorted({k for r in runs for k in r.metrics if k.endswith("/acc")})
    why = f"its {len(runs)} final runs ({', '.join(roles)}) logged no {metric}"
    if logged:
        why += f" (they logged {', '.join(logged)}; a report never swaps one metric for another)"
    if metric.startswith("test/") and all(r.role == tracking.REPEAT and r.protocol == "vtab" for r in runs):
        why += "; repeats of a protocol-vtab sweep select on val200 and never test: its refit holds the test number"
    return why


def records(cells: list[Cell]) -> list[dict[str, Any]]:
    """Tidy records (``gist_ray.scaling.records``) of the cells' runs; ``acc`` is the cell's metric."""
    out = []
    for cell in cells:
        for r in cell.runs:
            out.append({
                "run_id": r.run_id, "role": r.role, "protocol": r.protocol, "method": r.method,
                "backbone": r.backbone, "gist": r.gist, "dataset": r.dataset, "seed": r.seed,
                "acc": r.metrics[cell.metric], "metric": cell.metric, "test_acc": r.metrics.get("test/acc"),
                "val_acc": r.metrics.get("val/acc"), "trainable_params": _number(r, "params/total"),
                "backbone_params": _number(r, "params/backbone"), "frozen_params": _number(r, "params/frozen"),
            })
    return out


def _number(r: FinalRun, key: str) -> float | None:
    for src in (r.metrics, r.params):
        try:
            return float(src[key])
        except (KeyError, TypeError, ValueError):
            continue
    return None


def best_trials(tuning: list[FinalRun], metric: str, mode: str = "max") -> list[dict[str, Any]]:
    """The best tuning trial per (dataset, backbone, method, GIST), with its configuration and how many trials
    it was chosen from: a selection on ``metric``, not a result."""
    groups: dict[tuple, list[FinalRun]] = defaultdict(list)
    for r in tuning:
        if metric in r.metrics and math.isfinite(r.metrics[metric]):
            groups[(r.dataset, r.backbone, r.method, r.gist)].append(r)
    out = []
    for (dataset, backbone, method, gist), rs in groups.items():
        best = (max if mode == "max" else min)(rs, key=lambda r: r.metrics[metric])
        config = tracking.read_json_tag(best.tags, tracking.CONFIG_TAG) or {
            k[len("sampled."):]: v for k, v in best.params.items() if k.startswith("sampled.")}
        out.append({"method": f"{method}{'*' if gist else ''}", "dataset": dataset, "backbone": backbone,
                    "value": best.metrics[metric], "trials": len(rs), "sweep": best.tags.get(tracking.SWEEP_TAG, ""),
                    "run_id": best.run_id, "config": json.dumps(config, sort_keys=True)})
    return out


def tuning_only_message(experiment: str, uri: str, tuning: list[FinalRun]) -> str:
    """What to run when an experiment holds tuning trials and no final run."""
    sweeps = sorted({r.tags.get(tracking.SWEEP_TAG, "?") for r in tuning})
    head = (f"experiment {experiment!r} ({uri}) holds {len(tuning)} tuning trials (sweeps: {', '.join(sweeps)}) and no "
            "final run.\n" if tuning else f"experiment {experiment!r} ({uri}) holds no finished run with a result.\n")
    return head + (
        "Tuning trials are validation accuracies that selected a configuration: they are not results, and trials of\n"
        "different configurations are not seeds of one. To get a result table, run one of:\n"
        "  - repeats of the selected configuration over seeds: add `repeat_best: 1` and `repeat_seeds: [0, 1, 2]`\n"
        "    to the sweep's `search:` and rerun it with --resume (its finished trials are not trained again);\n"
        "  - the VTAB protocol: `protocol: vtab` in the sweep file (select on val200, refit on train800val200,\n"
        "    test once);\n"
        "  - a study of fixed configurations x seeds: gist-ray scale STUDY.yaml.\n"
        f"To see the tuning side as what it is: gist-ray report {experiment} --trials")
