"""GIST's Table 3 from an MLflow experiment: GLUE, one column per task with its metric (MNLI QQP QNLI SST-2 STS-B
MRPC RTE CoLA, the paper's order; WNLI after), the mean over tasks, trainable parameters, and the delta of each
method with GIST against the same method without.

The rule is ``gist_ray.text.glue_run.table3``'s, over MLflow runs: per (protocol, backbone, method, GIST, task) the
runs are grouped by configuration (the run config without seed, names, paths; a lambda is a configuration), each
configuration's ``val/score`` and ``test/score`` are means over its seeds (the newest run per seed), and the
configuration with the best ``val/score`` gives the cell: its ``test/score`` x100 (mean ± std over seeds). So a
lambda is chosen on val, per task, as the paper does. ``val/score`` / ``test/score`` are the task's selection
metric (MCC for CoLA, Pearson for STS-B, accuracy elsewhere: ``gist_ray.text.glue``).

Which runs: the experiment's final runs (study cells, repeats, refits, single runs: :mod:`gist_ray.results`);
``tuning=True`` reads the tuning trials instead, which is how a lambda sweep with ``search.test_trials: true``
(``search_spaces/glue_lambda.yaml``) reports: the best-val trial's test score per (method, GIST, task), labelled
as such. Runs are GLUE runs by their ``dataset`` tag ``glue/<task>``.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

from gist_ray import results
from gist_ray.errors import ConfigError
from gist_ray.report import Table
from gist_ray.scaling.records import Stat, ordered
from gist_ray.text.glue import GLUE_TASKS, TABLE3_TASKS

TASK_ORDER = TABLE3_TASKS + tuple(t for t in GLUE_TASKS if t not in TABLE3_TASKS)
METRIC_LABEL = {"acc": "Acc", "mcc": "MCC", "pearson": "Pearson", "spearman": "Spearman", "f1": "F1"}
GLUE_PREFIX = "glue/"


def glue_records(runs: Sequence[results.FinalRun], metric: str, select: str) -> list[dict[str, Any]]:
    """One record per GLUE run that logged ``metric``: its cell, configuration, seed, selection and test values."""
    out = []
    for r in runs:
        if not r.dataset.startswith(GLUE_PREFIX) or metric not in r.metrics or not math.isfinite(r.metrics[metric]):
            continue
        out.append({"protocol": r.protocol, "backbone": r.backbone, "method": r.method, "gist": r.gist,
                    "task": r.dataset[len(GLUE_PREFIX):], "config": r.config, "seed": r.seed, "end": r.end_time,
                    "select": r.metrics.get(select, -math.inf), "value": r.metrics[metric],
                    "params": r.metrics.get("params/total"), "lam": r.params.get("gist.lam")})
    return out


def choose(records: list[dict[str, Any]]) -> dict[tuple, dict[str, Any]]:
    """Per (protocol, backbone, method, gist, task): the configuration with the best mean selection score (ties:
    the newer), as ``{"stat": Stat of value, "params": ..., "lam": ..., "configs": n}``."""
    cells: dict[tuple, dict[str, dict[Any, dict]]] = defaultdict(lambda: defaultdict(dict))
    for rec in records:
        key = (rec["protocol"], rec["backbone"], rec["method"], rec["gist"], rec["task"])
        per_seed = cells[key][rec["config"]]
        if rec["seed"] not in per_seed or rec["end"] >= per_seed[rec["seed"]]["end"]:
            per_seed[rec["seed"]] = rec
    out = {}
    for key, configs in cells.items():
        def rank(item: tuple[str, dict]) -> tuple:
            recs = list(item[1].values())
            return (statistics.fmean(float(r["select"]) for r in recs), max(r["end"] for r in recs))

        _, best = max(configs.items(), key=rank)
        recs = list(best.values())
        values = [100.0 * float(r["value"]) for r in recs]
        std = statistics.stdev(values) if len(values) > 1 else math.nan
        params = [float(r["params"]) for r in recs if r["params"] is not None]
        out[key] = {"stat": Stat(statistics.fmean(values), std, len(values)),
                    "params": statistics.fmean(params) if params else None, "lam": recs[0]["lam"],
                    "configs": len(configs)}
    return out


def table3(records: list[dict[str, Any]], title: str, digits: int = 2) -> Table:
    """Table-3-shaped: a row per (backbone, method, GIST), task columns, mean, params (M), GIST delta."""
    chosen = choose(records)
    tasks = [t for t in TASK_ORDER if any(k[4] == t for k in chosen)]
    several = len({k[1] for k in chosen}) > 1
    cols = [("method", "Method"), ("gist", "GIST")]
    cols += [(f"task_{t}", f"{GLUE_TASKS[t].dir} ({METRIC_LABEL.get(GLUE_TASKS[t].paper_metric, '')})")
             for t in tasks]
    cols += [("mean", "Mean"), ("params_m", "Params (M)"), ("delta", "Δ vs no GIST")]
    table = Table(title, cols, digits=digits)
    means: dict[tuple, float] = {}
    rows_by_key: dict[tuple, dict[str, Any]] = {}
    for bb, method, gist in sorted({k[1:4] for k in chosen}):
        cells = {k[4]: c for k, c in chosen.items() if k[1:4] == (bb, method, gist)}
        row: dict[str, Any] = {"method": method + (f" ({bb})" if several else ""), "gist": "on" if gist else "off"}
        for t in tasks:
            row[f"task_{t}"] = cells[t]["stat"] if t in cells else None
        if len(cells) == len(tasks):
            means[(bb, method, gist)] = statistics.fmean(c["stat"].mean for c in cells.values())
            row["mean"] = means[(bb, method, gist)]
        params = [c["params"] for c in cells.values() if c["params"] is not None]
        row["params_m"] = statistics.fmean(params) / 1e6 if params else None
        rows_by_key[(bb, method, gist)] = row
        table.rows.append(row)
    for (bb, method, gist), row in rows_by_key.items():
        if gist and (bb, method, gist) in means and (bb, method, False) in means:
            row["delta"] = means[(bb, method, gist)] - means[(bb, method, False)]
    return table


def report_table3(experiment: str, tracking_uri: str = "sqlite:///mlflow.db", metric: str | None = None,
                  out_dir: str | Path | None = None, formats: Sequence[str] = ("md", "csv", "tex"),
                  tuning: bool = False) -> list[Table]:
    """Print the Table-3-shaped GLUE table of ``experiment`` per protocol (Markdown) and, with ``out_dir``, write
    ``table3_<protocol>.<fmt>``; returns the tables. ``metric`` (default ``test/score``) fills the cells,
    ``val/score`` chooses the configuration (the lambda). The command: ``gist-ray report EXPERIMENT --table3``."""
    metric = metric or "test/score"
    try:
        final, trials = results.load_runs(tracking_uri, experiment)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    recs = glue_records(trials if tuning else final, metric, "val/score")
    if not recs:
        which = "tuning trial" if tuning else "final run (study cell, repeat, refit or single run)"
        raise ConfigError(f"experiment {experiment!r} at {tracking_uri}: no FINISHED GLUE {which} (dataset tag "
                          f"glue/<task>) that logged {metric}"
                          + ("" if tuning else "; --trials reads the tuning trials (a sweep with test_trials: true)"))
    tables = []
    for protocol in ordered(r["protocol"] for r in recs):
        kind = "tuning trials, the best-val trial's" if tuning else "final runs, the best-val configuration's"
        title = (f"GLUE (GIST Table 3) - protocol {protocol}; {kind} {metric} x100 per task, lambda chosen on "
                 "val/score; mean ± std over seeds")
        table = table3([r for r in recs if r["protocol"] == protocol], title)
        if out_dir is not None:
            table.write(out_dir, f"table3_{protocol}", formats)
        print(f"## {table.title}\n\n{table.to_markdown()}")
        tables.append(table)
    print(f"{len(recs)} runs of {experiment}")
    return tables
