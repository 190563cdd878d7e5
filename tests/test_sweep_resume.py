"""A driver SIGKILLed at any moment resumes with `--resume`: finished work is never redone or duplicated.

One small sweep (6 trials, 2 at a time, ASHA stopping some, the VTAB refit and a repeat of the best over two
seeds) is killed at one moment after another, each `--resume` being killed again at the next moment, then
resumed to the end. After every kill: no trial MLflow held as FINISHED was scheduled again or logged anything
more, every run holds each of its epochs once, and no more runs than planned. At the end: exactly the planned runs,
none RUNNING, Optuna holding one COMPLETE trial per finished trial, and the sweep's best trial MLflow's.
"""

from __future__ import annotations

import re

import pytest
import yaml
from kill_harness import changed_history, counts, drive, optuna_counts, rescheduled, snapshot, trial_dirs

from gist_ray.cli import main
from test_sweep import tiny_base

pytestmark = pytest.mark.slow

EPOCHS = 4
SWEEP = "chain"
# (moment, what it exercises); each driver after the first is a --resume of the one killed before it
CHAIN = [
    ("progress:1", "after the first progress line"),
    (f"final:{EPOCHS}", "right after a trial's final report (resumed driver, killed again)"),
    ("start", "as a resumed driver starts its first trial (third kill in a row)"),
    ("refit:2", "during the VTAB refit, after its epoch 2"),
    (f"final:{EPOCHS}", "during repeat_best, right after a repeat's final report"),
    ("", "the last resume, to the end"),
]


def chain_sweep(tmp_path) -> list[str]:
    base = tiny_base(tmp_path)
    base["train"].update({"epochs": EPOCHS, "checkpoint_every": 1})
    doc = {"name": SWEEP, "base": base, "protocol": "vtab",
           "search": {"num_samples": 6, "max_concurrent_trials": 2, "sampler": "tpe", "scheduler": "asha",
                      "grace_period": 1, "reduction_factor": 2, "repeat_best": 1, "repeat_seeds": [1, 2],
                      "initial_points": [{"gist.lam": 0.75, "train.lr": 3e-3}, {"gist.lam": 0.25, "train.lr": 3e-3}]},
           "space": {"gist.lam": {"uniform": [0.1, 1.0]}, "train.lr": {"loguniform": [1e-3, 1e-2]}}}
    path = tmp_path / "chain.yaml"
    path.write_text(yaml.safe_dump(doc))
    return ["sweep", str(path)]


def test_a_sweep_killed_at_moment_after_moment_redoes_and_duplicates_nothing(tmp_path):
    args = chain_sweep(tmp_path)
    db = tmp_path / "mlflow.db"
    seeds = f"{SWEEP}-seeds"
    snap, dirs = {}, {SWEEP: {}, seeds: {}}
    for i, (moment, what) in enumerate(CHAIN):
        res = drive(tmp_path, args + (["--resume"] if i else []), kill_at=moment)
        assert res["killed"] == bool(moment), f"{what}: rc {res['rc']}\n{res['out'][-3000:]}"
        now = snapshot(db, "tests")
        now_dirs = {s: trial_dirs(tmp_path, s) for s in (SWEEP, seeds)}
        for sweep in (SWEEP, seeds):
            c = counts(now, sweep)
            print(f"kill {i + 1} ({what}): {sweep}: {c}")  # the figures per moment (pytest -s shows them)
            assert c["finished_twice"] == 0 and c["epochs_not_once"] == 0, (what, sweep, c)
            assert c["active"] <= (6 if sweep == SWEEP else 2) and c["parents"] <= 1, (what, sweep, c)
            assert not rescheduled(snap, dirs[sweep], now_dirs[sweep], sweep), (what, sweep)
        assert not changed_history(snap, now), what  # no finished run (trial or refit) logged anything more
        refits = [r for r in now.values() if r["phase"] == "refit" and r["stage"] == "active"]
        assert len(refits) <= 1 and all(r["steps"] == list(range(1, len(r["steps"]) + 1)) for r in refits), what
        snap, dirs = now, now_dirs

    assert counts(snap, SWEEP) == {"active": 6, "finished": 6, "running": 0, "deleted": 0, "finished_twice": 0,
                                   "epochs_not_once": 0, "parents": 1}
    assert counts(snap, seeds)["active"] == counts(snap, seeds)["finished"] == 2
    assert [r["steps"] for r in snap.values() if r["phase"] == "refit"] == [[1, 2, 3, 4]]
    assert optuna_counts(tmp_path, SWEEP) == {"COMPLETE": 6}
    # the sweep's own best (printed by the last resume, from its table) is MLflow's best finished trial
    trials = [r for r in snap.values() if r["sweep"] == SWEEP and r["kind"] == "trial" and r["stage"] == "active"]
    best = max(r["metrics"]["val/acc"] for r in trials)
    tied = {r["trial_id"] for r in trials if r["metrics"]["val/acc"] == best}  # 16 val images: ties happen
    printed = re.search(r"best trial (\w+): val/acc=([0-9.]+)", res["out"])
    assert printed and printed.group(1) in tied, res["out"][-2000:]
    assert float(printed.group(2)) == pytest.approx(best, abs=1e-4)


def test_a_killed_train_run_reruns_into_the_same_run_with_each_epoch_once(tmp_path):
    base = tiny_base(tmp_path)
    base["train"].update({"epochs": EPOCHS, "checkpoint_every": 1})
    base["name"] = "single"
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump(base))
    first = drive(tmp_path, ["train", str(cfg)], kill_at="train:2")
    assert first["killed"], first["out"][-3000:]
    before = snapshot(tmp_path / "mlflow.db", "tests")
    (run_id, run), = before.items()
    assert run["status"] == "RUNNING" and run["steps"] == [1, 2]
    again = drive(tmp_path, ["train", str(cfg)])
    assert again["rc"] == 0, again["out"][-3000:]
    after = snapshot(tmp_path / "mlflow.db", "tests")
    assert list(after) == [run_id]
    run = after[run_id]
    assert run["status"] == "FINISHED" and run["steps"] == [1, 2, 3, 4] and run["role"] == "single"
    assert run["times"][:2] == before[run_id]["times"]  # epochs 1-2 logged once, by the first driver


def test_a_killed_study_continues_its_sweep_and_duplicates_no_cell(tmp_path):
    from test_scale import study_file

    study = study_file(tmp_path)  # 4 cells (2 backbones x GIST on/off), one epoch each
    first = drive(tmp_path, ["scale", str(study)], kill_at="final:1")  # right after a cell's final report
    assert first["killed"], first["out"][-3000:]
    before = snapshot(tmp_path / "mlflow.db", "scale-tests")
    assert any(r["kind"] == "trial" for r in before.values())
    again = drive(tmp_path, ["scale", str(study)])
    assert again["rc"] == 0 and "toy-1 (continued)" in again["out"], again["out"][-3000:]
    after = snapshot(tmp_path / "mlflow.db", "scale-tests")
    assert {r["sweep"] for r in after.values() if r["kind"] in ("trial", "sweep")} == {"toy-1"}  # no second sweep
    c = counts(after, "toy-1")
    assert c == {"active": 4, "finished": 4, "running": 0, "deleted": 0, "finished_twice": 0, "epochs_not_once": 0,
                 "parents": 1}, c
    assert not changed_history(before, after)  # the cells finished before the kill were not trained again
    assert main(["scale", str(study)]) == 0  # complete: a third run (here, in this process) trains nothing
    assert counts(snapshot(tmp_path / "mlflow.db", "scale-tests"), "toy-1") == c
