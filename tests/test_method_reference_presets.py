"""The per-dataset presets of the methods whose references tune a knob per dataset (FacT rank and scale,
Bi-Adapter scale, RepAdapter scale, VPT-deep prompt length): shipped as ``search_spaces/vtab_<method>.yaml``, whose
``per_task`` block makes each sweep's first trial the reference's setting for the dataset while the space searches
the knob around it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gist_ray.data.vtab import VTAB_DATASETS
from gist_ray.errors import ConfigError
from gist_ray.sweep.space import load_sweep

ROOT = Path(__file__).resolve().parents[1]
PRESET_FILES = sorted((ROOT / "search_spaces").glob("vtab_*.yaml"))

# spot values copied from the reference files (repository, file): the presets hold the reference's numbers
REFERENCE_VALUES = {
    "vtab_fact_tt.yaml": {"dtd": {"method.rank": 8, "method.scale": 0.01},  # PETL-ViT FacT/configs/tt/dtd.yaml
                          "clevr_dist": {"method.rank": 4, "method.scale": 10.0}},
    "vtab_fact_tk.yaml": {"svhn": {"method.rank": 32, "method.scale": 100.0},  # FacT/configs/tk/svhn.yaml
                          "cifar": {"method.rank": 32, "method.scale": 0.1}},
    "vtab_bi_adapter.yaml": {"oxford_iiit_pet": {"method.scale": 0.01},  # binary_adapter/configs/adaptformer/
                             "resisc45": {"method.scale": 10.0}},  # <task>-bit1-dim32.yaml
    "vtab_readapter.yaml": {"smallnorb_azi": {"method.scale": 10.0},  # RepAdapter configs/repblock/<task>.yaml
                            "clevr_count": {"method.scale": 0.5}},
    "vtab_vpt.yaml": {"dmlab": {"method.length": 100}, "sun397": {"method.length": 5},  # KMnP/vpt demo.ipynb
                      "eurosat": {"method.length": 100}},
}


def test_every_preset_file_is_checked() -> None:
    assert {p.name for p in PRESET_FILES} == set(REFERENCE_VALUES)


@pytest.mark.parametrize("path", PRESET_FILES, ids=lambda p: p.name)
def test_preset_covers_every_vtab_dataset_and_is_the_first_trial(path: Path) -> None:
    per_task = yaml.safe_load(path.read_text())["per_task"]
    assert set(per_task) == set(VTAB_DATASETS)
    for task, preset in per_task.items():
        spec = load_sweep(path, [f"data.task={task}"])
        first = spec.search.initial_points[0]
        assert {k: first[k] for k in preset} == preset, task
        assert set(preset) <= set(spec.space), f"{task}: a preset knob the space does not search"
        assert spec.protocol == "vtab"
        assert first["gist.enabled"] is True and first["gist.lam"] == 0.75  # GIST's official constants
    for task, values in REFERENCE_VALUES[path.name].items():
        assert per_task[task] == values, task


def test_command_line_wins_over_the_preset() -> None:
    path = ROOT / "search_spaces/vtab_fact_tt.yaml"
    first = load_sweep(path, ["data.task=dtd", "method.scale=100.0"]).search.initial_points[0]
    assert first["method.rank"] == 8 and first["method.scale"] == 100.0


def test_preset_of_a_searched_key_does_not_touch_the_base(tmp_path: Path) -> None:
    doc = {"base": {"model": {"backbone": "vit_test_tiny", "weights": "none"}, "data": {"task": "a"},
                    "method": {"name": "lora", "rank": 4}},
           "space": {"method.rank": {"choice": [2, 4, 8]}, "train.lr": {"loguniform": [1e-4, 1e-2]}},
           "per_task": {"a": {"method.rank": 8, "train.weight_decay": 0.5}}}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError, match="train.lr has no value for the first trial"):
        load_sweep(tmp_path / "s.yaml")
    doc["base"]["train"] = {"lr": 1e-3}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(doc))
    spec = load_sweep(tmp_path / "s.yaml")
    assert spec.search.initial_points == [{"method.rank": 8, "train.lr": 1e-3}]
    assert spec.base.method.options["rank"] == 4 and spec.base.train.weight_decay == 0.5
