"""A study's analysis: tidy records of its finished cells, power-law fits, GIST gains per size, paired tests,
and the tables and plots written to its output folder. Pure over records (no Ray, no torch)."""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from gist_ray import tracking
from gist_ray.backbones import backbone_params
from gist_ray.report import Table, scaling_table
from gist_ray.scaling import plots
from gist_ray.scaling.fit import bootstrap_fit, gist_gain, paired_test
from gist_ray.scaling.records import backbone_sizes, grid, ordered, paired_seeds, seed_means
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
            "backbone_params": float(backbone_params(cell.backbone)), "method": method, "gist": cell.gist,
            "dataset": cell.dataset.task, "seed": cell.seed, "n_train": cell.n_train, "acc": float(m[study.metric]),
            "metric": study.metric, "test_acc": m.get("test/acc"), "val_acc": m.get("val/acc"),
            "trainable_params": m.get("params/total"),
        })
    return out



def analyze(records: list[dict], n_boot: int = 1000, level: float = 0.95) -> dict[str, list[dict]]:
    """Power-law fits, GIST gains per size and paired tests from cell records (``acc`` = the study metric)."""
    g = grid(records, "acc")
    sizes = backbone_sizes(records)
    methods = ordered(k[0] for k in g)
    fits, gains, tests = [], [], []
    for method in methods:
        for gist in (False, True):
            bbs = sorted((b for (m, gg, b) in g if m == method and gg == gist), key=lambda b: sizes[b])
            if not bbs:
                continue
            datasets = [d for d in g[(method, gist, bbs[0])] if all(d in g[(method, gist, b)] for b in bbs)]
            rows = []
            for b in bbs:
                seeds = set.intersection(*(set(g[(method, gist, b)][d]) for d in datasets)) if datasets else set()
                rows.append(1.0 - seed_means(g[(method, gist, b)], datasets, sorted(seeds, key=str)))
            row = {"method": method, "gist": "on" if gist else "off", "sizes": len(bbs),
                   "seeds": int(min(len(r) for r in rows))}
            if len(bbs) >= 3 and all(len(r) for r in rows):
                bf = bootstrap_fit([sizes[b] for b in bbs], rows, n_boot=n_boot, level=level)
                row.update({"a": bf.fit.a, "b": bf.fit.b, "b_lo": bf.ci["b"][0], "b_hi": bf.ci["b"][1],
                            "c": bf.fit.c, "c_lo": bf.ci["c"][0], "c_hi": bf.ci["c"][1], "rmse": bf.fit.rmse,
                            "converged": bf.fit.converged, "failed_boots": bf.n_failed})
            fits.append(row)
        pairs_w, pairs_wo = [], []
        bbs = sorted((b for b in sizes if (method, True, b) in g and (method, False, b) in g), key=lambda b: sizes[b])
        with_rows, without_rows, kept = [], [], []
        for b in bbs:
            on, off = g[(method, True, b)], g[(method, False, b)]
            datasets, seeds = paired_seeds(on, off)
            if not seeds:
                continue
            with_rows.append(seed_means(on, datasets, seeds))
            without_rows.append(seed_means(off, datasets, seeds))
            kept.append(b)
            for d in datasets:
                for s in seeds:
                    pairs_w.append(on[d][s])
                    pairs_wo.append(off[d][s])
        if kept:
            res = gist_gain(with_rows, without_rows, n_boot=n_boot, level=level, paired=True)
            for i, b in enumerate(kept):
                gains.append({"method": method, "backbone": b, "backbone_params_m": sizes[b] / 1e6,
                              "acc_off": float(np.mean(without_rows[i])), "acc_on": float(np.mean(with_rows[i])),
                              "gain": float(res.gain[i]), "gain_lo": float(res.lo[i]), "gain_hi": float(res.hi[i]),
                              "seeds": int(res.n[i])})
            t = paired_test(pairs_w, pairs_wo)
            tests.append({"method": method, "pairs": t.n, "mean_diff": t.mean_diff, "std_diff": t.std_diff,
                          "wilcoxon_p": t.wilcoxon_p, "ttest_p": t.ttest_p})
    if len(tests) > 1:
        w, wo = [], []
        for (m, gist, b), by_ds in g.items():
            if gist and (m, False, b) in g:
                off = g[(m, False, b)]
                for d, seeds in by_ds.items():
                    for s, v in seeds.items():
                        if s in off.get(d, {}):
                            w.append(v)
                            wo.append(off[d][s])
        t = paired_test(w, wo)
        tests.append({"method": "all methods", "pairs": t.n, "mean_diff": t.mean_diff, "std_diff": t.std_diff,
                      "wilcoxon_p": t.wilcoxon_p, "ttest_p": t.ttest_p})
    return {"fits": fits, "gains": gains, "tests": tests}



class NumTable(Table):
    """Markdown/LaTeX with per-column formats; CSV keeps full precision."""

    fmt: dict = {}

    def text(self, key: str, value: Any) -> str:
        f = self.fmt.get(key)
        if f and isinstance(value, (int, float)) and not isinstance(value, bool):
            return "–" if isinstance(value, float) and math.isnan(value) else format(value, f)
        return super().text(key, value)


def analysis_tables(analysis: dict[str, list[dict]], level: float = 0.95) -> dict[str, Any]:
    pct = f"{level:.0%}"
    gains = NumTable("GIST gain per backbone size (accuracy points, with - without, paired over seeds)", [
        ("method", "Method"), ("backbone", "Backbone"), ("backbone_params_m", "Backbone params (M)"),
        ("acc_off", "Acc. without"), ("acc_on", "Acc. with GIST"), ("gain", "Gain"), ("gain_lo", f"{pct} CI low"),
        ("gain_hi", f"{pct} CI high"), ("seeds", "Seeds")])
    gains.fmt = {"backbone_params_m": ".3f", "acc_off": ".2f", "acc_on": ".2f", "gain": "+.2f", "gain_lo": "+.2f",
                 "gain_hi": "+.2f"}
    gains.rows = [{**r, **{k: 100 * r[k] for k in ("acc_off", "acc_on", "gain", "gain_lo", "gain_hi")}}
                  for r in analysis["gains"]]
    fits = NumTable("Power-law fits err = a * N^-b + c (N = backbone parameters)", [
        ("method", "Method"), ("gist", "GIST"), ("sizes", "Sizes"), ("seeds", "Seeds"), ("a", "a"), ("b", "b"),
        ("b_lo", f"b {pct} CI low"), ("b_hi", f"b {pct} CI high"), ("c", "c"), ("c_lo", f"c {pct} low"),
        ("c_hi", f"c {pct} high"), ("rmse", "RMSE")])
    fits.fmt = {"a": ".3g", "b": ".3f", "b_lo": ".3f", "b_hi": ".3f", "c": ".3f", "c_lo": ".3f", "c_hi": ".3f",
                "rmse": ".4f"}
    fits.rows = analysis["fits"]
    tests = NumTable("Paired test of GIST on vs off over (size, dataset, seed) pairs (accuracy points)", [
        ("method", "Method"), ("pairs", "Pairs"), ("mean_diff", "Mean diff"), ("std_diff", "Std diff"),
        ("wilcoxon_p", "Wilcoxon p"), ("ttest_p", "t-test p")])
    tests.fmt = {"mean_diff": "+.2f", "std_diff": ".2f", "wilcoxon_p": ".3g", "ttest_p": ".3g"}
    tests.rows = [{**r, "mean_diff": 100 * r["mean_diff"], "std_diff": 100 * r["std_diff"]} for r in analysis["tests"]]
    return {"gist_gain": gains, "fits": fits, "paired_tests": tests}



def write_study_outputs(records: list[dict], out_dir: str | Path, n_boot: int = 1000,
                        formats: Sequence[str] = ("md", "csv", "tex")) -> tuple[dict, list[Path], str]:
    """Tables (md/csv/tex), ``records.csv``, plots (PNG+SVG) and ``summary.md``; returns (analysis, paths, md)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    analysis = analyze(records, n_boot=n_boot)
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
            paths += plots.plot_gist_gain(records, out, metric="acc", n_boot=n_boot)
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
        if "b" in f:
            m[f"fit/{metric_key(f['method'])}/gist_{f['gist']}/b"] = float(f["b"])
    for r in analysis.get("gains", []):
        m[f"gain/{metric_key(r['method'])}/{r['backbone']}"] = float(r["gain"])
    tracking.log_metrics(c, run_id, {k: v for k, v in m.items() if math.isfinite(v)}, step=0)


def metric_key(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_./ -]", "_", text)
