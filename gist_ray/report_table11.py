"""GIST's Table 11 from an MLflow experiment: a PEFT method trained with each objective (plain CE, BYOT, CS-KD,
USKD, GIST), one row each, with the VTAB-1k mean over datasets, the Natural / Specialized / Structured group
means and the trainable parameters.

Rows are named as in the paper: ``gist_adapter`` (CE), ``gist_adapter+BYOT``, ``gist_adapter+CS-KD``,
``gist_adapter+USKD``, ``gist_adapter*`` (GIST). A run's objective is its ``objective.name`` parameter (runs
logged before objectives existed: ``gist`` when their ``gist`` tag is true, else ``ce``; a ``gist`` run without
the token is ``ce``). ``Params (M)`` is ``params/total`` (the objective's own modules included, e.g. BYOT's
shallow classifiers, which train but do not predict), ``Objective (M)`` that share.

Which runs: by default the experiment's *final* runs (:mod:`gist_ray.results`: refits, repeats, study cells,
single runs; one configuration per cell, the newest run per seed), with cells keyed by the objective as well, and
``test/acc``; a cell is mean ± std (ddof=1) over its seeds; one table per protocol. ``search_spaces/skd_table11.yaml``
repeats every (objective, method) cell of its ``protocol: vtab`` sweep over seeds, and a repeat under that
protocol is a refit on train800val200 tested once: those are the table's runs. ``tuning=True`` tabulates the
tuning trials' ``val/acc`` instead (selection scores, labelled so). A group (the mean) is shown only for rows that
have every dataset of that group (of the table).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Sequence

from gist_ray import results, tracking
from gist_ray.errors import ConfigError
from gist_ray.report import OTHER_GROUP, VTAB_GROUPS, Table, canonical_dataset
from gist_ray.scaling.records import Record, grid, ordered, summarize

ROW_ORDER = ("ce", "byot", "cs_kd", "uskd", "gist")


def row_label(method: str, objective: str) -> str:
    """Table 11's row name: the method, ``+BYOT`` etc. for a self-distillation objective, ``*`` for GIST."""
    return results.method_label(method, objective) + ("*" if objective == "gist" else "")


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def records_from_mlflow(tracking_uri: str, experiment: str, metric: str = "test/acc", tuning: bool = False,
                        sweep_prefix: str | None = None) -> list[Record]:
    """One record per run that makes a cell (``tuning``: per tuning trial that logged ``metric``), with the run's
    ``objective`` and ``protocol``; ``sweep_prefix`` keeps only runs of sweeps whose name starts with it (repeats of
    sweep ``skd-dtd`` belong to ``skd-dtd-seeds``)."""
    try:
        final, trials = results.load_runs(tracking_uri, experiment)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    runs = [r for r in (trials if tuning else final)
            if not sweep_prefix or str(r.tags.get(tracking.SWEEP_TAG, "")).startswith(sweep_prefix)]
    if tuning:
        chosen = [(r, metric) for r in runs if metric in r.metrics]
    else:  # results' cells are keyed by the objective already (its method label carries it)
        chosen = [(r, cell.metric) for cell in results.build_cells(runs, metric) for r in cell.runs]
    return [{
        "run_id": r.run_id, "method": r.tags["method"], "objective": r.objective, "protocol": r.protocol,
        "backbone": r.backbone, "dataset": canonical_dataset(r.dataset), "seed": r.seed, "acc": r.metrics[m],
        "trainable_params": _number(r.metrics.get("params/total")),
        "objective_params": _number(r.metrics.get("params/objective")),
    } for r, m in chosen]


def _mean(values: Iterable[Any]) -> float | None:
    vals = [float(v) for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def table11(records: Sequence[Record], scale: float = 100.0, digits: int = 2) -> Table:
    """Table-11-shaped results: a row per (backbone, method, objective), objectives in the paper's order."""
    recs = [{**r, "method": row_label(str(r["method"]), str(r["objective"])), "gist": False} for r in records]
    g = grid(recs, "acc")
    present = ordered(str(r["dataset"]) for r in recs)
    known = {d for ds in VTAB_GROUPS.values() for d in ds}
    groups = [(name, [d for d in ds if d in present]) for name, ds in VTAB_GROUPS.items()]
    other = [d for d in present if d not in known]
    if other:
        groups.append((OTHER_GROUP, other))
    several = len({str(r.get("backbone", "")) for r in recs}) > 1
    cols = [("method", "Method"), ("mean", "Mean")] + [(f"group_{n.lower()}", n) for n, _ in groups]
    cols += [("params_m", "Params (M)"), ("objective_m", "Objective (M)")]
    table = Table("Comparison with self-knowledge distillation (GIST Table 11)", cols, digits=digits)
    backbones = ordered(str(r.get("backbone", "")) for r in records)
    methods = ordered(str(r["method"]) for r in records)
    objectives = [o for o in ROW_ORDER if any(r["objective"] == o for r in records)]
    objectives += ordered(str(r["objective"]) for r in records if r["objective"] not in ROW_ORDER)
    for bb in backbones:
        for method in methods:
            for objective in objectives:
                label = row_label(method, objective)
                by_ds = g.get((label, False, bb))
                if not by_ds:
                    continue
                mine = [r for r in recs if r["method"] == label and str(r.get("backbone", "")) == bb]
                row: dict[str, Any] = {"method": label + (f" ({bb})" if several else "")}
                row["mean"] = scaled(summarize(by_ds, present), scale) if all(d in by_ds for d in present) else None
                for name, ds in groups:
                    full = bool(ds) and all(d in by_ds for d in ds)
                    row[f"group_{name.lower()}"] = scaled(summarize(by_ds, ds), scale) if full else None
                params = _mean(r.get("trainable_params") for r in mine)
                extra = _mean(r.get("objective_params") for r in mine)
                row["params_m"] = params / 1e6 if params is not None else None
                row["objective_m"] = extra / 1e6 if extra is not None else None
                table.rows.append(row)
    return table


def scaled(stat, scale: float):
    return type(stat)(stat.mean * scale, stat.std * scale, stat.n_seeds)


def report_table11(experiment: str, tracking_uri: str = "sqlite:///mlflow.db", metric: str | None = None,
                   out_dir: str | Path | None = None, formats: Sequence[str] = ("md", "csv", "tex"),
                   sweep_prefix: str | None = None, tuning: bool = False) -> list[Table]:
    """Print the Table-11-shaped table of ``experiment`` per protocol (Markdown) and, with ``out_dir``, write
    ``table11_<protocol>.<fmt>``; returns the tables. ``metric``: ``test/acc`` for final runs, ``val/acc`` for
    tuning trials by default. The command: ``gist-ray report EXPERIMENT --table11`` (``--trials``: tuning)."""
    metric = metric or ("val/acc" if tuning else "test/acc")
    recs = records_from_mlflow(tracking_uri, experiment, metric, tuning, sweep_prefix)
    if not recs:
        which = "tuning trial" if tuning else "final run (refit, repeat, study cell or single run)"
        raise ConfigError(f"experiment {experiment!r} at {tracking_uri}: no FINISHED {which} with tags method and "
                          f"dataset that logged {metric}" + ("" if tuning else "; tuning=True reads the tuning trials"))
    tables = []
    for protocol in ordered(r["protocol"] for r in recs):
        table = table11([r for r in recs if r["protocol"] == protocol])
        kind = "tuning trials (selection scores)" if tuning else "final runs"
        table.title += f" - protocol {protocol}; {metric} of {kind}, mean ± std over seeds"
        if out_dir is not None:
            table.write(out_dir, f"table11_{protocol}", formats)
        print(f"## {table.title}\n\n{table.to_markdown()}")
        tables.append(table)
    print(f"{len(recs)} runs of {experiment}")
    return tables
