"""Sweep files: every shipped one validates; malformed ones fail before Ray starts, naming file and key."""

from pathlib import Path

import pytest
import yaml

from gist_ray.config import ConfigError
from gist_ray.sweep.space import load_sweep

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted(p for p in (ROOT / "search_spaces").iterdir() if p.suffix in (".yaml", ".py") and p.name != "__init__.py")
# study files (a `grid:`), validated by the scaling tests and run by test_shipped_commands.py
SCALING = {p.name for p in SHIPPED if p.suffix == ".yaml" and "grid" in (yaml.safe_load(p.read_text()) or {})}


@pytest.mark.parametrize("path", [p for p in SHIPPED if p.name not in SCALING], ids=lambda p: p.name)
def test_every_shipped_sweep_file_loads_and_names_its_command(path):
    spec = load_sweep(path)
    declared = (yaml.safe_load(path.read_text()) if path.suffix == ".yaml" else _python_sweep(path)).get("name")
    assert spec.name == (declared or path.stem) and spec.source == str(path)
    assert spec.space or spec.define_by_run is not None, "a sweep file must search something"
    head = path.read_text().lstrip()
    assert head.startswith(("#", '"""')) and "gist-ray sweep search_spaces/" + path.name in head.splitlines()[0]


def _python_sweep(path: Path) -> dict:
    namespace: dict = {}
    exec(compile(path.read_text(), str(path), "exec"), namespace)
    return namespace["SWEEP"]


def write(tmp_path, doc: dict) -> Path:
    p = tmp_path / "space.yaml"
    p.write_text(yaml.safe_dump(doc))
    return p


BASE = {"base": {"model": {"backbone": "vit_test_tiny", "weights": "none"}}}


@pytest.mark.parametrize(
    "space, key, message",
    [
        ({"train.lr": {"normal": [0, 1]}}, "space.train.lr", "unknown distribution"),
        ({"train.lr": {"loguniform": [1e-2, 1e-4]}}, "space.train.lr", "low"),
        ({"train.lr": {"loguniform": [0, 1e-2]}}, "space.train.lr", "> 0"),
        ({"method.name": {"choice": ["gist_adapter", "nosuch"]}}, "space.method.name", "nosuch"),
        ({"method.name": {"choice": ["vpt_deep"]}, "method.bottleneck": {"choice": [4, 8]}}, "space.method.bottleneck",
         "no method in this sweep"),
        ({"gist.lam": {"uniform": [-1.0, 0.5]}}, "space.gist.lam", "gist.lam"),
        ({"train.nosuch": {"choice": [1]}}, "space.train.nosuch", "unknown field"),
        ({"train.epochs": {"int": [1.5, 3]}}, "space.train.epochs", "integers"),
    ],
)
def test_malformed_space_names_file_and_key(tmp_path, space, key, message):
    p = write(tmp_path, {**BASE, "space": space})
    with pytest.raises(ConfigError) as exc:
        load_sweep(p)
    text = str(exc.value)
    assert str(p) in text and key in text and message in text, text


def test_unknown_top_level_key_and_bad_search_settings(tmp_path):
    with pytest.raises(ConfigError, match="spaces"):
        load_sweep(write(tmp_path, {**BASE, "spaces": {}}))
    with pytest.raises(ConfigError, match="search.sampler"):
        load_sweep(write(tmp_path, {**BASE, "search": {"sampler": "cmaes"}}))
    with pytest.raises(ConfigError, match="grid"):
        load_sweep(write(tmp_path, {**BASE, "search": {"sampler": "grid"}, "space": {"train.lr": {"uniform": [0.1, 0.2]}}}))
    with pytest.raises(ConfigError, match="initial_points"):
        load_sweep(write(tmp_path, {**BASE, "search": {"initial_points": [{"train.nope": 1}]},
                                    "space": {"train.lr": {"uniform": [0.1, 0.2]}}}))


def test_flat_space_drops_knobs_of_other_methods(tmp_path):
    spec = load_sweep(write(tmp_path, {**BASE, "space": {"method.name": {"choice": ["vpt_deep", "gist_adapter"]},
                                                         "method.bottleneck": {"choice": [8]}}}))
    cfg = spec.config_for({"method.name": "vpt_deep", "method.bottleneck": 8, "method.length": 3})
    assert (cfg.method.name, cfg.method.options) == ("vpt_deep", {"length": 3})
    assert spec.config_for({"method.name": "gist_adapter", "method.bottleneck": 8}).method.options == {"bottleneck": 8}


def test_per_task_recipe_and_command_line_precedence():
    spec = load_sweep(ROOT / "search_spaces/paper_vtab.yaml", ["data.task=clevr_dist"])
    assert spec.base.train.lr == 5e-2 and spec.base.model.drop_path == 0.1
    spec = load_sweep(ROOT / "search_spaces/paper_vtab.yaml", ["data.task=clevr_dist", "train.lr=1e-4"])
    assert spec.base.train.lr == 1e-4


def test_vtab_protocol_keeps_test_out_of_trials():
    spec = load_sweep(ROOT / "search_spaces/paper_vtab.yaml")
    assert spec.protocol == "vtab"
    assert spec.base.data.test_split is None and spec.base.data.eval_split == "val"


def test_define_by_run_file_is_probed(tmp_path):
    bad = tmp_path / "bad_space.py"
    bad.write_text("SWEEP = {'base': {'model': {'backbone': 'vit_test_tiny'}}}\n"
                   "def space(trial):\n    trial.suggest_float('train.lr', -1.0, 0.0)\n")
    with pytest.raises(ConfigError, match="train.lr"):
        load_sweep(bad)
    broken = tmp_path / "broken.py"
    broken.write_text("SWEEP = {}\n")
    with pytest.raises(ConfigError, match="space\\(trial\\)"):
        load_sweep(broken)


def test_search_settings_can_be_overridden_on_the_command_line(tmp_path):
    spec = load_sweep(ROOT / "search_spaces" / "quickstart.yaml",
                      ["search.max_concurrent_trials=4", "search.num_samples=3", "train.epochs=2"])
    assert (spec.search.max_concurrent_trials, spec.search.num_samples) == (4, 3)
    assert spec.base.train.epochs == 2
    with pytest.raises(ConfigError, match="search.num_sampels: unknown field"):
        load_sweep(ROOT / "search_spaces" / "quickstart.yaml", ["search.num_sampels=3"])


def test_a_yaml_syntax_error_names_the_file_and_line(tmp_path):
    p = tmp_path / "broken.yaml"
    p.write_text("name: x\nsearch:\n  num_samples: [1, 2\nspace: {}\n")
    with pytest.raises(ConfigError, match=r"broken.yaml:\d+:\d+: not valid YAML") as info:
        load_sweep(p)
    assert "<unicode string>" not in str(info.value)


def test_objective_knobs_in_a_space_are_checked_against_the_sweeps_objectives(tmp_path):
    ok = load_sweep(write(tmp_path, {**BASE, "space": {"objective.name": {"choice": ["ce", "byot"]},
                                                       "objective.temperature": {"choice": [2.0, 4.0]}}}))
    assert ok.config_for({"objective.name": "ce", "objective.temperature": 2.0}).objective.name == "ce"
    with pytest.raises(ConfigError, match=r"space.objective.temprature: no objective in this sweep \(ce, byot\)"):
        load_sweep(write(tmp_path, {**BASE, "space": {"objective.name": {"choice": ["ce", "byot"]},
                                                      "objective.temprature": {"choice": [2.0]}}}))
    with pytest.raises(ConfigError, match="space.objective.temperature: value -1.0 is invalid"):
        load_sweep(write(tmp_path, {**BASE, "space": {"objective.name": {"choice": ["byot"]},
                                                      "objective.temperature": {"choice": [-1.0]}}}))


def test_tuning_trials_do_not_test_unless_asked(tmp_path):
    plain = load_sweep(write(tmp_path, {**BASE, "space": {"train.lr": {"choice": [1e-3, 3e-3]}}}))
    assert plain.base.data.test_split is None and plain.final_test_split == "test"
    asked = load_sweep(write(tmp_path, {**BASE, "space": {"train.lr": {"choice": [1e-3]}},
                                        "search": {"test_trials": True}}))
    assert asked.base.data.test_split == "test"
