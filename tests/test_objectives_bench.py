"""bench/objectives.py runs end to end with its smallest settings (tiny backbone, CPU), so it cannot rot; the
figures it prints are not checked, only that they are derived as documented."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "objectives.py"

pytestmark = pytest.mark.slow


def test_objectives_bench_prints_cost_ratios_and_the_toy_spread(capsys):
    spec = importlib.util.spec_from_file_location("bench_objectives", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = module.main(["--device", "cpu", "--backbone", "vit_test_tiny", "--objectives", "ce,byot,cs_kd",
                       "--batch", "4", "--steps", "1", "--repeats", "1", "--warmup", "0", "--toy",
                       "--toy-backbone", "vit_test_tiny", "--seeds", "0,1", "--toy-epochs", "1", "--toy-n-train", "32"])
    cost = {r["objective"]: r for r in out["cost"]}
    assert cost["ce"]["ratio"] == 1.0 and all(r["ms_step"] > 0 for r in cost.values())
    assert math.isclose(cost["byot"]["ratio"], cost["byot"]["ms_step"] / cost["ce"]["ms_step"])
    assert cost["byot"]["objective_params"] > 0 == cost["cs_kd"]["objective_params"]
    toy = {r["objective"]: r for r in out["toy"]}
    assert set(toy) == {"ce", "byot", "cs_kd"} and all(len(r["accs"]) == 2 for r in toy.values())
    assert all(0.0 <= r["mean"] <= 1.0 and r["std"] >= 0 for r in toy.values())
    printed = capsys.readouterr().out
    assert cost["ce"]["cpu_ratio"] == 1.0 and all(r["cpu_ms_step"] > 0 for r in cost.values())
    assert "relative to ce" in printed and "CPU ratio" in printed and "test acc mean" in printed
