"""Every shell command the project ships runs: README.md's ```bash lines and inline `gist-ray SUB ARG` spans, and the
command in the header of every shipped config and search space (parsed by :mod:`shipped_commands`, so a new
command is covered without editing this test).

How each kind runs here (2 CPU cores, no GPU, no network, no cluster):

- ``gist-ray ...`` runs in this process (``gist_ray.cli.main``, one Ray instance for all) with the placeholders of
  :data:`SUBSTITUTES` replaced and the overrides of :func:`tiny_overrides` appended: tiny random-weight backbones
  of the same family (``vit_test_tiny``, ``swin_test_tiny``; no hub download), CPU, two trials at a time, and just
  enough epochs to keep each file's evaluation schedule (``eval_every`` e: e + 1 epochs, so an epoch without
  evaluation, one with, and the last). Each file's protocol, sampler, scheduler, per-task recipe, repeats and
  precision are kept.
- ``make quickstart`` runs the real Makefile target with ``VENV`` pointing at a stand-in venv (install stamp
  present) whose ``gist-ray`` appends the tiny overrides: a separate process, whose console is checked for noise.
- other ``make`` targets (install, test) are dry-run (``make -n``) with a venv not yet made: they must create it,
  pip-install gist-ray and (test) run pytest on tests/; not run: installing is the CI's job, and test is this suite.
- ``gist-ray mlflow-server ...`` starts (a separate process, as the user's terminal holds it) on a free loopback
  port against the store the quickstart wrote; its REST API must list the sweep's runs, and it must run as two
  processes (server and one worker for SQLite; no MLflow job runners).
- ``ray job submit ... -- CMD``: CMD runs as above, with ``tracking.uri`` a real MLflow server on loopback (the
  session's, ``mlflow_server`` in conftest.py), which must then list the sweep's runs.
- ``ray up`` / ``ray down cluster.yaml`` and the ``ssh -L`` tunnel need AWS: cluster.yaml must load and bind the
  tunnelled ports (8265, 5000) to 127.0.0.1 (test_cluster_yaml.py validates it against Ray's schema).

README commands run in order in one folder, as a user following the README would; the other header commands
each in a fresh folder.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from data_fixtures import make_vtab_tree
from text_fixtures import write_glue_tsv
from mlflow_server import free_port, healthy
from shipped_commands import ROOT, Command, header_commands, option, readme_commands, shipped_files
from console_checks import assert_quiet

VENV_BIN = Path(sys.executable).parent
# placeholder in a shipped command -> what stands in for it here ({vtab}, {work}, {server} are filled per run)
SUBSTITUTES = {
    "/data/vtab-1k": "{vtab}",  # the VTAB-1k root -> a tiny VTAB-1k tree this test writes (dtd, eurosat)
    "ROOT": "{vtab}",  # `gist-ray data check ROOT`
    "/data/glue": "{glue}",  # a GLUE root -> a tiny GLUE tree (TSV layout, every task) this test writes
    "s3://BUCKET/gist-ray": "{work}/bucket",  # shared cluster storage -> a local folder
    "http://127.0.0.1:5000": "{server}",  # the head's tracking server -> a real mlflow server on a free port
    "resources.num_workers=4": "resources.num_workers=2",  # 2 CPU cores here
}
VTAB_TREE = {"dtd": 47, "eurosat": 10}  # dataset -> classes (every class once in train800: data check wants all)
SYNTHETIC = ["data.n_train=64", "data.n_val=32", "data.n_test=32"]
SYNTHETIC_SOURCES = ("synthetic", "synthetic_text")  # datasets generated in code: SYNTHETIC shrinks them


def readme() -> list[Command]:
    return readme_commands()


def header_only() -> list[Command]:
    """Header commands the README does not already run."""
    seen = {c.argv for c in readme()}
    return [c for f in shipped_files() for c in header_commands(f) if c.argv not in seen and not restated(c)]


def restated(c: Command) -> bool:
    """The README sweeps the same file, and what this header command adds to the README's arguments only restates
    the file's own values (``broad.yaml``'s ``data.task=dtd``): running it again would run the same sweep."""
    from gist_ray.sweep.space import load_sweep

    if c.argv[:2] != ("gist-ray", "sweep"):
        return False
    for r in readme():
        if r.argv[:3] == c.argv[:3]:
            extra = [a for a in c.argv[3:] if a not in r.argv]
            overrides_only = all("=" in a and not a.startswith("-") for a in extra)
            if overrides_only and load_sweep(ROOT / c.argv[2], extra) == load_sweep(ROOT / c.argv[2], []):
                return True
    return False


# ----------------------------------------------------------------------------- parsing (fast)


def test_every_shipped_file_states_a_command_and_every_command_has_a_runner() -> None:
    for f in shipped_files():
        cmds = header_commands(f)
        assert cmds, f"{f.relative_to(ROOT)}: no `gist-ray ...` command in its header"
        assert any(f.relative_to(ROOT).as_posix() in c.argv for c in cmds), f"{f}: its command does not run it"
    kinds = {runner_of(c) for c in readme() + header_only()}
    assert None not in kinds, [str(c) for c in readme() + header_only() if runner_of(c) is None]
    assert {c.argv[1] for c in readme() if c.argv[0] == "gist-ray"} >= {"train", "sweep", "scale", "report"}


def runner_of(c: Command) -> str | None:
    """Which runner below takes the command (None: no runner, the test above fails)."""
    head = Path(c.argv[0]).name
    if head == "gist-ray" and c.argv[1] == "mlflow-server":
        return "server"
    if head == "gist-ray":
        return "gist-ray"
    if head == "make" and len(c.argv) == 2 and f"\n{c.argv[1]}:" in (ROOT / "Makefile").read_text():
        return "make"
    if head == "ray" and c.argv[1] in ("up", "down") or head == "ssh":
        return "cluster"
    if head == "ray" and c.argv[1:3] == ("job", "submit") and "--" in c.argv:
        return "job"
    return None


# ----------------------------------------------------------------------------- what stands in for what


def substituted(argv: tuple[str, ...], ctx: dict[str, str]) -> list[str]:
    out = []
    for a in argv:
        if a in SUBSTITUTES and not SUBSTITUTES[a].startswith("{"):
            a = SUBSTITUTES[a]
        for old, new in SUBSTITUTES.items():
            if new.startswith("{") and (a == old or (len(old) > 4 and old in a)):
                a = a.replace(old, new.format(**ctx))
        out.append(a)
    return out


def _epochs(t) -> list[str]:
    """Just enough epochs for the file's evaluation schedule; warmup and cooldown shrunk to fit them."""
    e = int(t.eval_every)
    out = [f"train.epochs={e + 1 if e > 1 else 2}", "train.batch_size=16"]
    if t.warmup_epochs > 1:
        out.append("train.warmup_epochs=1")
    if t.cooldown_epochs > 0:
        out.append("train.cooldown_epochs=1")
    return out


def _tiny_backbone(backbone: str) -> str:
    """A tiny random backbone of ``backbone``'s family (text encoders: the tiny BERT or T5)."""
    from gist_ray.backbones import backbone_family
    from gist_ray.text.config_check import modality_of

    if modality_of(backbone) == "text":
        return "t5_test_tiny" if "t5" in backbone.lower() else "bert_test_tiny"
    return "swin_test_tiny" if backbone_family(backbone) == "swin" else "vit_test_tiny"


def _model(cfg) -> list[str]:
    tiny = _tiny_backbone(cfg.model.backbone)
    return [f"model.backbone={tiny}", "model.weights=none", "resources.use_gpu=false"]


def tiny_overrides(args: list[str]) -> list[str]:
    """Overrides appended to ``gist-ray SUB FILE ...`` (``args`` without ``gist-ray``) to run it in seconds."""
    from gist_ray.config import load_config
    from gist_ray.study.load import load_study
    from gist_ray.sweep.space import load_sweep

    sub = args[0]
    given = [a for a in args[2:] if "=" in a and not a.startswith("-")]
    if sub == "train":
        cfg = load_config(args[1], given)
        return _model(cfg) + _epochs(cfg.train) + (SYNTHETIC if cfg.data.name in SYNTHETIC_SOURCES else [])
    if sub == "sweep":
        spec = load_sweep(args[1], given)
        cfg = spec.base
        out = _model(cfg) + _epochs(cfg.train) + (SYNTHETIC if cfg.data.name in SYNTHETIC_SOURCES else [])
        out += ["search.num_samples=2", "search.max_concurrent_trials=2"]
        if spec.search.repeat_best:
            out += ["search.repeat_best=1", "search.repeat_seeds=[1]"]
        return out
    if sub == "scale":
        study = load_study(args[1], given)
        first = study.methods[0]
        method = first.name if not first.knobs else yaml.safe_dump({"name": first.name, **dict(first.knobs)},
                                                                   default_flow_style=True).strip()
        out = _epochs(study.base.train) + ["model.weights=none", "resources.use_gpu=false", "grid.seeds=[0]",
                                           f"grid.backbones=[{_tiny_backbone(study.backbones[0])}]",
                                           f"grid.methods=[{method}]"]
        if option(tuple(args), "grid.datasets") is None and len(study.datasets) > 1:
            here = [d.task for d in study.datasets if d.task in VTAB_TREE] or [study.datasets[0].task]
            out.append(f"grid.datasets=[{here[0]}]")
        return out + (SYNTHETIC if study.base.data.name in SYNTHETIC_SOURCES else [])
    return []


# ----------------------------------------------------------------------------- runners


@pytest.fixture(scope="module")
def vtab_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("vtab-1k")
    for name, classes in VTAB_TREE.items():
        make_vtab_tree(root, name, n_classes=classes, sizes={"train800": classes, "val200": 8, "test": 8})
    return root


@pytest.fixture(scope="module")
def glue_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("glue")
    write_glue_tsv(root)
    return root


def clone(work: Path) -> Path:
    """A folder that looks like a checkout to the commands (their relative paths) without writing into it."""
    work.mkdir(parents=True, exist_ok=True)
    for name in ("configs", "search_spaces", "cluster.yaml", "Makefile", "pyproject.toml"):
        (work / name).symlink_to(ROOT / name)
    return work


# a sweep file the README already ran once runs again (e.g. on the cluster, with a tracking server): one trial, no
# repeats, as what the second command adds is where it writes, not what it searches
AGAIN = ("search.num_samples=1", "search.repeat_best=0")


def run_gist_ray(argv: list[str], capsys, extra: tuple[str, ...] = ()) -> str:
    from gist_ray.cli import main

    args = [*argv[1:], *tiny_overrides(argv[1:]), *extra]
    capsys.readouterr()
    rc = main(args)
    out = capsys.readouterr()
    text = out.out + out.err
    assert rc == 0, f"gist-ray {shlex.join(args)} exited {rc}:\n{text[-4000:]}"
    return text


def expect_output(argv: list[str], text: str) -> None:
    """What each command must have printed on success."""
    sub = argv[1]
    if sub == "train":
        assert "result: epoch=" in text and ("test/acc=" in text or "test/score=" in text), text[-2000:]
    elif sub == "sweep":
        assert "best trial" in text, text[-2000:]
        best = re.search(r"best trial \S+: .*config=(\{.*\})", text)
        if best and "'gist.enabled': False" in best.group(1):  # only what applied: no lambda, T, mu when off
            assert not re.search(r"'gist\.(lam|mu|temperature)'", best.group(1)), best.group(0)
        spec_file = argv[2]
        if "protocol: vtab" in Path(spec_file).read_text() or "\"protocol\": \"vtab\"" in Path(spec_file).read_text():
            assert "refit of the best configuration" in text, text[-2000:]
    elif sub == "report":
        assert "wrote" in text, text


def run_make(c: Command, work: Path) -> str:
    shim = work / "shim-venv"
    (shim / "bin").mkdir(parents=True, exist_ok=True)
    if not (shim / "bin" / "python").exists():
        (shim / "bin" / "python").symlink_to(sys.executable)
    tiny = " ".join(shlex.quote(a) for a in ["model.backbone=vit_test_tiny", "model.weights=none", *SYNTHETIC,
                                             "train.epochs=2", "search.num_samples=2"])
    script = shim / "bin" / "gist-ray"
    script.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m gist_ray.cli "$@" {tiny}\n')
    script.chmod(0o755)
    stamp = subprocess.run("cksum pyproject.toml | cut -d' ' -f1", shell=True, cwd=work, capture_output=True,
                           text=True, check=True).stdout.strip()
    (shim / f".installed-{stamp}").touch()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    for var in ("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "RAY_DEDUP_LOGS"):
        env.pop(var, None)  # the user's environment, not the test session's
    if c.argv[1] != "quickstart":  # install, test: what they would run, with a venv not yet made
        fresh = work / "fresh-venv"
        dry = subprocess.run(["make", "-n", c.argv[1], f"VENV={fresh}"], cwd=work, capture_output=True, text=True)
        assert dry.returncode == 0 and f"{fresh}/bin/python -m pip install" in dry.stdout, dry
        if c.argv[1] == "test":
            assert f"{fresh}/bin/python -m pytest -q tests" in dry.stdout, dry.stdout
        return dry.stdout
    p = subprocess.run(["make", *c.argv[1:], f"VENV={shim}"], cwd=work, capture_output=True, text=True, env=env,
                       timeout=600)
    assert p.returncode == 0, f"{c}: exit {p.returncode}\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    assert "best trial" in p.stdout, p.stdout
    assert_quiet(p.stdout, p.stderr)
    return p.stdout


def rest(url: str, path: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"{url}{path}", data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def run_server_command(c: Command, work: Path) -> list[str]:
    """Start ``gist-ray mlflow-server ...`` as the README says (on a free loopback port) in its own session; check
    it runs as two processes; return the run names its REST API lists."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    env.pop("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", None)  # the user's environment: gist-ray's default applies
    argv = [sys.executable, "-m", "gist_ray.cli", *c.argv[1:], "--port", str(port)]
    log = open(work / "mlflow-server.log", "wb")
    proc = subprocess.Popen(argv, cwd=work, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while not healthy(url):
            assert proc.poll() is None and time.monotonic() < deadline, (work / "mlflow-server.log").read_text()[-3000:]
            time.sleep(0.5)
        session = subprocess.run(["ps", "-o", "pid=,args=", "-s", str(proc.pid)], capture_output=True, text=True).stdout
        python = [ln for ln in session.splitlines() if "python" in ln]
        # gist-ray's command, mlflow server, one uvicorn worker: no huey job consumers
        assert len(python) == 3 and "huey" not in session, session
        exp = rest(url, "/api/2.0/mlflow/experiments/get-by-name?experiment_name=gist-ray")["experiment"]
        runs = rest(url, "/api/2.0/mlflow/runs/search", {"experiment_ids": [exp["experiment_id"]],
                                                         "max_results": 1000}).get("runs", [])
        # the sweep's artifacts, in the local store's folder, come through the server as the UI fetches them
        parent = next(r["info"]["run_id"] for r in runs if {"key": "gist_ray.kind", "value": "sweep"} in
                      r["data"].get("tags", []))
        listed = rest(url, f"/ajax-api/2.0/mlflow/artifacts/list?run_uuid={parent}")["files"]
        assert {"trials.md", "best_config.json"} <= {f["path"] for f in listed}, listed
        with urllib.request.urlopen(f"{url}/get-artifact?path=best_config.json&run_uuid={parent}", timeout=30) as r:
            assert "method" in json.loads(r.read())
        return [r["info"]["run_name"] for r in runs]
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(30)
        log.close()


def logs_to_head_server(argv) -> bool:
    """The command names the cluster head's tracking server (a :data:`SUBSTITUTES` placeholder)."""
    return any("http://127.0.0.1:5000" in a for a in argv)


def check_served_sweep(url: str, argv: list[str]) -> None:
    """The cluster command's sweep logged through the tracking server: its parent and trial runs, FINISHED."""
    from gist_ray.sweep.space import load_sweep

    spec = load_sweep(argv[2], [a for a in argv[3:] if "=" in a and not a.startswith("-")])
    exp = rest(url, f"/api/2.0/mlflow/experiments/get-by-name?experiment_name={spec.base.tracking.experiment}")
    runs = rest(url, "/api/2.0/mlflow/runs/search", {"experiment_ids": [exp["experiment"]["experiment_id"]],
                                                     "max_results": 1000}).get("runs", [])
    tags = [{t["key"]: t["value"] for t in r["data"].get("tags", [])} for r in runs]
    kinds = sorted(t.get("gist_ray.kind", "") for t in tags if t.get("gist_ray.sweep") == spec.name)
    assert kinds.count("sweep") == 1 and kinds.count("trial") >= 1, kinds
    assert {r["info"]["status"] for r in runs} == {"FINISHED"}, [r["info"]["status"] for r in runs]


def check_cluster_command(c: Command) -> None:
    cluster = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    assert cluster["cluster_name"] and cluster["available_node_types"]
    text = (ROOT / "cluster.yaml").read_text()
    if Path(c.argv[0]).name == "ssh":
        for spec in c.argv[1:]:
            if ":" in spec and spec.count(":") == 2:
                port = spec.split(":")[-1]
                assert f"127.0.0.1:{port}" in text or f"--port {port}" in text, f"{c}: port {port} not in cluster.yaml"
    else:
        assert (VENV_BIN / "ray").is_file(), "the ray CLI is not installed"


# ----------------------------------------------------------------------------- the tests


@pytest.mark.slow
def test_readme_commands_in_order(ray_local, tmp_path, monkeypatch, capsys, vtab_root, glue_root, request) -> None:
    """The README top to bottom in one folder (the quickstart sweep, then --resume, the UI on its store, ...)."""
    work = clone(tmp_path / "clone")
    monkeypatch.chdir(work)
    ctx = {"vtab": str(vtab_root), "glue": str(glue_root), "work": str(work), "server": ""}
    served = any(runner_of(c) == "job" and logs_to_head_server(c.argv) for c in readme())
    server = request.getfixturevalue("mlflow_server") if served else None  # starts while the commands before run
    took = []
    swept: set[str] = set()  # sweep files run so far
    try:
        for c in readme():
            t0 = time.monotonic()
            kind = runner_of(c)
            if kind == "make":
                run_make(c, work)
            elif kind == "server":
                names = run_server_command(c, work)
                assert any(n.startswith("quickstart") for n in names), names
            elif kind == "cluster":
                check_cluster_command(c)
            else:
                argv = list(c.argv[c.argv.index("--") + 1:]) if kind == "job" else list(c.argv)
                if logs_to_head_server(argv):  # the head's server: the session's
                    ctx["server"] = server.ready().url
                argv = substituted(tuple(argv), ctx)
                again = argv[1] == "sweep" and argv[2] in swept and "--resume" not in argv
                expect_output(argv, run_gist_ray(argv, capsys, AGAIN if again else ()))
                if argv[1] == "sweep":
                    swept.add(argv[2])
                if argv[1] == "sweep" and kind != "job":
                    check_text_trials(argv[2:], work)
                if kind == "job":
                    check_served_sweep(ctx["server"], argv)
            took.append(f"{time.monotonic() - t0:6.1f} s  {c}")
    finally:
        with capsys.disabled():
            print("\n" + "\n".join(took))


@pytest.mark.slow
@pytest.mark.parametrize("command", header_only(), ids=lambda c: c.source)
def test_header_command(command, ray_local, tmp_path, monkeypatch, capsys, vtab_root, glue_root) -> None:
    work = clone(tmp_path / "clone")
    monkeypatch.chdir(work)
    argv = substituted(command.argv, {"vtab": str(vtab_root), "glue": str(glue_root), "work": str(work), "server": ""})
    expect_output(argv, run_gist_ray(argv, capsys))
    if argv[1] == "sweep":
        check_text_trials(argv[2:], work)


def check_text_trials(args: list[str], work: Path) -> None:
    """A text sweep: every trial is an MLflow run of the sweep's experiment, tagged modality=text, with val/score."""
    import mlflow

    from gist_ray import tracking
    from gist_ray.sweep.space import load_sweep

    spec = load_sweep(args[0], [a for a in args[1:] if "=" in a])
    if spec.base.modality != "text":
        return
    client = mlflow.MlflowClient(spec.base.tracking.uri)
    exp = client.get_experiment_by_name(spec.base.tracking.experiment)
    trials = client.search_runs([exp.experiment_id], f"tags.`{tracking.KIND_TAG}` = 'trial'")
    assert len(trials) == 2, [t.data.tags for t in trials]  # search.num_samples=2 (tiny_overrides)
    for t in trials:
        assert t.data.tags["modality"] == "text" and "val/score" in t.data.metrics and "test/score" in t.data.metrics
    if spec.base.data.name == "glue":  # the file's follow-up: its trials as a Table-3-shaped table
        from gist_ray.report_table3 import report_table3

        (table,) = report_table3(spec.base.tracking.experiment, spec.base.tracking.uri, out_dir=work / "report",
                                 tuning=True)
        assert [r["gist"] for r in table.rows] == ["off", "on"] and table.rows[1]["delta"] is not None


