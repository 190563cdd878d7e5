"""Config errors name the field or path, before any work starts; every shipped config loads."""

from pathlib import Path

import pytest

from gist_ray.config import Config, ConfigError, build_config, load_config, to_dict

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "override, field",
    [
        ("train.lr=0", "train.lr"),
        ("train.lr=-1e-3", "train.lr"),
        ("gist.lam=-0.1", "gist.lam"),
        ("gist.lambda=-0.1", "gist.lam"),
        ("gist.T=0", "gist.temperature"),
        ("gist.temperature=-2", "gist.temperature"),
        ("gist.mu=-1", "gist.mu"),
        ("gist.length=0", "gist.length"),
        ("gist.dropout=1.0", "gist.dropout"),
        ("gist.interaction=l2", "gist.interaction"),
        ("train.epochs=0", "train.epochs"),
        ("train.batch_size=1.5", "train.batch_size"),
        ("train.epochs=ten", "train.epochs"),
        ("gist.enabled=maybe", "gist.enabled"),
        ("train.precision=fp8", "train.precision"),
        ("train.lrr=0.1", "train.lrr"),
        ("method.name=nosuch", "method.name"),
        ("method.bottleneck=0", "method.bottleneck"),
        ("method.rank=4", "method.rank"),
        ("model.backbone=resnet_nope", "model.backbone"),
        ("model.weights=/nonexistent/w.safetensors", "model.weights"),
        ("data.name=imagenet_nope", "data.name"),
        ("data.root=/nonexistent/dir", "data.root"),
        ("resources.num_workers=0", "resources.num_workers"),
        ("tracking.uri=ftp://x", "tracking.uri"),
    ],
)
def test_bad_values_name_the_field(override, field):
    with pytest.raises(ConfigError) as exc:
        build_config({}, [override])
    assert field in str(exc.value), str(exc.value)


def test_yaml_aliases_and_types(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("gist: {lambda: 0.25, T: 2}\ntrain: {lr: 1e-3}\nmethod: {name: vpt_deep, length: 5}\n")
    cfg = load_config(p, ["train.epochs=3"])
    assert cfg.gist.lam == 0.25 and cfg.gist.temperature == 2.0
    assert cfg.train.lr == pytest.approx(1e-3) and cfg.train.epochs == 3
    assert cfg.method.name == "vpt_deep" and cfg.method.options == {"length": 5}
    assert cfg.method.typed().length == 5


def test_round_trip_through_dict():
    cfg = build_config({}, ["gist.lam=0.5", "method.name=vpt_shallow", "method.length=7"])
    again = build_config(to_dict(cfg))
    assert again == cfg


def test_missing_and_malformed_files_name_the_path(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_config(bad)
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("train: {lr: 0}\n")
    with pytest.raises(ConfigError, match=r"wrong.yaml: train.lr"):
        load_config(wrong)


def test_override_syntax_errors():
    for bad in ["train.lr", "=3", "train..lr=3"]:
        with pytest.raises(ConfigError):
            build_config({}, [bad])


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_run_config_loads(path):
    assert isinstance(load_config(path), Config)
    assert path.read_text().lstrip().startswith("#"), f"{path.name} must start with the command that runs it"


def test_overrides_may_follow_options_on_the_command_line(tmp_path, monkeypatch, capsys):
    from gist_ray.cli import main

    monkeypatch.chdir(tmp_path)
    # the override after --name is read as an override (and refused here for its bad value, before any work)
    assert main(["sweep", str(ROOT / "search_spaces" / "quickstart.yaml"), "--name", "x", "train.lr=-1"]) == 2
    assert "train.lr" in capsys.readouterr().err and not (tmp_path / "runs").exists()
    with pytest.raises(SystemExit):
        main(["sweep", str(ROOT / "search_spaces" / "quickstart.yaml"), "--nmae", "x"])
