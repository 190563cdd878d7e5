"""The study's analysis tables on constructed records: no interval the design cannot support, the law and why,
fits along training-set size, and gains with seeds nested in datasets."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest

from gist_ray.scaling.fit import power_law
from gist_ray.study.analysis import analysis_tables, analyze

TRUE = (30.0, 0.3, 0.12)
SIZES = {"s": 22e6, "b": 86e6, "l": 304e6, "h": 632e6, "g": 1.8e9}


def _records(backbones=("s", "b", "l"), methods=("lora", "vpt"), datasets=("shapes",), seeds=2, gain=0.02,
             sd=0.004, n_train=(None,)) -> list[dict]:
    rng = np.random.default_rng(0)
    out = []
    for n in n_train:
        for bb in backbones:
            for method in methods:
                for gist in (False, True):
                    for d in datasets:
                        for seed in range(seeds):
                            size = SIZES[bb] * (1 if n is None else n / 1000)  # more data acts like a bigger model
                            acc = 1 - power_law(size, *TRUE) + (gain if gist else 0.0) + rng.normal(0, sd)
                            label = method if len(n_train) == 1 else f"{method}@n{n}"
                            out.append({"backbone": bb, "backbone_params": SIZES[bb], "method": label, "gist": gist,
                                        "dataset": d, "seed": seed, "n_train": n, "acc": acc,
                                        "trainable_params": 1e5})
    return out


def test_toy_design_shows_no_interval_and_says_which_law() -> None:
    """3 sizes x 2 methods x GIST x 1 dataset x 2 seeds, like search_spaces/scaling_toy.yaml."""
    analysis = analyze(_records())
    assert len(analysis["gains"]) == 6 and all(g["gain_lo"] is None for g in analysis["gains"])
    assert {g["ci"] for g in analysis["gains"]} == {"n too small: 2 seeds (need 3)"}
    assert all(len(g["seed_gains"].split(", ")) == 2 for g in analysis["gains"])
    assert len(analysis["fits"]) == 4
    for f in analysis["fits"]:
        assert f["law"] == "a*N^-b (c = 0)" and "exactly determined" in f["why"] and f["c"] == 0.0
        assert f["df"] == 1 and f["b_lo"] is None and f["intervals"] == "none: 1 residual df (need 2)"
    assert [t["method"] for t in analysis["tests"]] == ["lora", "vpt", "all methods"]
    for t in analysis["tests"]:
        assert t["gain_lo"] is None and t["t_p"] is None and t["ci"].startswith("n too small: 2 seeds")
    assert analysis["tests"][0]["wilcoxon_p"] is None and "3 cells" in analysis["tests"][0]["wilcoxon_note"]
    assert analysis["tests"][2]["cells"] == 6 and analysis["tests"][2]["wilcoxon_p"] is not None

    tables = analysis_tables(analysis)
    gains_md = tables["gist_gain"].to_markdown()
    assert gains_md.count("n too small: 2 seeds (need 3)") == 6 and "[" not in gains_md
    fits_md = tables["fits"].to_markdown()
    assert fits_md.count("a*N^-b (c = 0)") == 4 and "exactly determined" in fits_md and "fixed" in fits_md
    assert "\\textasciicircum{}" in tables["fits"].to_latex() and "^" not in tables["fits"].to_latex()
    tests_md = tables["paired_tests"].to_markdown()
    assert "unit = the seed pair" in tables["paired_tests"].title and "n too small" in tests_md
    rows = list(csv.DictReader(io.StringIO(tables["gist_gain"].to_csv())))
    assert rows[0]["gain_lo"] == "" and rows[0]["ci"] == "n too small: 2 seeds (need 3)"
    assert float(rows[0]["gain"]) == pytest.approx(100 * analysis["gains"][0]["gain"])


def test_enough_sizes_and_seeds_give_intervals() -> None:
    """5 sizes x 3 seeds x 2 datasets: the saturating law with Wald intervals, nested gain intervals."""
    analysis = analyze(_records(backbones=tuple(SIZES), methods=("lora",), datasets=("a", "b"), seeds=3))
    for f in analysis["fits"]:
        assert f["law"] == "a*N^-b + c" and f["df"] == 2 and f["intervals"] == "Wald t, 2 residual df"
        assert f["b_lo"] < f["b"] < f["b_hi"] and f["c_lo"] < f["c"] < f["c_hi"]
    for g in analysis["gains"]:
        assert g["datasets"] == 2 and g["seeds"] == 3 and g["ci"].startswith("welch-stratified t")
        assert 0 < g["gain_lo"] < g["gain"] < g["gain_hi"]  # a clear gain: every interval excludes 0
    assert sum(g["gain_lo"] <= 0.02 <= g["gain_hi"] for g in analysis["gains"]) >= 4  # 95 % intervals: most cover
    t = analysis["tests"][0]
    assert (t["cells"], t["pairs"]) == (10, 30) and t["t_p"] < 1e-6 and t["wilcoxon_p"] < 0.01
    md = analysis_tables(analysis)["fits"].to_markdown()
    assert "5 sizes >= 4 (3 parameters + 1)" in md and "[" in md


def test_fits_along_training_set_size() -> None:
    """n_train values give a fit per (method, GIST, backbone) along training examples; backbone fits stay per n."""
    recs = _records(backbones=("s", "b"), methods=("lora",), seeds=3, n_train=(250, 500, 1000, 2000, 4000))
    analysis = analyze(recs)
    along_n = [f for f in analysis["fits"] if f["axis"].startswith("train examples")]
    assert {(f["method"], f["gist"], f["axis"]) for f in along_n} == {
        ("lora", g, f"train examples ({b})") for g in ("on", "off") for b in ("s", "b")}
    for f in along_n:
        assert f["sizes"] == 5 and f["law"] == "a*N^-b + c" and f["b"] == pytest.approx(TRUE[1], abs=0.15)
    along_params = [f for f in analysis["fits"] if f["axis"] == "backbone params"]
    assert len(along_params) == 5 * 2 and all(f["law"] is None and "2 sizes" in f["why"] for f in along_params)
    assert "| lora | on | train examples (s) | 5 | 3 | a*N^-b + c |" in analysis_tables(analysis)["fits"].to_markdown()
