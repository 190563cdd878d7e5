"""What the terminal shows: gist-ray's lines only on a successful run (libraries' logs in <output_dir>/logs/),
everything with --verbose, a failed trial's traceback in full, progress bars for long steps."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from console_checks import assert_quiet, noise_in
from data_fixtures import make_vtab_tree
from gist_ray import console

ROOT = Path(__file__).resolve().parents[1]
TINY = ["model.backbone=vit_test_tiny", "model.weights=none", "resources.use_gpu=false", "train.batch_size=8"]


def start_cli(args: list[str], cwd: Path, **extra_env: str) -> subprocess.Popen:
    """``gist-ray ARGS`` started in a fresh process, as a user runs it (the test session's Ray settings removed)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]), **extra_env}
    for var in ("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "RAY_DEDUP_LOGS"):
        env.pop(var, None)
    return subprocess.Popen([sys.executable, "-m", "gist_ray.cli", *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finished(proc: subprocess.Popen, timeout: int = 400) -> subprocess.CompletedProcess:
    """Wait for ``proc`` (killed if it outlives ``timeout``) and return what it printed."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def cli(args: list[str], cwd: Path, timeout: int = 400, **extra_env: str) -> subprocess.CompletedProcess:
    """``gist-ray ARGS`` in a fresh process, run to its end."""
    return finished(start_cli(args, cwd, **extra_env), timeout)


# ----------------------------------------------------------------------------- fast


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_redraws_in_place_on_a_terminal_and_ends_the_line() -> None:
    out = Terminal()
    with console.Progress(4, "decoding x", stream=out, min_interval=0.0) as bar:
        for _ in range(4):
            bar.update(note="loss 1.0")
    text = out.getvalue()
    assert text.count("\r") >= 4 and text.endswith("\n") and text.count("\n") == 1
    assert "decoding x [" in text and "4/4 (100%" in text and "loss 1.0" in text


def test_progress_off_a_terminal_is_silent_when_short_and_prints_lines_when_long() -> None:
    short = io.StringIO()
    with console.Progress(3, "quick", stream=short) as bar:
        for _ in range(3):
            bar.update()
    assert short.getvalue() == ""
    long = io.StringIO()
    with console.Progress(3, "slow", stream=long, long_after=0.0, every=0.0) as bar:
        for _ in range(3):
            bar.update()
    lines = long.getvalue().splitlines()
    assert "\r" not in long.getvalue() and len(lines) == 4 and lines[-1].endswith("done")


def test_start_sends_library_logs_to_the_file_and_stop_restores_the_loggers(tmp_path, capfd) -> None:
    import mlflow  # noqa: F401 - the library's own console handler exists

    mlflow_logger = logging.getLogger("mlflow")
    before = [(h, h.level) for h in mlflow_logger.handlers]
    path = console.start(str(tmp_path / "runs"), "demo")
    try:
        logging.getLogger("mlflow.store.db.utils").info("Updating database tables")
        logging.getLogger("ray.tune").warning("experiment state snapshotting took long")
        logging.getLogger("gist_ray.train.loop").warning("checkpoint unusable; falling back")
    finally:
        console.stop()
    err = capfd.readouterr().err
    assert path.parent == tmp_path / "runs" / "logs"
    text = path.read_text()
    assert "Updating database tables" in text and "snapshotting" in text and "falling back" in text
    assert "falling back" in err and not noise_in(err), err  # gist-ray's own warning stays on the terminal
    assert [(h, h.level) for h in mlflow_logger.handlers] == before


# ----------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_vtab_protocol_sweep_prints_one_line_per_trial_a_failed_trials_traceback_and_no_ray_internals(tmp_path) -> None:
    """paper_vtab.yaml (its eval_every 10, grid sampler, protocol vtab with its refit) on a tiny VTAB tree, its lambda
    grid replaced by two learning rates, one of which diverges: the good trial wins and is refit, the failed one's
    traceback is printed in full and its reason is in the table; nothing else but gist-ray's lines."""
    make_vtab_tree(tmp_path / "vtab", "dtd", n_classes=4, sizes={"train800": 8, "val200": 4, "test": 4})
    doc = yaml.safe_load((ROOT / "search_spaces/paper_vtab.yaml").read_text())
    doc.pop("per_task")  # its dtd learning rate would be a third, first trial
    doc["space"] = {"train.lr": {"choice": [3.0e-3, 1.0e30]}}
    (tmp_path / "fails.yaml").write_text(yaml.safe_dump(doc))
    p = cli(["sweep", "fails.yaml", f"data.root={tmp_path}/vtab", "data.task=dtd", *TINY, "train.epochs=11",
             "train.warmup_epochs=1", "train.cooldown_epochs=1", "search.num_samples=2",
             "search.max_concurrent_trials=2"], tmp_path)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-5000:]  # the good trial wins; the sweep goes on
    assert "Traceback (most recent call last)" in p.stderr, p.stderr[-3000:]
    assert "FloatingPointError: training loss became nan" in p.stderr
    assert 'gist_ray/train/loop.py", line' in p.stderr  # the trial's own frames, not only Ray's
    assert "ERROR" in p.stdout and "training loss became nan" in p.stdout  # and in the table, with the reason
    assert_quiet(p.stdout, p.stderr)
    trial_lines = [ln for ln in p.stdout.splitlines() if ln.startswith("[sweep")]
    assert len(trial_lines) == 2 and trial_lines[-1].split("]")[1].strip().startswith("2/2 finished (1 errored)"), \
        p.stdout
    assert "refit of the best configuration" in p.stdout
    logs = list((tmp_path / "runs" / "logs").glob("paper-vtab-*.log"))
    assert len(logs) == 1 and "Started a local Ray instance" in logs[0].read_text()  # Ray's own INFO log
    assert logs[0].with_suffix(".ray").is_symlink()  # Ray's process logs, linked beside it
    assert any(ln.startswith("log: ") and ln.split()[1].endswith(f"runs/logs/{logs[0].name}")
               for ln in p.stdout.splitlines()), p.stdout


@pytest.mark.slow
def test_verbose_shows_the_library_logs(tmp_path) -> None:
    args = ["train", str(ROOT / "configs/quickstart_run.yaml"), *TINY, "train.epochs=1", "data.n_train=32",
            "data.n_val=16", "data.n_test=16"]
    (tmp_path / "quiet").mkdir()
    (tmp_path / "loud").mkdir()
    # the MLflow store made by MLflow itself (no cached empty store): its migrations log at INFO, a library log
    # that every run of these two prints
    # the two runs side by side (own folders and stores; no Ray): each is mostly one core's imports
    runs = [start_cli(args, tmp_path / "quiet", GIST_RAY_CACHE="off"),
            start_cli([*args, "--verbose"], tmp_path / "loud", GIST_RAY_CACHE="off")]
    quiet, loud = (finished(p) for p in runs)
    assert quiet.returncode == 0 and loud.returncode == 0, quiet.stderr + loud.stderr
    assert_quiet(quiet.stdout, quiet.stderr)
    assert "epoch 1/1" in quiet.stdout and "result: epoch=1" in quiet.stdout
    assert "INFO mlflow" in loud.stderr and "Updating database tables" in loud.stderr, loud.stderr
    assert "Updating database tables" not in quiet.stdout + quiet.stderr
