"""Fixed costs of runs and trials: what a user pays outside training epochs, measured side by side in one run.

1. ``train``: a one-epoch ``gist-ray train configs/quickstart_run.yaml`` as a user runs it (a fresh process), with
   the default backend (one local worker trains in-process) and with ``resources.backend=train`` (Ray Train);
   plus the same with 3 epochs, so the cost of an extra epoch can be set beside what ``epoch_time_s`` says.
2. ``floor``: the same configuration trained by the plain loop in a fresh process (``GistRun`` + ``LocalReporter``:
   no Ray, no MLflow).
3. ``sweep``: a quickstart-sized sweep (``gist-ray sweep search_spaces/quickstart.yaml``, a fresh process): the
   share of wall time x concurrency spent inside training epochs, and the fixed overhead per trial.
4. ``tune_floor``: the same number of trivial Ray Tune function trials with the same concurrency and epochs (each
   "epoch" a report and nothing else): Ray Tune's own per-trial floor.
5. ``store``: a new local SQLite MLflow store as MLflow makes it (its migrations) and as gist-ray makes it (a copy
   of the cached empty one, ``gist_ray/mlflow_store.py``), three of each in one process after its imports.
6. ``server``: the MLflow UI on an existing store, ``mlflow ui`` against ``gist-ray mlflow-server`` (one worker for
   SQLite, MLflow's job runner off): seconds until ``/health`` answers and the processes it runs.

Every command runs with ``GIST_RAY_TIMINGS`` set, so the script also prints where the fixed seconds go (process start
and imports, preflight, pretraining, Ray start, Train controller and workers, data, model build and weights, epochs,
the test pass, reporting and MLflow, shutdown). Absolute times are noisy on a shared machine: read the ratios, all
measured in this one run, and the load printed with them.

    python bench/fixed_costs.py                    # all six (about 5 minutes on 2 idle CPU cores)
    python bench/fixed_costs.py --only train,floor --trials 4
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable

FLOOR = r"""
import sys, time
t0 = time.time()
from gist_ray.config import load_config
from gist_ray.train.loop import GistRun, LocalReporter
cfg = load_config(sys.argv[1], sys.argv[3:])
GistRun(cfg, LocalReporter(sys.argv[2])).fit()
"""

STORE = r"""
import sys, time
from pathlib import Path
from mlflow.tracking import MlflowClient
from gist_ray import mlflow_store, tracking
work = Path(sys.argv[1])
mlflow_store.seed_sqlite_store(f"sqlite:///{work}/warm.db")  # the cached empty store exists (made once per machine)
for label, make in (("mlflow", lambda uri: MlflowClient(uri).search_experiments()),
                    ("gist-ray", lambda uri: tracking.client(uri).search_experiments())):
    for i in range(3):
        t = time.perf_counter()
        make(f"sqlite:///{work}/{label}-{i}.db")
        print(f"STORE {label} {time.perf_counter() - t:.3f}")
"""

TUNE_FLOOR = r"""
import sys, time
import ray
from ray import tune
n, conc, epochs = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
def trial(config):
    for e in range(epochs):
        tune.report({"epoch": e + 1, "score": float(e)})
ray.init(address="local", num_cpus=conc, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
t0 = time.time()
tune.Tuner(tune.with_resources(trial, {"CPU": 1}), param_space={"x": tune.grid_search(list(range(n)))},
           tune_config=tune.TuneConfig(max_concurrent_trials=conc, reuse_actors=True),
           run_config=tune.RunConfig(storage_path=sys.argv[4], name="floor", verbose=0)).fit()
print(f"TUNE_FIT_S {time.time() - t0:.3f}")
"""


def parse(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="train,floor,sweep,tune_floor,store,server", help="comma-separated parts to run")
    ap.add_argument("--trials", type=int, default=10, help="sweep trials (the quickstart's 10)")
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra override for every run")
    return ap.parse_args(argv)


def timed(cmd: list[str], env: dict, cwd: Path) -> tuple[float, float, str]:
    """(start, wall seconds, combined output) of a fresh process."""
    start = time.time()
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.time() - start
    if out.returncode != 0:
        raise SystemExit(f"command failed ({out.returncode}): {' '.join(cmd)}\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return start, wall, out.stdout + out.stderr


def phases(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def breakdown(start: float, wall: float, recs: list[dict]) -> dict[str, float]:
    """Seconds per phase name (summed over processes), plus process start + imports up to the first mark, and the
    teardown after the last ``cli/end``."""
    out: dict[str, float] = defaultdict(float)
    for r in recs:
        if r["end"] > r["start"]:
            out[r["phase"]] += r["end"] - r["start"]
    cli = [r for r in recs if r["phase"] == "cli/start"]
    if cli:
        out["python start + CLI imports"] = cli[0]["start"] - start
    end = [r for r in recs if r["phase"] == "cli/end"]
    if end:
        out["exit (shutdown, teardown)"] = start + wall - end[-1]["start"]
    return dict(out)


def show(title: str, wall: float, parts: dict[str, float]) -> None:
    print(f"\n{title}: {wall:.1f} s wall")
    for k, v in sorted(parts.items(), key=lambda kv: -kv[1]):
        if v >= 0.05:
            print(f"  {k:34s} {v:7.2f} s")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def time_to_health(cmd: list[str], port: int, env: dict, cwd: Path) -> tuple[float, int]:
    """(seconds until ``/health`` answers, processes in the server's session then) for a server started fresh."""
    start = time.time()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"server exited ({proc.returncode}): {' '.join(cmd)}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.2)
        took = time.time() - start
        time.sleep(3)  # processes started right after the first answer (MLflow's job runners) count too
        ps = subprocess.run(["ps", "-o", "pid=", "-s", str(proc.pid)], capture_output=True, text=True).stdout
        return took, len(ps.split())
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)


def epoch_times(recs: list[dict]) -> list[float]:
    return [r["end"] - r["start"] for r in recs if r["phase"] == "run/epoch"]


def main(argv=None) -> None:
    args = parse(argv)
    only = set(args.only.split(","))
    print(f"machine: {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}; "
          f"python {sys.version.split()[0]}")
    work = Path(tempfile.mkdtemp(prefix="gist-ray-fixed-"))
    base_env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    common = [f"output_dir={work}/runs", f"tracking.uri=sqlite:///{work}/mlflow.db", *args.set]
    config = str(ROOT / "configs" / "quickstart_run.yaml")
    res: dict[str, float] = {}

    # warm the caches (pretrained backbone) and create the MLflow store, so no part pays for them: a user pays
    # each once per machine / store (the store's creation is printed)
    subprocess.run([PY, "-c", "from gist_ray.pretrain import ensure_pretrained; ensure_pretrained(['vit_synth_s'], 'auto')"],
                   env=base_env, check=True)
    t = time.time()
    subprocess.run([PY, "-c", f"from mlflow.tracking import MlflowClient; MlflowClient('sqlite:///{work}/mlflow.db')"
                    ".search_experiments()"], env=base_env, check=True, capture_output=True)
    print(f"creating the MLflow SQLite store (once per store, not counted below): {time.time() - t:.1f} s")

    if "train" in only:
        for label, extra in (("in-process", []), ("ray-train", ["resources.backend=train"])):
            for epochs in (1, 3):
                tl = work / f"train-{label}-{epochs}.jsonl"
                env = {**base_env, "GIST_RAY_TIMINGS": str(tl)}
                start, wall, _ = timed([PY, "-m", "gist_ray.cli", "train", config, f"train.epochs={epochs}",
                                        f"name=bench-{label}-{epochs}", *common, *extra], env, work)
                recs = phases(tl)
                res[f"train_{label}_{epochs}"] = wall
                res[f"train_{label}_{epochs}_epoch_s"] = sum(epoch_times(recs))
                if epochs == 1:
                    show(f"gist-ray train, 1 epoch, {label}", wall, breakdown(start, wall, recs))
    if "floor" in only:
        tl = work / "floor.jsonl"
        start, wall, _ = timed([PY, "-c", FLOOR, config, str(work / "floor"), "train.epochs=1", *common],
                               {**base_env, "GIST_RAY_TIMINGS": str(tl)}, work)
        res["floor"] = wall
        show("floor: GistRun + LocalReporter in one fresh process, 1 epoch", wall, breakdown(start, wall, phases(tl)))
    if "sweep" in only:
        tl = work / "sweep.jsonl"
        start, wall, _ = timed([PY, "-m", "gist_ray.cli", "sweep", str(ROOT / "search_spaces" / "quickstart.yaml"),
                                "--name", "bench-sweep", *common, f"search.num_samples={args.trials}",
                                f"search.max_concurrent_trials={args.concurrency}"],
                               {**base_env, "GIST_RAY_TIMINGS": str(tl)}, work)
        recs = phases(tl)
        inside = sum(epoch_times(recs))
        n = len([r for r in recs if r["phase"] == "trial/start"]) or args.trials
        res.update(sweep_wall=wall, sweep_epochs_s=inside, sweep_trials=n)
        show(f"gist-ray sweep, {n} trials, {args.concurrency} at a time", wall, breakdown(start, wall, recs))
        print(f"  inside epochs: {inside:.1f} s of {wall:.1f} s x {args.concurrency} = "
              f"{100 * inside / (wall * args.concurrency):.1f} %; fixed overhead per trial "
              f"{(wall * args.concurrency - inside) / n:.2f} s")
    if "tune_floor" in only:
        start, wall, out = timed([PY, "-c", TUNE_FLOOR, str(args.trials), str(args.concurrency), "8",
                                  str(work / "tune")], base_env, work)
        fit = float(next(ln.split()[1] for ln in out.splitlines() if ln.startswith("TUNE_FIT_S")))
        res.update(tune_floor_wall=wall, tune_floor_fit=fit)
        print(f"\nRay Tune floor: {args.trials} trivial trials x 8 reports, {args.concurrency} at a time: {wall:.1f} s "
              f"wall, Tuner.fit {fit:.1f} s; per trial {wall * args.concurrency / args.trials:.2f} s of wall x "
              f"concurrency ({fit * args.concurrency / args.trials:.2f} s inside fit)")

    if "store" in only:
        _, _, out = timed([PY, "-c", STORE, str(work)], base_env, work)
        made = defaultdict(list)
        for ln in out.splitlines():
            if ln.startswith("STORE "):
                made[ln.split()[1]].append(float(ln.split()[2]))
        res.update(store_mlflow=statistics.median(made["mlflow"]), store_gist_ray=statistics.median(made["gist-ray"]))
        print(f"\na new SQLite MLflow store (median of 3, imports done): MLflow's migrations {res['store_mlflow']:.2f} s, "
              f"gist-ray's copy of the cached empty store {res['store_gist_ray']:.3f} s")
    if "server" in only:
        env = {**base_env}
        env.pop("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", None)
        store = f"sqlite:///{work}/mlflow.db"
        for label, cmd in (("mlflow ui", [str(Path(PY).parent / "mlflow"), "ui", "--backend-store-uri", store]),
                           ("gist-ray mlflow-server", [PY, "-m", "gist_ray.cli", "mlflow-server",
                                                       "--backend-store-uri", store, "--artifact-root",
                                                       str(work / "mlartifacts")])):
            port = free_port()
            took, procs = time_to_health([*cmd, "--port", str(port)], port, env, work)
            res[f"server_{label}"] = took
            print(f"\n{label}: /health answered after {took:.1f} s; {procs} processes in its session")

    print("\nratios (targets from issue 14)")
    if "train_in-process_1" in res and "floor" in res:
        print(f"  gist-ray train 1 epoch / floor: {res['train_in-process_1'] / res['floor']:.2f}x in-process, "
              f"{res.get('train_ray-train_1', float('nan')) / res['floor']:.2f}x Ray Train   (target <= 1.5x)")
    for label in ("in-process", "ray-train"):
        if f"train_{label}_3" in res:
            extra = (res[f"train_{label}_3"] - res[f"train_{label}_1"]) / 2
            said = (res[f"train_{label}_3_epoch_s"] - res[f"train_{label}_1_epoch_s"]) / 2
            print(f"  extra epoch, {label}: {extra:.2f} s wall vs {said:.2f} s of epoch_time_s   (target: equal)")
    if "sweep_wall" in res:
        eff = res["sweep_epochs_s"] / (res["sweep_wall"] * args.concurrency)
        per = (res["sweep_wall"] * args.concurrency - res["sweep_epochs_s"]) / res["sweep_trials"]
        print(f"  sweep: {100 * eff:.1f} % inside epochs (target >= 80 %); {per:.2f} s fixed per trial (target <= 1 s)")
        if "tune_floor_wall" in res:
            floor = res["tune_floor_wall"] * args.concurrency / args.trials
            print(f"  sweep per-trial overhead / Ray Tune's per-trial floor: {per / floor:.2f}x (target <= 3x)")
    print(f"\nload average at the end {os.getloadavg()[0]:.2f}; files in {work}")


if __name__ == "__main__":
    main()
