"""Result tables (Markdown, CSV, LaTeX) from tidy run records or an MLflow experiment (``gist-ray report``).

- ``vtab_table``: the shape of GIST's Table 2: a row per method and its GIST version (marked ``*``), a column
  per dataset in VTAB-1k order, group means, the overall mean (over datasets), Δ against the same method
  without GIST and trainable parameters (M);
- ``scaling_table``: the shape of Table 9: backbone size x method (x GIST) with parameters and accuracy;
- ``report``: both tables from an experiment's final runs only (``gist_ray.results``), one pair per protocol,
  and a cell list saying how many runs each cell used and which; ``report_trials``: the tuning side, labelled.

Cells are mean ± std (ddof=1) over seeds; accuracies are fractions shown multiplied by ``scale`` (100: %).
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from gist_ray import results, tracking
from gist_ray.backbones import backbone_params
from gist_ray.errors import ConfigError
from gist_ray.scaling import plots
from gist_ray.scaling.records import (
    Record,
    Stat,
    as_records,
    backbone_sizes,
    grid,
    mean_field,
    ordered,
    summarize,
)

VTAB_GROUPS: dict[str, tuple[str, ...]] = {
    "Natural": ("cifar", "caltech101", "dtd", "oxford_flowers102", "oxford_iiit_pet", "svhn", "sun397"),
    "Specialized": ("patch_camelyon", "eurosat", "resisc45", "diabetic_retinopathy"),
    "Structured": ("clevr_count", "clevr_dist", "dmlab", "kitti", "dsprites_loc", "dsprites_ori",
                   "smallnorb_azi", "smallnorb_ele"),
}
OTHER_GROUP = "Other"
DISPLAY = {
    "cifar": "Cifar100", "caltech101": "Caltech101", "dtd": "DTD", "oxford_flowers102": "Flowers102",
    "oxford_iiit_pet": "Pets", "svhn": "SVHN", "sun397": "Sun397", "patch_camelyon": "Camelyon",
    "eurosat": "EuroSAT", "resisc45": "Resisc45", "diabetic_retinopathy": "Retinopathy",
    "clevr_count": "Clevr-Count", "clevr_dist": "Clevr-Dist", "dmlab": "DMLab", "kitti": "KITTI-Dist",
    "dsprites_loc": "dSpr-Loc", "dsprites_ori": "dSpr-Ori", "smallnorb_azi": "sNORB-Azim",
    "smallnorb_ele": "sNORB-Ele",
}
ALIASES = {
    "cifar100": "cifar", "cifar_100": "cifar", "caltech": "caltech101", "flowers102": "oxford_flowers102",
    "flowers": "oxford_flowers102", "pets": "oxford_iiit_pet", "oxford_pet": "oxford_iiit_pet",
    "camelyon": "patch_camelyon", "retinopathy": "diabetic_retinopathy", "clevr_distance": "clevr_dist",
    "kitti_dist": "kitti", "dsprites_location": "dsprites_loc", "dsprites_orientation": "dsprites_ori",
    "smallnorb_azimuth": "smallnorb_azi", "smallnorb_elevation": "smallnorb_ele",
}


def canonical_dataset(name: str) -> str:
    """VTAB key for common spellings (``vtab/cifar100`` -> ``cifar``); unknown names pass through."""
    key = str(name).strip().lower().replace("-", "_")
    for prefix in ("vtab/", "vtab_", "vtab1k/", "vtab1k_"):
        if key.startswith(prefix):
            key = key[len(prefix):]
    key = ALIASES.get(key, key)
    return key if any(key in ds for ds in VTAB_GROUPS.values()) else str(name)


TEXT_COLUMNS = ("method", "backbone", "dataset", "sweep", "run_id", "config")  # left-aligned in Markdown


@dataclass
class Table:
    """Columns are ``(key, label)``; row values are ``Stat`` (mean ± std), float, str or None."""

    title: str
    columns: list[tuple[str, str]]
    rows: list[dict[str, Any]] = field(default_factory=list)
    groups: list[tuple[str, int]] = field(default_factory=list)  # LaTeX header spans: (label, n columns)
    digits: int = 1

    def text(self, key: str, value: Any) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "–"
        if isinstance(value, Stat):
            if math.isnan(value.mean):
                return "–"
            s = f"{value.mean:.{self.digits}f}"
            return s + (f" ± {value.std:.{self.digits}f}" if value.n_seeds > 1 and math.isfinite(value.std) else "")
        if key == "delta":
            return f"{value:+.{self.digits}f}"
        if key.endswith("_m"):
            return f"{value:.2f}" if abs(value) >= 0.1 else f"{value:.3f}"
        if isinstance(value, float):
            return f"{value:.{self.digits}f}"
        return str(value)

    def to_markdown(self) -> str:
        head = "| " + " | ".join(label for _, label in self.columns) + " |"
        rule = "|" + "|".join(":---" if k in TEXT_COLUMNS else "---:" for k, _ in self.columns) + "|"
        body = ["| " + " | ".join(self.text(k, r.get(k)) for k, _ in self.columns) + " |" for r in self.rows]
        return "\n".join([head, rule, *body]) + "\n"

    def to_csv(self) -> str:
        """Numbers unrounded; a ``Stat`` column ``k`` becomes ``k`` (mean), ``k_std`` and ``k_n`` (seeds)."""
        keys: list[str] = []
        for k, _ in self.columns:
            keys += [k, f"{k}_std", f"{k}_n"] if any(isinstance(r.get(k), Stat) for r in self.rows) else [k]
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(keys)
        for r in self.rows:
            row: list[Any] = []
            for k, _ in self.columns:
                v = r.get(k)
                if f"{k}_std" in keys:
                    row += [v.mean, v.std, v.n_seeds] if isinstance(v, Stat) else ["", "", ""]
                else:
                    row.append("" if v is None else v)
            w.writerow(["" if isinstance(x, float) and math.isnan(x) else x for x in row])
        return buf.getvalue()

    def to_latex(self) -> str:
        def esc(s: str) -> str:
            s = s.replace("\\", r"\textbackslash{}")
            for ch in "&%$#_{}":
                s = s.replace(ch, "\\" + ch)
            return s.replace("±", r"$\pm$").replace("Δ", r"$\Delta$").replace("–", "--")

        lines = [r"\begin{tabular}{l" + "r" * (len(self.columns) - 1) + "}", r"\toprule"]
        if self.groups:
            lines.append(" & ".join(rf"\multicolumn{{{n}}}{{c}}{{{esc(g)}}}" if g else " & " * (n - 1)
                                    for g, n in self.groups) + r" \\")
        lines.append(" & ".join(esc(label) for _, label in self.columns) + r" \\")
        lines.append(r"\midrule")
        for r in self.rows:
            lines.append(" & ".join(esc(self.text(k, r.get(k))) for k, _ in self.columns) + r" \\")
        lines += [r"\bottomrule", r"\end{tabular}"]
        return "\n".join(lines) + "\n"

    def render(self, fmt: str) -> str:
        return {"md": self.to_markdown, "csv": self.to_csv, "tex": self.to_latex}[fmt]()

    def write(self, out_dir: str | Path, name: str, formats: Sequence[str] = ("md", "csv", "tex")) -> list[Path]:
        """Write ``<out_dir>/<name>.<fmt>`` for each format (Markdown with the title as a heading); returns the paths."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = []
        for fmt in formats:
            text = self.render(fmt)
            path = out / f"{name}.{fmt}"
            path.write_text(f"## {self.title}\n\n{text}" if fmt == "md" else text, encoding="utf-8")
            paths.append(path)
        return paths


def _scaled(s: Stat, scale: float) -> Stat:
    return Stat(s.mean * scale, s.std * scale, s.n_seeds)


def _delta(with_: dict[str, dict], without: dict[str, dict], scale: float) -> float | None:
    """Mean over shared datasets of (seed-mean with GIST - seed-mean without)."""
    shared = [d for d in with_ if d in without]
    if not shared:
        return None
    return scale * (summarize(with_, shared).mean - summarize(without, shared).mean)


def _canonical(records: Iterable[Record]) -> list[Record]:
    return [{**r, "dataset": canonical_dataset(r["dataset"])} for r in as_records(records)]


def _dataset_groups(datasets: Iterable[str]) -> list[tuple[str, list[str]]]:
    """Present datasets by VTAB group in the paper's order; unknown ones in ``Other``, first-seen order."""
    datasets = list(datasets)
    present = set(datasets)
    out = [(g, [d for d in ds if d in present]) for g, ds in VTAB_GROUPS.items()]
    known = {d for ds in VTAB_GROUPS.values() for d in ds}
    out.append((OTHER_GROUP, [d for d in ordered(datasets) if d not in known]))
    return [(g, ds) for g, ds in out if ds]


def vtab_table(records: Iterable[Record], metric: str | None = None, backbone: str | None = None,
               scale: float = 100.0, digits: int = 1) -> Table:
    """Table-2-shaped results; group and overall means only for rows that have every dataset of the span."""
    recs = [r for r in _canonical(records) if backbone is None or str(r.get("backbone")) == backbone]
    g = grid(recs, metric)
    groups = _dataset_groups(d for by_ds in g.values() for d in by_ds)
    all_ds = [d for _, ds in groups for d in ds]
    several = len({k[2] for k in g}) > 1
    cols = [("method", "Method")] + [(d, DISPLAY.get(d, d)) for d in all_ds]
    cols += [(f"group_{grp.lower()}", grp) for grp, _ in groups] + [("mean", "Mean"), ("delta", "Δ"),
                                                                  ("params_m", "Params (M)")]
    span = [("", 1)] + [(grp, len(ds)) for grp, ds in groups] + [("Group means", len(groups)), ("", 3)]
    table = Table("VTAB results" + (f" ({backbone})" if backbone else ""), cols, groups=span, digits=digits)
    methods, backbones = ordered(k[0] for k in g), ordered(k[2] for k in g)
    keys = sorted(g, key=lambda k: (methods.index(k[0]), backbones.index(k[2]), k[1]))
    for key in keys:
        method, gist, bb = key
        by_ds = g[key]
        row: dict[str, Any] = {"method": f"{method}{'*' if gist else ''}{' (' + bb + ')' if several else ''}"}
        for d in all_ds:
            row[d] = _scaled(summarize(by_ds, [d]), scale) if d in by_ds else None
        for grp, ds in groups:
            row[f"group_{grp.lower()}"] = _scaled(summarize(by_ds, ds), scale) if all(d in by_ds for d in ds) else None
        row["mean"] = _scaled(summarize(by_ds, all_ds), scale) if all(d in by_ds for d in all_ds) else None
        base = g.get((method, False, bb))
        row["delta"] = _delta(by_ds, base, scale) if gist and base else None
        params = mean_field(recs, key, "trainable_params")
        row["params_m"] = params / 1e6 if params is not None else None
        table.rows.append(row)
    return table


def scaling_table(records: Iterable[Record], metric: str | None = None, scale: float = 100.0,
                  digits: int = 1) -> Table:
    """Table-9-shaped results: backbone (by size) x method x GIST, accuracy averaged over each row's datasets."""
    recs = _canonical(records)
    g = grid(recs, metric)
    sizes = backbone_sizes(recs)
    method_order = ordered(k[0] for k in g)
    cols = [("backbone", "Backbone"), ("backbone_params_m", "Backbone params (M)"), ("method", "Method"),
            ("params_m", "Trainable params (M)"), ("datasets", "Datasets"), ("acc", "Accuracy"), ("delta", "Δ")]
    table = Table("Scaling", cols, digits=digits)
    for key in sorted(g, key=lambda k: (sizes.get(k[2], math.inf), k[2], method_order.index(k[0]), k[1])):
        method, gist, bb = key
        base = g.get((method, False, bb))
        params = mean_field(recs, key, "trainable_params")
        table.rows.append({
            "backbone": bb,
            "backbone_params_m": sizes[bb] / 1e6 if bb in sizes else None,
            "method": f"{method}{'*' if gist else ''}",
            "params_m": params / 1e6 if params is not None else None,
            "datasets": len(g[key]),
            "acc": _scaled(summarize(g[key]), scale),
            "delta": _delta(g[key], base, scale) if gist and base else None,
        })
    return table


def write_report(records: Iterable[Record], out_dir: str | Path, formats: Sequence[str] = ("md", "csv", "tex"),
                 metric: str | None = None, with_plots: bool = False) -> list[Path]:
    """Write ``vtab.<fmt>`` and ``scaling.<fmt>`` (and, with ``plots``, the figures); returns the paths."""
    recs = as_records(records)
    paths = vtab_table(recs, metric).write(out_dir, "vtab", formats)
    paths += scaling_table(recs, metric).write(out_dir, "scaling", formats)
    if with_plots:
        paths += plots.plot_all(recs, Path(out_dir), metric=metric)
    return paths


# ----------------------------------------------------------------------------- gist-ray report EXPERIMENT


def report(experiment: str, tracking_uri: str = "sqlite:///mlflow.db", out_dir: str | Path = "report",
           metric: str = "test/acc") -> list[Path]:
    """Per protocol, the Table-2- and Table-9-shaped tables (md/csv/tex, plots) of the experiment's final runs;
    ``cells.csv`` / ``cells.md``: every cell with its value, seeds, run ids and notes. Prints the tables, the cells
    and the missing ones with their reasons; returns the paths. An experiment with tuning trials only raises a
    ``NothingToReport`` that says what to run."""
    try:
        final, tuning = results.load_runs(tracking_uri, experiment)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if not final:
        raise NothingToReport(results.tuning_only_message(experiment, tracking_uri, tuning))
    cells = results.build_cells(final, metric)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [*write_cells(cells, out)]
    for protocol in ordered(c.protocol for c in cells):
        recs = _with_backbone_sizes(results.records([c for c in cells if c.protocol == protocol]))
        if not recs:
            continue
        what = tracking.PROTOCOLS.get(protocol, "as its runs' protocol tag says")
        for name, table in (("vtab", vtab_table(recs, "acc")), ("scaling", scaling_table(recs, "acc"))):
            table.title += f" - protocol {protocol}: {what}; {metric}, mean ± std over seeds"
            for fmt in ("md", "csv", "tex"):
                path = out / f"{name}_{protocol}.{fmt}"
                text = table.render(fmt)
                path.write_text(f"## {table.title}\n\n{text}" if fmt == "md" else text, encoding="utf-8")
                paths.append(path)
            print(f"## {table.title}\n\n{table.to_markdown()}")
        try:
            paths += plots.plot_all(recs, out / protocol, metric="acc")
        except ValueError as exc:
            print(f"(plots of protocol {protocol} skipped: {exc})")
    print(cells_markdown(cells))
    missing = [c for c in cells if c.missing]
    for c in missing:
        print(f"missing: {c.protocol} {c.label()}: {c.missing}")
    used = sum(len(c.runs) for c in cells)
    print(f"{used} final runs in {len(cells) - len(missing)} cells ({len(missing)} missing) of {experiment} "
          f"({metric}); {len(tuning)} tuning trials left out; files in {out.resolve()}")
    return paths


class NothingToReport(ConfigError):
    """The experiment has no final run: the message says what to run."""


def _with_backbone_sizes(recs: list[dict]) -> list[dict]:
    """Exact backbone sizes for known backbones; else estimated per backbone as the smallest frozen + trainable
    parameters among its runs (backbone + head, roughly)."""
    estimates: dict[str, list[float]] = {}
    for r in recs:
        if r["trainable_params"] is not None and r["frozen_params"] is not None:
            estimates.setdefault(r["backbone"], []).append(r["trainable_params"] + r["frozen_params"])
    for r in recs:
        try:
            r["backbone_params"] = float(backbone_params(r["backbone"]))
        except Exception:  # noqa: BLE001 - unknown or unbuildable name: keep what the run logged, or estimate
            if r["backbone_params"] is None and r["backbone"] in estimates:
                r["backbone_params"] = min(estimates[r["backbone"]])
    return recs


CELL_COLUMNS = ["protocol", "method", "gist", "dataset", "backbone", "metric", "mean", "std", "n", "roles", "run_ids",
                "missing", "notes"]


def cell_rows(cells: list[results.Cell]) -> list[dict]:
    return [{"protocol": c.protocol, "method": c.method, "gist": c.gist, "dataset": c.dataset, "backbone": c.backbone,
             "metric": c.metric, "mean": c.mean, "std": c.std, "n": len(c.runs),
             "roles": ";".join(sorted({r.role for r in c.runs})), "run_ids": ";".join(r.run_id for r in c.runs),
             "missing": c.missing, "notes": "; ".join(c.notes)} for c in cells]


def write_cells(cells: list[results.Cell], out: Path) -> list[Path]:
    """``cells.csv`` (full precision, run ids) and ``cells.md``."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, CELL_COLUMNS, lineterminator="\n")
    w.writeheader()
    for row in cell_rows(cells):
        w.writerow({k: "" if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()})
    (out / "cells.csv").write_text(buf.getvalue(), encoding="utf-8")
    (out / "cells.md").write_text(cells_markdown(cells), encoding="utf-8")
    return [out / "cells.csv", out / "cells.md"]


def cells_markdown(cells: list[results.Cell], scale: float = 100.0) -> str:
    """One line per cell: its value, how many seeds (runs) it used, their roles; run ids are in cells.csv."""
    lines = ["## Cells (final runs only; run ids in cells.csv)", "",
             "| Protocol | Method | Dataset | Backbone | Value | Runs | Roles | Notes |", "|:---|:---|:---|:---|---:|---:|:---|:---|"]
    for c in cells:
        if c.missing:
            value = "missing"
        else:
            value = f"{scale * c.mean:.2f}" + (f" ± {scale * c.std:.2f}" if len(c.runs) > 1 else "")
        roles = ", ".join(sorted({r.role for r in c.runs}))
        lines.append(f"| {c.protocol} | {c.method}{'*' if c.gist else ''} | {c.dataset} | {c.backbone} | {value} | "
                     f"{len(c.runs)} | {roles} | {'; '.join(c.notes) or ''} |")
    return "\n".join(lines) + "\n"


def report_trials(experiment: str, tracking_uri: str = "sqlite:///mlflow.db", out_dir: str | Path = "report",
                  metric: str = "val/acc", mode: str = "max") -> list[Path]:
    """The tuning side on purpose: the best trial per (method, GIST) [and dataset, backbone] with its
    configuration, labelled as the validation accuracy of a selection. Writes trials.md / trials.csv."""
    try:
        _, tuning = results.load_runs(tracking_uri, experiment)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    rows = results.best_trials(tuning, metric, mode)
    if not rows:
        raise ConfigError(f"experiment {experiment!r} at {tracking_uri}: no finished tuning trial logged {metric}")
    title = (f"Tuning trials of {experiment}: the best trial per (method, GIST) by {metric} - the score that "
             f"selected a configuration, not a result (report refits, repeats or study cells for that)")
    cols = [("method", "Method"), ("dataset", "Dataset"), ("backbone", "Backbone"), ("value", f"{metric} (selection)"),
            ("trials", "Trials"), ("sweep", "Sweep"), ("run_id", "Run"), ("config", "Configuration")]
    table = Table(title, cols, rows=[{**r, "value": 100 * r["value"]} for r in rows], digits=2)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in ("md", "csv"):
        path = out / f"trials.{fmt}"
        path.write_text(f"## {title}\n\n{table.render(fmt)}" if fmt == "md" else table.render(fmt), encoding="utf-8")
        paths.append(path)
    print(f"## {title}\n\n{table.to_markdown()}")
    return paths
