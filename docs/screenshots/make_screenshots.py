"""Screenshots of gist-ray's runs in the MLflow UI, taken by a real headless Chromium.

    python docs/screenshots/make_screenshots.py --store sqlite:///mlflow.db --out docs/screenshots

starts ``mlflow server`` on a free 127.0.0.1 port against ``--store``, waits for ``/health``, finds through the REST
API the newest sweep of ``--experiment`` (its parent run and its best trial), drives Debian's Chromium
(``apt-get install chromium``) over the DevTools protocol and writes three PNGs:

- ``experiment.png``: the experiment page as it opens (default columns), the sweep expanded and the Run Name
  column dragged wider;
- ``sweep_run.png``: the sweep's parent run: its description (the best trial, the GIST-on-vs-off plot, the best
  trials), metrics and parameters;
- ``trial_run.png``: one trial run (its parameters, metrics, tags, dataset inputs).

MLflow 3.17's UI opens an experiment on the GenAI overview unless the URL (or the browser's memory of the "Model
training" switch) says ``workflowType=machine_learning``; the pages below carry it, as the links gist-ray prints do.
Needs nothing but the project's venv (aiohttp comes with MLflow) and the chromium binary. Nothing leaves the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import aiohttp

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--window-size=1600,1000"]
ML = "workflowType=machine_learning"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f} s")


def rest(url: str, path: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url + path, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def tags(run: dict) -> dict[str, str]:
    return {t["key"]: t["value"] for t in run["data"].get("tags", [])}


def pick_runs(url: str, experiment: str) -> tuple[str, dict, dict]:
    """The experiment id, the newest sweep's parent run and its best trial (highest ``best``-metric) or any."""
    exp = rest(url, f"/api/2.0/mlflow/experiments/get-by-name?experiment_name={experiment}")["experiment"]
    runs = rest(url, "/api/2.0/mlflow/runs/search", {"experiment_ids": [exp["experiment_id"]], "max_results": 1000,
                                                     "order_by": ["attributes.start_time DESC"]}).get("runs", [])
    sweeps = [r for r in runs if tags(r).get("gist_ray.kind") == "sweep"]
    if not sweeps:
        raise SystemExit(f"no sweep run in experiment {experiment!r}: run a sweep first")
    parent = sweeps[0]
    children = [r for r in runs if tags(r).get("mlflow.parentRunId") == parent["info"]["run_id"]
                and tags(r).get("gist_ray.kind") == "trial"]
    best = tags(parent).get("best_trial_id")
    trial = next((r for r in children if tags(r).get("gist_ray.trial_id") == best), children[0] if children else parent)
    return exp["experiment_id"], parent, trial


class Chromium:
    """One headless Chromium page driven over the DevTools protocol."""

    def __init__(self, binary: str) -> None:
        self.port = free_port()
        self.profile = tempfile.mkdtemp(prefix="gist-ray-chromium-")
        self.proc = subprocess.Popen([binary, *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}",
                                      f"--remote-debugging-port={self.port}", "about:blank"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        self.next_id = 0

    async def connect(self, session: aiohttp.ClientSession) -> None:
        wait_http(f"http://127.0.0.1:{self.port}/json/version", 60)
        async with session.get(f"http://127.0.0.1:{self.port}/json/list") as r:
            page = next(t for t in await r.json() if t["type"] == "page")
        self.ws = await session.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0)
        await self.send("Page.enable")
        await self.send("Runtime.enable")
        await self.send("Emulation.setDeviceMetricsOverride", width=1600, height=1000, deviceScaleFactor=1,
                        mobile=False)

    async def send(self, method: str, **params) -> dict:
        self.next_id += 1
        await self.ws.send_json({"id": self.next_id, "method": method, "params": params})
        while True:
            msg = await self.ws.receive_json()
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    async def js(self, expression: str):
        r = await self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        return r.get("result", {}).get("value")

    async def wait_for(self, expression: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if await self.js(expression):
                return
            await asyncio.sleep(0.5)
        raise TimeoutError(f"page never satisfied: {expression}")

    async def goto(self, url: str, ready: str) -> None:
        await self.send("Page.navigate", url=url)
        await self.wait_for(ready)
        await self.close_side_panels()
        await asyncio.sleep(1.5)  # charts and tables finish their layout

    async def close_side_panels(self) -> None:
        """Close the MLflow Assistant panel (open on a browser's first visit) and first-visit tips."""
        await self.js("""(() => {
            const close = document.querySelector('button[data-component-id="mlflow.assistant.chat_panel.close"]');
            if (close) close.click();
            for (const b of document.querySelectorAll('button')) if (b.innerText.trim() === 'Got it') b.click();
        })()""")

    async def drag(self, x: float, y: float, dx: float) -> None:
        """Press at (x, y), move right by dx, release (resizes a table column by its header edge)."""
        await self.send("Input.dispatchMouseEvent", type="mousePressed", x=x, y=y, button="left", clickCount=1)
        for i in range(1, 11):
            await self.send("Input.dispatchMouseEvent", type="mouseMoved", x=x + dx * i / 10, y=y, button="left",
                            buttons=1)
        await self.send("Input.dispatchMouseEvent", type="mouseReleased", x=x + dx, y=y, button="left", clickCount=1)

    async def widen_column(self, title: str, dx: float) -> None:
        edge = await self.js(f"""(() => {{
            const h = [...document.querySelectorAll('.ag-header-cell')].find(e => e.innerText.trim() === {json.dumps(title)});
            if (!h) return null;
            const r = h.getBoundingClientRect();
            return [r.right - 3, r.top + r.height / 2];
        }})()""")
        if edge:
            await self.drag(edge[0], edge[1], dx)

    async def shot(self, path: Path) -> None:
        r = await self.send("Page.captureScreenshot", format="png")
        path.write_bytes(base64.b64decode(r["data"]))
        print(f"wrote {path}")

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(30)
        shutil.rmtree(self.profile, ignore_errors=True)


def text_has(s: str) -> str:
    return f"document.body && document.body.innerText.includes({json.dumps(s)})"


async def take(url: str, exp_id: str, parent: dict, trial: dict, out: Path, binary: str) -> None:
    browser = Chromium(binary)
    try:
        async with aiohttp.ClientSession() as session:
            await browser.connect(session)
            parent_name, trial_name = parent["info"]["run_name"], trial["info"]["run_name"]
            await browser.goto(f"{url}/#/experiments/{exp_id}/runs?{ML}", text_has(parent_name))
            await browser.js("""(() => {  // expand the sweep's row to show its trials
                const b = document.querySelector('button[data-component-id$="runnamecellrenderer.tsx_46"]');
                if (b) b.click(); })()""")
            await asyncio.sleep(2)
            await browser.widen_column("Run Name", 330)  # run names are long; a user drags the same edge
            await asyncio.sleep(1)
            await browser.shot(out / "experiment.png")
            await browser.goto(f"{url}/#/experiments/{exp_id}/runs/{parent['info']['run_id']}?{ML}",
                               text_has(parent_name))
            await browser.js("""(() => {  // unfold the description: the comparison plot and the best trials
                for (const b of document.querySelectorAll('button, a, span'))
                    if (b.innerText && b.innerText.trim() === 'Show more') { b.click(); return; } })()""")
            await asyncio.sleep(2)
            await browser.shot(out / "sweep_run.png")
            await browser.goto(f"{url}/#/experiments/{exp_id}/runs/{trial['info']['run_id']}?{ML}",
                               text_has(trial_name))
            await browser.shot(out / "trial_run.png")
    finally:
        browser.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--store", default="sqlite:///mlflow.db", help="MLflow backend store URI")
    p.add_argument("--experiment", default="gist-ray")
    p.add_argument("--out", default=str(Path(__file__).resolve().parent))
    p.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    artifacts = tempfile.mkdtemp(prefix="gist-ray-artifacts-")
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri", args.store,
                               "--default-artifact-root", artifacts, "--host", "127.0.0.1", "--port", str(port),
                               "--workers", "1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_http(f"{url}/health")
        exp_id, parent, trial = pick_runs(url, args.experiment)
        asyncio.run(take(url, exp_id, parent, trial, out, args.chromium))
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
