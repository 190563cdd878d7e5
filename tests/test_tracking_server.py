"""The MLflow tracking server helper: safe binding, a real server fed by a sweep, concurrent writers lose nothing."""

import json
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest
import yaml

from conftest import TINY_OVERRIDES
from gist_ray import tracking_server as ts
from gist_ray.cli import main
from gist_ray.errors import ConfigError
from mlflow_server import free_port


# ----------------------------------------------------------------------------- refusals (no server starts)


@pytest.fixture
def no_process(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError(f"a process was started: {a}")

    monkeypatch.setattr(subprocess, "Popen", refuse)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "[::]", "10.0.3.7", "head.internal"])
def test_public_bind_without_auth_is_refused_before_anything_starts(no_process, tmp_path, host):
    opts = ts.ServerOptions(f"sqlite:///{tmp_path}/m.db", str(tmp_path / "art"), host=host, port=free_port())
    with pytest.raises(ConfigError, match="not a loopback address"):
        ts.prepare(opts)
    with pytest.raises(ConfigError, match="not a loopback address"):
        ts.serve(opts)
    assert not (tmp_path / "art").exists() and not (tmp_path / "m.db").exists()


def test_cli_refuses_public_bind_with_exit_code_2(no_process, capsys):
    assert ts.main(["--host", "0.0.0.0"]) == 2
    assert "not a loopback address" in capsys.readouterr().err
    assert main(["mlflow-server", "--host", "::", "--port", "5001"]) == 2  # gist-ray mlflow-server
    assert "not a loopback address" in capsys.readouterr().err


def test_auth_without_the_auth_extra_is_refused(no_process, tmp_path):
    import importlib.util

    if importlib.util.find_spec("flask_wtf") is not None:
        pytest.skip("mlflow[auth] is installed here")
    with pytest.raises(ConfigError, match=r"mlflow\[auth\]"):
        ts.prepare(ts.ServerOptions(f"sqlite:///{tmp_path}/m.db", str(tmp_path / "a"), host="0.0.0.0",
                                    port=free_port(), auth=True))


def test_loopback_and_explicit_opt_outs_build_the_expected_command():
    def cmd_of(**kw):
        return ts.server_command(ts.ServerOptions(**kw))

    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        cmd = cmd_of(host=host)
        assert cmd[cmd.index("--host") + 1] == host
    cmd = cmd_of(backend_store_uri="postgresql://mlflow@db.internal:5432/mlflow", artifact_root="s3://bucket/mlflow",
                 host="0.0.0.0", auth=True)
    assert cmd[cmd.index("--app-name") + 1] == "basic-auth" and "postgresql://mlflow@db.internal:5432/mlflow" in cmd
    assert cmd[cmd.index("--workers") + 1] == "4" and cmd[cmd.index("--artifacts-destination") + 1] == "s3://bucket/mlflow"
    insecure = cmd_of(host="0.0.0.0", allow_insecure_public=True, allowed_hosts="10.0.*")
    assert "--app-name" not in insecure and insecure[insecure.index("--allowed-hosts") + 1] == "10.0.*"
    assert cmd_of()[cmd_of().index("--workers") + 1] == "1"  # SQLite: one writer process
    for bad in ("mysql://u@h/db", "file:///tmp/mlruns", "sqlite://relative.db", "mlruns"):
        with pytest.raises(ConfigError, match="backend_store_uri"):
            cmd_of(backend_store_uri=bad)


def test_mlflow_job_runners_are_off_unless_the_user_turns_them_on(no_process, tmp_path, monkeypatch):
    opts = ts.ServerOptions(f"sqlite:///{tmp_path}/m.db", str(tmp_path / "a"), port=free_port())
    monkeypatch.delenv(ts.JOBS_ENV, raising=False)
    assert ts.prepare(opts)[1][ts.JOBS_ENV] == "false"  # no huey consumers: 2 server processes, not 10
    monkeypatch.setenv(ts.JOBS_ENV, "true")
    assert ts.prepare(opts)[1][ts.JOBS_ENV] == "true"


def test_insecure_public_bind_warns_loudly(no_process, tmp_path, capsys):
    cmd, _ = ts.prepare(ts.ServerOptions(f"sqlite:///{tmp_path}/m.db", str(tmp_path / "a"), host="0.0.0.0",
                                         port=free_port(), allow_insecure_public=True))
    assert "WITHOUT AUTHENTICATION" in capsys.readouterr().err and cmd[cmd.index("--host") + 1] == "0.0.0.0"
    assert ts.url_for("0.0.0.0", 5000) == "http://127.0.0.1:5000" and ts.url_for("::", 1) == "http://[::1]:1"


# ----------------------------------------------------------------------------- a real server


def api(url, path, body=None):
    """One MLflow REST call (POST with a JSON body, or GET with query parameters)."""
    if body is None or path in ("metrics/get-history", "experiments/get-by-name", "artifacts/list"):
        q = "?" + urllib.parse.urlencode(body or {})
        req = urllib.request.Request(f"{url}/api/2.0/mlflow/{path}{q}")
    else:
        req = urllib.request.Request(f"{url}/api/2.0/mlflow/{path}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read() or b"{}")


def search_runs(url, exp_id):
    out, token = [], None
    while True:
        body = {"experiment_ids": [exp_id], "max_results": 1000, **({"page_token": token} if token else {})}
        page = api(url, "runs/search", body)
        out += page.get("runs", [])
        token = page.get("next_page_token")
        if not token:
            return out


@pytest.fixture
def server(mlflow_server):
    return mlflow_server.ready()  # the session's server (tests/conftest.py); checked alive at the session's end


def tags_of(run):
    return {t["key"]: t["value"] for t in run["data"].get("tags", [])}


@pytest.mark.slow
def test_a_sweep_logs_every_trial_to_the_server_as_the_ui_reads_it(server, ray_local, tmp_path):
    """A tiny GIST on/off sweep logged to `mlflow server` on loopback, read back over REST as the UI loads it: run
    names, the parameters that apply, dataset inputs, the experiment kind, the parent's note and its image."""
    from gist_ray.sweep.driver import run_sweep
    from gist_ray.sweep.space import load_sweep

    base: dict = {}
    for text in TINY_OVERRIDES:
        key, value = text.split("=", 1)
        sec, fld = key.split(".")
        base.setdefault(sec, {})[fld] = yaml.safe_load(value)
    base.update(output_dir=str(tmp_path / "runs"), resources={"use_gpu": False},
                tracking={"uri": server.url, "experiment": "served"})
    doc = {"name": "served", "base": base, "space": {"gist.enabled": {"choice": [True, False]}},
           "search": {"num_samples": 2, "max_concurrent_trials": 2, "sampler": "grid", "scheduler": "none"}}
    (tmp_path / "served.yaml").write_text(yaml.safe_dump(doc))
    result = run_sweep(load_sweep(tmp_path / "served.yaml"), verbose=False)
    assert [r.status for r in result.rows] == ["TERMINATED", "TERMINATED"]

    exp = api(server.url, "experiments/get-by-name", {"experiment_name": "served"})["experiment"]
    assert {t["key"]: t["value"] for t in exp["tags"]}["mlflow.experimentKind"] == "custom_model_development"
    runs = search_runs(server.url, exp["experiment_id"])
    kinds = sorted(tags_of(r)["gist_ray.kind"] for r in runs)
    assert kinds == ["sweep", "trial", "trial"]
    assert {r["info"]["status"] for r in runs} == {"FINISHED"}
    by_name = {r["info"]["run_name"]: r for r in runs}
    on, off = "gist_adapter+GIST l=0.75 T=3 | shapes | vit_test_tiny | s0", "gist_adapter | shapes | vit_test_tiny | s0"
    assert set(by_name) == {"served", on, off}, sorted(by_name)
    parent = by_name["served"]["info"]["run_id"]
    for r in (by_name[on], by_name[off]):
        assert tags_of(r)["mlflow.parentRunId"] == parent
        hist = api(server.url, "metrics/get-history", {"run_id": r["info"]["run_id"], "metric_key": "train/loss"})
        assert sorted(m["step"] for m in hist["metrics"]) == [1, 2]
        assert any(m["key"] == "val/acc" for m in r["data"]["metrics"])
        assert {(i["dataset"]["name"], i["tags"][0]["value"]) for i in r["inputs"]["dataset_inputs"]} == \
            {("shapes", "train"), ("shapes", "eval")}  # tuning trials never see the test split
    params = {n: {p["key"] for p in by_name[n]["data"]["params"]} for n in (on, off)}
    assert "gist.lam" in params[on] and "gist.lam" not in params[off] and "gist.enabled" in params[off]
    note = tags_of(by_name["served"])["mlflow.note.content"]
    assert f"get-artifact?path=gist_vs_off.png&run_uuid={parent}" in note and on.replace("|", "\\|") in note
    # the results went through the server's artifact proxy into its artifact root
    files = {f["path"] for f in api(server.url, "artifacts/list", {"run_id": parent}).get("files", [])}
    assert {"gist_vs_off.png", "trials.csv", "trials.md"} <= files
    assert list((server.dir / "artifacts").rglob("trials.md"))
    with urllib.request.urlopen(f"{server.url}/get-artifact?path=gist_vs_off.png&run_uuid={parent}", timeout=60) as r:
        assert r.read()[:4] == b"\x89PNG"  # the note's image


WRITER = r"""
import json, sys, time, urllib.request
url, exp_id, idx, n, start_at = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
def post(path, body):
    req = urllib.request.Request(url + "/api/2.0/mlflow/" + path, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=120) as r:  # no retries: every request must succeed
        return json.loads(r.read() or b"{}")
time.sleep(max(0.0, start_at - time.time()))  # all writers start together
ts = int(time.time() * 1000)
run = post("runs/create", {"experiment_id": exp_id, "run_name": f"writer-{idx}", "start_time": ts})["run"]["info"]["run_id"]
for step in range(n):
    post("runs/log-metric", {"run_id": run, "key": "single", "value": idx * 1000.0 + step, "timestamp": ts, "step": step})
post("runs/log-batch", {"run_id": run, "metrics": [
    {"key": "batched", "value": float(step), "timestamp": ts, "step": step} for step in range(n)]})
post("runs/update", {"run_id": run, "status": "FINISHED", "end_time": int(time.time() * 1000)})
print(run)
"""


@pytest.mark.slow
def test_eight_concurrent_writers_lose_nothing(server, tmp_path):
    writers, n = 8, 40
    exp_id = api(server.url, "experiments/create", {"name": "concurrent"})["experiment_id"]
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    start_at = time.time() + 3.0
    procs = [subprocess.Popen([sys.executable, str(script), server.url, exp_id, str(i), str(n), str(start_at)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(writers)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0] * writers, [err[-2000:] for _, err in outs if err]
    run_ids = [out.strip() for out, _ in outs]
    assert len(set(run_ids)) == writers

    runs = {r["info"]["run_id"]: r for r in search_runs(server.url, exp_id)}
    assert set(runs) == set(run_ids) and {r["info"]["status"] for r in runs.values()} == {"FINISHED"}
    total = 0
    for i, run_id in enumerate(run_ids):
        single = api(server.url, "metrics/get-history", {"run_id": run_id, "metric_key": "single"})["metrics"]
        batched = api(server.url, "metrics/get-history", {"run_id": run_id, "metric_key": "batched"})["metrics"]
        assert sorted((m["step"], m["value"]) for m in single) == [(s, i * 1000.0 + s) for s in range(n)]
        assert sorted(m["step"] for m in batched) == list(range(n))
        total += len(single) + len(batched)
    assert total == writers * 2 * n
