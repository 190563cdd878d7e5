"""A real ``mlflow server`` on loopback in the background, for the tests (started through gist-ray's checks)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from gist_ray.tracking_server import ServerOptions, prepare, url_for


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def healthy(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=timeout) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


@dataclass
class BackgroundServer:
    process: subprocess.Popen
    url: str
    log_path: Path

    def running(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, n: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.is_file() else ""
        return "\n".join(text.splitlines()[-n:])

    def ready(self, wait_s: float = 120.0) -> "BackgroundServer":
        """Wait until ``/health`` answers; raise with the server's log if it exits or takes longer."""
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if not self.running():
                raise RuntimeError(f"mlflow server exited with code {self.process.returncode}:\n{self.log_tail()}")
            if healthy(self.url):
                return self
            time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"mlflow server did not answer {self.url}/health within {wait_s:.0f} s:\n{self.log_tail()}")

    def stop(self, timeout: float = 15.0) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout)


def launch_server(opts: ServerOptions, log_file: Path) -> BackgroundServer:
    """Start the server in its own process group and return at once (:meth:`BackgroundServer.ready` waits)."""
    cmd, env = prepare(opts)
    with open(log_file, "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, **env, "PYTEST_CURRENT_TEST": ""})
    return BackgroundServer(proc, url_for(opts.host, opts.port), Path(log_file))

