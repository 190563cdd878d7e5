"""A study's analysis: tidy records of its finished cells, GIST gains per size with nested seed intervals, paired
tests that name their unit, scaling-law fits along backbone size (and along training-set size when the grid
has ``n_train`` values), and the tables and plots written to its output folder. Pure over records (no Ray, no
torch). The statistics are ``gist_ray.scaling`` (intervals, gains, fit); ``docs/scaling.md`` states each
method and its measured coverage."""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

from gist_ray import tracking
from gist_ray.backbones import backbone_params
from gist_ray.report import Table, scaling_table
from gist_ray.scaling import plots
from gist_ray.scaling.fit import fit_scaling_law
from gist_ray.scaling.gains import paired_differences, paired_gain, paired_test
from gist_ray.scaling.intervals import LEVEL, Interval
from gist_ray.scaling.records import Grid, backbone_sizes, grid, ordered, summarize
from gist_ray.study.spec import Study

def cell_records(study: Study, done: dict[int, Any]) -> list[dict]:
    """Tidy records (``gist_ray.scaling.records`` schema) of the finished cells; ``acc`` is the study metric."""
    labels = study.method_labels()
    several_n = len(study.n_train) > 1
    out = []
    for cell in study.cells():
        run = done.get(cell.index)
        if run is None:
            continue
        m = run.data.metrics
        method = labels[cell.method] + (f"@n{cell.n_train}" if several_n else "")
        out.append({
            "run_id": run.info.run_id, "cell": cell.index, "backbone": cell.backbone,
            "backbone_params": _backbone_size(cell.backbone, m), "method": method, "gist": cell.gist,
            "dataset": cell.dataset.task, "seed": cell.seed, "n_train": cell.n_train, "acc": float(m[study.metric]),
            "metric": study.metric, "test_acc": m.get("test/acc"), "val_acc": m.get("val/acc"),
            "trainable_params": m.get("params/total"),
        })
    return out



def _backbone_size(backbone: str, metrics: dict[str, float]) -> float:
    """The exact size of a timm / gist-ray backbone; for others (text encoders) the run's frozen + trainable
    parameters, roughly the backbone + head, as ``gist_ray.report`` estimates unknown backbones."""
    try:
        return float(backbone_params(backbone))
    except Exception:  # noqa: BLE001 - not a timm name: estimate from what the run logged
        return float(metrics.get("params/frozen", 0.0) + metrics.get("params/total", 0.0))


def _interval_fields(iv: Interval, prefix: str) -> dict[str, Any]:
    """``<prefix>_lo``/``_hi`` (None without an interval), ``df`` and ``ci`` (how it was made, or why none)."""
    how = f"{iv.method}, df {iv.df:.1f}" if iv.ok else iv.reason
    return {f"{prefix}_lo": iv.lo if iv.ok else None, f"{prefix}_hi": iv.hi if iv.ok else None,
            "df": iv.df if iv.ok else None, "ci": how}


def _fit_row(method: str, gist: bool, axis: str, points: list[tuple[float, dict]], level: float) -> dict:
    """One fits-table row: the law ``fit_scaling_law`` picks for ``points`` = [(N, dataset -> seed -> acc)]."""
    datasets = [d for d in points[0][1] if all(d in by_ds for _, by_ds in points)]
    seeds = min((len(by_ds[d]) for _, by_ds in points for d in datasets), default=0)
    row: dict[str, Any] = {"method": method, "gist": "on" if gist else "off", "axis": axis, "sizes": len(points),
                           "seeds": seeds, "law": None, "why": "", "a": None, "b": None, "b_lo": None,
                           "b_hi": None, "c": None, "c_lo": None, "c_hi": None, "df": None, "intervals": "",
                           "rmse": None}
    if not datasets:
        row["why"] = "no dataset common to every size"
        return row
    res = fit_scaling_law([n for n, _ in points], [1.0 - summarize(by_ds, datasets).mean for _, by_ds in points],
                          level=level)
    row.update({"why": res.reason, "intervals": res.intervals})
    if res.fit is None:
        return row
    f = res.fit
    row.update({"law": res.formula, "a": f.a, "b": f.b, "b_lo": res.ci["b"][0], "b_hi": res.ci["b"][1], "c": f.c,
                "c_lo": res.ci["c"][0], "c_hi": res.ci["c"][1], "df": f.df, "rmse": f.rmse,
                "c_fixed": "c" not in f.free})
    for k in ("b_lo", "b_hi", "c_lo", "c_hi"):
        row[k] = None if not math.isfinite(row[k]) else row[k]
    return row


def _base_method(record: dict) -> str:
    """The method label without the ``@n<n_train>`` suffix ``cell_records`` adds when n_train varies."""
    n = record.get("n_train")
    suffix = f"@n{n}"
    m = str(record["method"])
    return m[: -len(suffix)] if n is not None and m.endswith(suffix) else m


def _train_size_fits(records: list[dict], level: float) -> list[dict]:
    """Fits of error against training-set size (``n_train``) per (method, GIST, backbone), >= 3 values."""
    by_key: dict[tuple[str, bool, str], dict[int, list[dict]]] = {}
    for r in records:
        if r.get("n_train") is not None:
            key = (_base_method(r), bool(r["gist"]), str(r["backbone"]))
            by_key.setdefault(key, {}).setdefault(int(r["n_train"]), []).append(r)
    rows = []
    for (method, gist, backbone), by_n in by_key.items():
        if len(by_n) < 3:
            continue
        points = []
        for n in sorted(by_n):
            g = grid([{**r, "method": method} for r in by_n[n]], "acc")
            points.append((float(n), g[(method, gist, backbone)]))
        rows.append(_fit_row(method, gist, f"train examples ({backbone})", points, level))
    return rows


def _gain_row(method: str, backbone: str, size: float, on: dict, off: dict, level: float) -> dict:
    pg = paired_gain(on, off, level)
    seed_gains = ", ".join(f"{100 * v:+.2f}" for v in pg.per_seed.values())
    return {"method": method, "backbone": backbone, "backbone_params_m": size / 1e6, "datasets": pg.datasets,
            "seeds": pg.seeds, "acc_off": pg.acc_without, "acc_on": pg.acc_with, "gain": pg.gain,
            **_interval_fields(pg.interval, "gain"), "seed_gains": seed_gains}


def _test_row(label: str, cells: list, level: float) -> dict:
    t = paired_test(cells, level=level)
    return {"method": label, "cells": t.cells, "pairs": t.pairs, "mean_gain": t.mean_gain,
            **_interval_fields(t.interval, "gain"), "t_p": t.t_p if math.isfinite(t.t_p) else None,
            "wilcoxon_p": t.wilcoxon_p if math.isfinite(t.wilcoxon_p) else None,
            "wilcoxon_note": t.wilcoxon_reason}


def _cells(g: Grid, keys: Sequence[tuple[str, str]]) -> list:
    """Per (method, backbone) in ``keys``, per dataset: the array of paired seed differences (one cell each)."""
    out = []
    for method, b in keys:
        for by_seed in paired_differences(g[(method, True, b)], g[(method, False, b)]).values():
            out.append(list(by_seed.values()))
    return out


def analyze(records: list[dict], level: float = LEVEL) -> dict[str, list[dict]]:
    """Scaling-law fits, GIST gains per size and paired tests from cell records (``acc`` = the study metric)."""
    g = grid(records, "acc")
    sizes = backbone_sizes(records)
    methods = ordered(k[0] for k in g)
    fits, gains, tests, all_keys = [], [], [], []
    for method in methods:
        for gist in (False, True):
            bbs = sorted((b for (m, gg, b) in g if m == method and gg == gist and b in sizes), key=sizes.get)
            if bbs:
                fits.append(_fit_row(method, gist, "backbone params", [(sizes[b], g[(method, gist, b)]) for b in bbs],
                                     level))
        bbs = sorted((b for b in sizes if (method, True, b) in g and (method, False, b) in g), key=sizes.get)
        keys = [(method, b) for b in bbs if paired_differences(g[(method, True, b)], g[(method, False, b)])]
        for _, b in keys:
            gains.append(_gain_row(method, b, sizes[b], g[(method, True, b)], g[(method, False, b)], level))
        if keys:
            tests.append(_test_row(method, _cells(g, keys), level))
            all_keys += keys
    if len(tests) > 1:
        tests.append(_test_row("all methods", _cells(g, all_keys), level))
    fits += _train_size_fits(records, level)
    return {"fits": fits, "gains": gains, "tests": tests}


@dataclass
class NumTable(Table):
    """Markdown/LaTeX with per-column formats and interval cells; CSV keeps full precision in its own columns.

    ``intervals``: display column -> (lo key, hi key, number format, key of the text shown when there is none);
    ``notes``: column -> key of the text shown instead of a missing value (e.g. why there is no p-value).
    """

    fmt: dict[str, str] = field(default_factory=dict)
    intervals: dict[str, tuple[str, str, str, str]] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    csv_columns: list[tuple[str, str]] = field(default_factory=list)

    def text(self, key: str, value: Any) -> str:
        f = self.fmt.get(key)
        if f and isinstance(value, (int, float)) and not isinstance(value, bool):
            return "–" if isinstance(value, float) and math.isnan(value) else format(value, f)
        return super().text(key, value)

    def to_markdown(self) -> str:
        return Table.to_markdown(self._displayed())

    def to_latex(self) -> str:
        return Table.to_latex(self._displayed()).replace("^", r"\textasciicircum{}")  # the laws' N^-b

    def to_csv(self) -> str:
        return Table.to_csv(replace(self, columns=self.csv_columns or self.columns))

    def _displayed(self) -> "NumTable":
        """Rows with each interval column filled in as ``[lo, hi]`` or the reason there is none."""
        rows = []
        for r in self.rows:
            r = dict(r)
            for col, (lo, hi, f, why) in self.intervals.items():
                ok = r.get(lo) is not None and r.get(hi) is not None
                r[col] = f"[{format(r[lo], f)}, {format(r[hi], f)}]" if ok else (r.get(why) or "–")
            for col, note in self.notes.items():
                if r.get(col) is None:
                    r[col] = r.get(note) or "–"
            rows.append(r)
        return replace(self, rows=rows)


def _points(rows: list[dict], keys: Sequence[str]) -> list[dict]:
    """Rows with the fractions under ``keys`` in accuracy points (x 100)."""
    return [{**r, **{k: 100 * r[k] for k in keys if r.get(k) is not None}} for r in rows]


def analysis_tables(analysis: dict[str, list[dict]], level: float = LEVEL) -> dict[str, NumTable]:
    pct = f"{level:.0%}"
    gains = NumTable(
        f"GIST gain per backbone size (accuracy points, with - without; mean over datasets of the mean over seeds "
        f"paired within a dataset; {pct} interval: Student/Welch t over seeds nested in datasets)", [
            ("method", "Method"), ("backbone", "Backbone"), ("backbone_params_m", "Backbone params (M)"),
            ("datasets", "Datasets"), ("seeds", "Seeds"), ("acc_off", "Acc. without"), ("acc_on", "Acc. with GIST"),
            ("gain", "Gain"), ("gain_ci", f"{pct} CI"), ("seed_gains", "Per-seed gains")],
        fmt={"backbone_params_m": ".3f", "acc_off": ".2f", "acc_on": ".2f", "gain": "+.2f"},
        intervals={"gain_ci": ("gain_lo", "gain_hi", "+.2f", "ci")},
        csv_columns=[(k, k) for k in ("method", "backbone", "backbone_params_m", "datasets", "seeds", "acc_off",
                                      "acc_on", "gain", "gain_lo", "gain_hi", "df", "ci", "seed_gains")])
    gains.rows = _points(analysis["gains"], ("acc_off", "acc_on", "gain", "gain_lo", "gain_hi"))
    fits = NumTable(
        "Scaling-law fits of err = 1 - accuracy against N (per-size means; the law depends on how many sizes "
        f"there are; {pct} intervals: Wald t with the residual df)", [
            ("method", "Method"), ("gist", "GIST"), ("axis", "N"), ("sizes", "Sizes"), ("seeds", "Seeds"),
            ("law", "Law fitted"), ("why", "Why this law"), ("a", "a"), ("b", "b"), ("b_ci", f"b {pct} CI"),
            ("c", "c"), ("c_ci", f"c {pct} CI"), ("df", "Residual df"), ("intervals", "Intervals"),
            ("rmse", "RMSE")],
        fmt={"a": ".3g", "b": ".3f", "c": ".3f", "rmse": ".4f"},
        intervals={"b_ci": ("b_lo", "b_hi", ".3f", ""), "c_ci": ("c_lo", "c_hi", ".3f", "c_note")},
        csv_columns=[(k, k) for k in ("method", "gist", "axis", "sizes", "seeds", "law", "why", "a", "b", "b_lo",
                                      "b_hi", "c", "c_lo", "c_hi", "df", "intervals", "rmse")])
    fits.rows = [{**r, "c_note": "fixed" if r.get("c_fixed") else ""} for r in analysis["fits"]]
    tests = NumTable(
        "Paired tests of GIST on vs off (accuracy points). A pair: the runs with and without GIST that share "
        "method, backbone, dataset and seed; a cell: one (backbone, dataset). t-test: unit = the seed pair, "
        "stratified by cell (Welch df); Wilcoxon: unit = the cell's mean gain", [
            ("method", "Method"), ("cells", "Cells"), ("pairs", "Pairs"), ("mean_gain", "Mean gain over cells"),
            ("gain_ci", f"{pct} CI"), ("df", "df"), ("t_p", "t-test p (unit: seed pair)"),
            ("wilcoxon_p", "Wilcoxon p (unit: cell)")],
        fmt={"mean_gain": "+.2f", "df": ".1f", "t_p": ".3g", "wilcoxon_p": ".3g"},
        intervals={"gain_ci": ("gain_lo", "gain_hi", "+.2f", "ci")}, notes={"t_p": "ci", "wilcoxon_p": "wilcoxon_note"},
        csv_columns=[(k, k) for k in ("method", "cells", "pairs", "mean_gain", "gain_lo", "gain_hi", "df", "ci",
                                      "t_p", "wilcoxon_p", "wilcoxon_note")])
    tests.rows = _points(analysis["tests"], ("mean_gain", "gain_lo", "gain_hi"))
    return {"gist_gain": gains, "fits": fits, "paired_tests": tests}


def write_study_outputs(records: list[dict], out_dir: str | Path,
                        formats: Sequence[str] = ("md", "csv", "tex")) -> tuple[dict, list[Path], str]:
    """Tables (md/csv/tex), ``records.csv``, plots (PNG+SVG) and ``summary.md``; returns (analysis, paths, md)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    analysis = analyze(records)
    tables = {"scaling": scaling_table(records, metric="acc"), **analysis_tables(analysis)}
    paths: list[Path] = []
    md = []
    for name, table in tables.items():
        for fmt in formats:
            p = out / f"{name}.{fmt}"
            text = table.render(fmt)
            p.write_text(f"## {table.title}\n\n{text}" if fmt == "md" else text, encoding="utf-8")
            paths.append(p)
        md.append(f"## {table.title}\n\n{table.to_markdown()}")
    keys = ["cell", "run_id", "backbone", "backbone_params", "method", "gist", "dataset", "seed", "n_train", "acc",
            "metric", "test_acc", "val_acc", "trainable_params"]
    with open(out / "records.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, keys, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        w.writerows(records)
    paths.append(out / "records.csv")
    if records:
        paths += plots.plot_accuracy_vs_params(records, out, metric="acc")
        if any(r["gist"] for r in records) and not all(r["gist"] for r in records):
            paths += plots.plot_gist_gain(records, out, metric="acc")
        if any(r.get("trainable_params") for r in records):
            paths += plots.plot_pareto(records, out, metric="acc")
    figures = [p for p in paths if p.suffix in (".png", ".svg")]
    summary = "\n".join(md) + "\nPlots:\n" + "".join(f"- {p}\n" for p in figures)
    (out / "summary.md").write_text(summary, encoding="utf-8")
    paths.append(out / "summary.md")
    return analysis, paths, summary


def log_study_metrics(c, run_id: str, analysis: dict, done: int, total: int) -> None:
    """The study's headline numbers as metrics of its MLflow run (cells done, fitted exponents, gains)."""
    m = {"study/cells_done": float(done), "study/cells_total": float(total)}
    for f in analysis.get("fits", []):
        if f.get("b") is not None and f.get("axis") == "backbone params":
            m[f"fit/{metric_key(f['method'])}/gist_{f['gist']}/b"] = float(f["b"])
    for r in analysis.get("gains", []):
        m[f"gain/{metric_key(r['method'])}/{r['backbone']}"] = float(r["gain"])
    tracking.log_metrics(c, run_id, {k: v for k, v in m.items() if math.isfinite(v)}, step=0)


def metric_key(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_./ -]", "_", text)
