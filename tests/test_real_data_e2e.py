"""Real image files end to end: `gist-ray train` on a VTAB-1k tree, FGVC few-shot, and bad data stopping a sweep
before any trial starts. (A `protocol: vtab` sweep on image files runs in the README test, paper_vtab.yaml on a
VTAB-1k tree, and in tests/test_console.py; its MLflow records are checked in tests/test_sweep.py.)"""

from pathlib import Path

import pytest
import yaml

from data_fixtures import make_fgvc_tree, make_vtab_tree

pytestmark = pytest.mark.slow

TINY = ["model.backbone=vit_test_tiny", "model.weights=none", "train.epochs=2", "train.batch_size=4",
        "data.image_size=32", "resources.use_gpu=false"]


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GIST_RAY_CACHE", str(tmp_path / "cache"))
    return tmp_path


def test_train_on_a_vtab_tree(ray_local, workdir, capsys):
    from gist_ray.cli import main

    make_vtab_tree(workdir / "vtab", "dtd", n_classes=3)
    rc = main(["train", *TINY, "name=vtab-run", "data.name=vtab", f"data.root={workdir}/vtab", "data.task=dtd",
               "data.train_split=train800", "data.eval_split=val200", "data.test_split=test"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "test/acc=" in out
    assert list((workdir / "cache").rglob("*.npy"))  # decoded once, into the cache


def test_train_on_fgvc_few_shot(ray_local, workdir, capsys):
    from gist_ray.cli import main

    make_fgvc_tree(workdir / "fgvc", "oxford_pets", n_classes=2, shots=(2,), seeds=(1,))
    rc = main(["train", *TINY, "name=fgvc-run", "data.name=fgvc", f"data.root={workdir}/fgvc", "data.task=oxford_pets",
               "data.shots=2", "data.fewshot_seed=1"])
    assert rc == 0 and "test/acc=" in capsys.readouterr().out


def vtab_sweep_file(root: Path, tmp: Path) -> Path:
    doc = {
        "name": "vtab-proto",
        "protocol": "vtab",
        "base": {"model": {"backbone": "vit_test_tiny", "weights": "none"},
                 "data": {"name": "vtab", "root": str(root), "task": "dtd", "image_size": 32},
                 "train": {"epochs": 2, "batch_size": 4}, "resources": {"use_gpu": False},
                 "output_dir": str(tmp / "runs"), "tracking": {"uri": f"sqlite:///{tmp}/mlflow.db"}},
        "search": {"num_samples": 2, "max_concurrent_trials": 2, "sampler": "grid", "scheduler": "none"},
        "space": {"gist.lam": {"choice": [0.25, 0.75]}},
    }
    p = tmp / "vtab_sweep.yaml"
    p.write_text(yaml.safe_dump(doc))
    return p


@pytest.mark.parametrize("damage", ["corrupt_image", "missing_list", "label_out_of_range", "empty_split"])
def test_bad_data_fails_before_any_trial_naming_file_and_line(workdir, capsys, damage):
    from gist_ray.cli import main

    ddir = make_vtab_tree(workdir / "vtab", "dtd", n_classes=3)
    if damage == "corrupt_image":
        victim = sorted((ddir / "images" / "val200").glob("*.png"))[0]
        victim.write_bytes(b"not an image at all")
        expect = victim.name
    elif damage == "missing_list":
        (ddir / "val200.txt").unlink()
        expect = "val200.txt"
    elif damage == "label_out_of_range":
        lines = (ddir / "train800.txt").read_text().splitlines()
        lines[2] = lines[2].rsplit(" ", 1)[0] + " 47"
        (ddir / "train800.txt").write_text("\n".join(lines) + "\n")
        expect = "train800.txt:3"
    else:
        (ddir / "test.txt").write_text("")
        expect = "test.txt"
    rc = main(["sweep", str(vtab_sweep_file(workdir / "vtab", workdir))])
    err = capsys.readouterr().err
    assert rc == 2 and expect in err, err
    assert not (workdir / "runs" / "sweeps").exists()  # no trial, no sweep state (runs/logs/ holds the log)
    assert [p.name for p in (workdir / "runs").iterdir()] == ["logs"]
