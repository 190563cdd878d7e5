"""GIST's Table 11 from an MLflow experiment: a PEFT method trained with each objective (plain CE, BYOT, CS-KD,
USKD, GIST), one row each, with the VTAB-1k mean over datasets, the Natural / Specialized / Structured group
means and the trainable parameters.

Rows are named as in the paper: ``gist_adapter`` (CE), ``gist_adapter+BYOT``, ``gist_adapter+CS-KD``,
``gist_adapter+USKD``, ``gist_adapter*`` (GIST). A run's objective is its ``objective.name`` parameter (runs
logged before objectives existed: ``gist`` when their ``gist`` tag is true, else ``ce``; a ``gist`` run without
the token is ``ce``). Cells are mean ± std (ddof=1) over seeds; a group (the mean) is shown only for rows with
every dataset of that group (of the table). ``Params (M)`` is ``params/total`` (the objective's own modules
included, e.g. BYOT's shallow classifiers, which train but do not predict), ``Objective (M)`` that share.

Which accuracy: ``metric`` (default ``val/acc``). A ``protocol: vtab`` sweep such as
``search_spaces/skd_table11.yaml`` trains each (objective, method) cell once on train800 and evaluates val200,
which no choice within the cell has seen; only the sweep's single best configuration is refit and tested, so
``test/acc`` gives that one row per dataset. ``gist-ray report`` wires this in (see :func:`report_table11`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Sequence

from gist_ray import tracking
from gist_ray.errors import ConfigError
from gist_ray.report import OTHER_GROUP, VTAB_GROUPS, Table, canonical_dataset
from gist_ray.scaling.records import Record, as_bool, grid, ordered, summarize

ROW_ORDER = ("ce", "byot", "cs_kd", "uskd", "gist")
SUFFIX = {"ce": "", "byot": "+BYOT", "cs_kd": "+CS-KD", "uskd": "+USKD", "gist": "*"}


def run_objective(params: dict[str, str], tags: dict[str, str]) -> str:
    """The objective a run trained with (see the module docstring for runs without ``objective.name``)."""
    gist_on = as_bool(tags.get("gist", params.get("gist.enabled", "false")))
    name = params.get("objective.name") or ("gist" if gist_on else "ce")
    return "ce" if name == "gist" and not gist_on else name


def row_label(method: str, objective: str) -> str:
    return method + SUFFIX.get(objective, f"+{objective}")


def records_from_mlflow(tracking_uri: str, experiment: str, metric: str = "val/acc",
                        sweep_prefix: str | None = None) -> list[Record]:
    """One record per FINISHED run (sweep parents skipped) with tags ``method`` and ``dataset`` that logged
    ``metric``; ``sweep_prefix`` keeps only runs of sweeps whose name starts with it (e.g. ``skd-``)."""
    from mlflow.entities import ViewType

    c = tracking.client(tracking_uri)
    exp = c.get_experiment_by_name(experiment)
    if exp is None:
        raise ConfigError(f"no MLflow experiment {experiment!r} at {tracking_uri}")
    out: list[Record] = []
    token = None
    while True:
        page = c.search_runs([exp.experiment_id], filter_string="attributes.status = 'FINISHED'",
                             run_view_type=ViewType.ACTIVE_ONLY, max_results=1000, page_token=token)
        for run in page:
            tags, metrics, params = run.data.tags, run.data.metrics, run.data.params
            if tags.get(tracking.KIND_TAG) == "sweep" and tracking.PARENT_TAG not in tags:
                continue
            if "method" not in tags or "dataset" not in tags or metric not in metrics:
                continue
            if sweep_prefix and not str(tags.get(tracking.SWEEP_TAG, "")).startswith(sweep_prefix):
                continue
            out.append({
                "run_id": run.info.run_id, "method": tags["method"], "objective": run_objective(params, tags),
                "backbone": tags.get("backbone", ""), "dataset": canonical_dataset(tags["dataset"]),
                "seed": tags.get("seed", "0"), "acc": float(metrics[metric]),
                "trainable_params": metrics.get("params/total"), "objective_params": metrics.get("params/objective"),
            })
        token = page.token
        if not token:
            return out


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


def report_table11(experiment: str, tracking_uri: str = "sqlite:///mlflow.db", metric: str = "val/acc",
                   out_dir: str | Path | None = None, formats: Sequence[str] = ("md", "csv", "tex"),
                   sweep_prefix: str | None = None) -> Table:
    """Print the Table-11-shaped table of ``experiment`` (Markdown) and, with ``out_dir``, write
    ``table11.<fmt>``; returns the table. Wire into ``gist-ray report`` as, e.g., a ``--table11`` flag calling
    ``report_table11(args.experiment, args.tracking_uri, metric=..., out_dir=args.out)``."""
    recs = records_from_mlflow(tracking_uri, experiment, metric, sweep_prefix)
    if not recs:
        raise ConfigError(f"experiment {experiment!r} at {tracking_uri}: no FINISHED run with tags method and "
                          f"dataset that logged {metric}")
    table = table11(recs)
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        for fmt in formats:
            text = table.render(fmt)
            (out / f"table11.{fmt}").write_text(f"## {table.title}\n\n{text}" if fmt == "md" else text, encoding="utf-8")
    print(f"## {table.title} ({metric}, {len(recs)} runs of {experiment})\n\n{table.to_markdown()}")
    return table
