"""Scaling-law fits (law chosen from the number of sizes, Wald intervals only where df allow) and plots on
constructed data; the seed intervals, gains and paired tests are in test_intervals.py."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gist_ray.scaling.fit import POWER, SATURATING, choose_law, fit_power_law, fit_scaling_law, power_law

TRUE = (30.0, 0.3, 0.12)  # err = 30 N^-0.3 + 0.12: ~0.30 at 5M params, ~0.17 at 1B
SIZES = np.geomspace(5e6, 1e9, 6)


def _noisy(noise_seed: int, n_seeds: int = 8, sd: float = 0.005) -> np.ndarray:
    rng = np.random.default_rng(noise_seed)
    return power_law(SIZES, *TRUE)[:, None] + rng.normal(0.0, sd, (SIZES.size, n_seeds))


def test_fit_exact_data_recovers_parameters() -> None:
    f = fit_power_law(SIZES, power_law(SIZES, *TRUE))
    assert f.converged
    np.testing.assert_allclose([f.a, f.b, f.c], TRUE, rtol=1e-3)
    assert f.rmse < 1e-8 and f.n_points == SIZES.size


@pytest.mark.parametrize("noise_seed", [0, 1, 2])
def test_fit_noisy_seed_means_within_tolerance(noise_seed: int) -> None:
    f = fit_power_law(SIZES, _noisy(noise_seed).mean(axis=1))
    assert abs(f.b - TRUE[1]) < 0.05
    assert abs(f.c - TRUE[2]) < 0.02
    assert TRUE[0] / 2 < f.a < TRUE[0] * 2  # a trades off against b; the curve itself is tight:
    grid = np.geomspace(SIZES[0], SIZES[-1], 50)
    assert np.max(np.abs(f.predict(grid) - power_law(grid, *TRUE))) < 0.005


def test_fit_respects_bounds_and_validates() -> None:
    f = fit_power_law(SIZES, 2.0 * SIZES**-0.2)  # true floor 0: c must not go negative
    assert f.a > 0 and f.b > 0 and 0.0 <= f.c <= 1.0
    assert f.c < 0.01
    g = fit_power_law(SIZES, np.linspace(0.1, 0.3, SIZES.size))  # error growing with N: still within bounds
    assert g.a > 0 and g.b > 0 and 0.0 <= g.c <= 1.0
    with pytest.raises(ValueError):
        fit_power_law([1e6, 1e7], [0.3, 0.2])
    with pytest.raises(ValueError):
        fit_power_law([0.0, 1e7, 1e8], [0.3, 0.2, 0.1])


def test_three_sizes_are_exactly_determined_for_the_saturating_law() -> None:
    """ViT-S/B/L: the saturating law would pass through every mean; the pure power law is fitted instead and,
    with 1 residual df, no interval is given."""
    law, reason = choose_law(3)
    assert law is POWER and "exactly determined" in reason and "c fixed at 0" in reason
    three = SIZES[[0, 2, 5]]
    res = fit_scaling_law(three, _noisy(0)[[0, 2, 5]])
    assert res.law is POWER and res.formula == "a*N^-b (c = 0)" and res.sizes == 3 and res.seeds == 8
    assert res.fit.c == 0.0 and res.df == 1 and res.fit.free == ("a", "b")
    assert res.intervals == "none: 1 residual df (need 2)" and all(math.isnan(v) for v in res.ci["b"] + res.ci["c"])
    with pytest.raises(ValueError, match="law saturating: 3 sizes, needs >= 4"):
        fit_scaling_law(three, _noisy(0)[[0, 2, 5]], law="saturating")
    floor = fit_scaling_law(three, power_law(three, *TRUE), floor=TRUE[2])  # a stated floor: exact recovery
    assert floor.formula == "a*N^-b (c = 0.12)" and floor.fit.b == pytest.approx(TRUE[1], rel=1e-4)
    assert choose_law(4)[0] is SATURATING and choose_law(2)[0] is None
    two = fit_scaling_law(SIZES[:2], [0.3, 0.2])
    assert two.fit is None and two.law is None and "needs >= 3" in two.reason


def test_enough_sizes_fit_the_saturating_law_with_wald_intervals() -> None:
    res = fit_scaling_law(SIZES, _noisy(1))
    assert res.law is SATURATING and res.df == 3 and res.intervals == "Wald t, 3 residual df"
    for name, truth in (("b", TRUE[1]), ("c", TRUE[2])):
        lo, hi = res.ci[name]
        assert lo < getattr(res.fit, name) < hi and lo <= truth <= hi
    four = fit_scaling_law(SIZES[:4], _noisy(1)[:4])
    assert four.law is SATURATING and four.df == 1 and four.intervals.startswith("none: 1 residual df")
    power = fit_scaling_law(SIZES[:4], _noisy(1)[:4], law="power")
    assert power.df == 2 and power.ci["b"][0] < power.fit.b < power.ci["b"][1] and math.isnan(power.ci["c"][0])


def test_wald_interval_of_the_exponent_covers_it() -> None:
    """200 noisy 6-size studies (seed means with sd 0.005): coverage of b's 95 % interval measured 0.95 with
    400 draws; 200 draws have binomial sd 0.015, so >= 0.88 is 4.5 sd below 95 %."""
    rng = np.random.default_rng(11)
    hits = 0
    for _ in range(200):
        res = fit_scaling_law(SIZES, power_law(SIZES, *TRUE) + rng.normal(0.0, 0.005, SIZES.size))
        hits += res.ci["b"][0] <= TRUE[1] <= res.ci["b"][1]
    assert hits / 200 >= 0.88


def test_no_interval_at_a_bound() -> None:
    res = fit_scaling_law(SIZES, 2.0 * SIZES**-0.2)  # true floor 0: c sits on its bound
    assert res.law is SATURATING and "c" in res.fit.at_bound
    assert res.intervals.startswith("none: c at its bound") and math.isnan(res.ci["b"][0])
    with pytest.raises(ValueError, match="distinct"):
        fit_scaling_law([1e6, 1e6, 1e7], [0.3, 0.3, 0.2])


def _records() -> list[dict]:
    rng = np.random.default_rng(0)
    sizes = {"vit_s": 22e6, "vit_b": 86e6, "vit_l": 304e6}
    out = []
    for bb, n in sizes.items():
        for method, width in (("adapter", 1.0), ("lora", 2.0)):
            for gist in (False, True):
                for dataset in ("shapes", "count"):
                    for seed in range(3):
                        acc = 1 - power_law(n, *TRUE) + (0.02 if gist else 0.0) + rng.normal(0, 0.003)
                        out.append({"backbone": bb, "backbone_params": n, "method": method, "gist": gist,
                                    "dataset": dataset, "seed": seed, "test_acc": acc,
                                    "trainable_params": width * 1e5 * (n / 86e6) ** 0.5 + (768 if gist else 0)})
    return out


def _check_files(paths: list, stem: str) -> None:
    assert sorted(p.suffix for p in paths) == [".png", ".svg"]
    for p in paths:
        assert p.stem == stem and p.stat().st_size > 1000
    png = next(p for p in paths if p.suffix == ".png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<svg" in next(p for p in paths if p.suffix == ".svg").read_text()


def test_plots_write_png_and_svg(tmp_path) -> None:
    from gist_ray.scaling.plots import plot_accuracy_vs_params, plot_gist_gain, plot_pareto

    recs = _records()
    _check_files(plot_accuracy_vs_params(recs, tmp_path), "accuracy_vs_backbone")
    _check_files(plot_gist_gain(recs, tmp_path), "gist_gain")
    _check_files(plot_pareto(recs, tmp_path / "sub"), "pareto_trainable")


def _by_gid(fig, gid: str) -> list:
    return [c for c in fig.axes[0].collections if c.get_gid() == gid]


@pytest.mark.parametrize("datasets, seeds, bars", [(1, 2, 0), (1, 3, 1), (2, 2, 0), (2, 3, 1)])
def test_plots_show_every_seed_and_intervals_only_where_they_exist(datasets: int, seeds: int, bars: int) -> None:
    """Dots: one per seed (its mean over datasets) per line and size; bars only from 3 seeds per dataset."""
    from gist_ray.scaling.plots import accuracy_vs_params_figure, gist_gain_figure

    recs = [r for r in _records() if r["seed"] < seeds and (datasets == 2 or r["dataset"] == "shapes")]
    acc = accuracy_vs_params_figure(recs)
    dots = _by_gid(acc, "seeds")
    assert len(dots) == 2 * 2 * 3 and all(len(d.get_offsets()) == seeds for d in dots)  # methods x GIST x sizes
    assert len(_by_gid(acc, "interval")) == bars * 2 * 2
    lora_s = [r for r in recs if (r["method"], r["gist"], r["backbone"]) == ("lora", False, "vit_s")]
    per_seed = [100 * np.mean([r["test_acc"] for r in lora_s if r["seed"] == s]) for s in range(seeds)]
    assert any(np.allclose(np.sort(d.get_offsets()[:, 1]), np.sort(per_seed)) for d in dots)
    gain = gist_gain_figure(recs)
    assert len(_by_gid(gain, "seeds")) == 2 * 3 and len(_by_gid(gain, "interval")) == bars * 2
    offsets = np.concatenate([d.get_offsets()[:, 1] for d in _by_gid(gain, "seeds")])
    assert offsets.size == 2 * 3 * seeds and np.allclose(offsets, 2.0, atol=1.5)  # true gain +2 points


def test_pareto_front() -> None:
    from gist_ray.scaling.plots import pareto_front

    pts = [(1.0, 0.70), (2.0, 0.69), (2.0, 0.75), (3.0, 0.74), (4.0, 0.80), (0.5, 0.60)]
    assert pareto_front(pts) == [5, 0, 2, 4]
