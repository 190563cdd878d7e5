"""``gist-ray methods``: every method's trainable parameters split into method / token / head."""

from __future__ import annotations

import pytest

from gist_ray.cli import main
from gist_ray.methods import METHODS
from gist_ray.methods_table import methods_table


def rows_by_name(backbone: str, classes: int) -> dict[str, dict]:
    return {r["method"]: r for r in methods_table(backbone, classes)}


def test_cli_prints_every_method_with_counts(capsys) -> None:
    assert main(["methods", "--backbone", "vit_test_tiny", "--num-classes", "5"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines()[2:]}
    assert set(lines) == set(METHODS.names())
    assert "!" not in out  # no closed-form count disagrees with the built model
    assert lines["linear"].split()[1:5] == ["0", "32", "165", "197"]  # method, token (embed_dim), head, total


def test_swin_rows_mark_methods_not_defined_there() -> None:
    rows = rows_by_name("swin_test_tiny", 5)
    for name in ("vpt_shallow", "vpt_deep", "fact_tt", "fact_tk", "gift"):
        assert rows[name]["method_params"] is None and "not on swin" in rows[name]["paper"]
    for name in ("gist_adapter", "lora", "vera", "ssf"):
        assert rows[name]["method_params"] == rows[name]["closed_form"] > 0
        assert rows[name]["token"] == 32  # the last stage's width


@pytest.mark.slow
def test_vit_b16_token_is_768_for_every_method() -> None:
    rows = rows_by_name("vit_base_patch16_224", 100)  # meta device: shapes only
    assert {r["token"] for r in rows.values()} == {768}
    assert all(r["method_params"] == r["closed_form"] for r in rows.values() if r["closed_form"] is not None)
    assert rows["gist_adapter"]["method_params"] == 12 * (2 * 768 * 4 + 4 + 768)
    assert rows["full"]["head"] == 768 * 100 + 100


def test_objectives_table_counts_each_objectives_own_parameters(capsys) -> None:
    assert main(["methods", "--objectives", "--backbone", "vit_test_tiny", "--num-classes", "5"]) == 0
    rows = {ln.split()[0]: ln.split() for ln in capsys.readouterr().out.splitlines()[2:]}
    assert set(rows) == {"ce", "gist", "byot", "cs_kd", "uskd"}
    assert rows["ce"][4] == rows["cs_kd"][4] == rows["gist"][4] == "0"  # no modules of their own
    assert int(rows["byot"][4]) > 0 and int(rows["uskd"][4]) > 0 and rows["gist"][2] == "32"  # the Gist token
