"""Run an MLflow tracking server for gist-ray: SQLite or PostgreSQL metadata, proxied artifacts, safe binding.

``start_server`` launches ``mlflow server`` in the background and returns once it answers ``/health``;
``serve`` runs it in the foreground (the ``gist-ray mlflow-server`` command, also ``python -m
gist_ray.tracking_server``). Artifacts are proxied by the server (``--serve-artifacts``): clients upload
through HTTP and need no credentials for ``artifact_root`` (a local directory, ``s3://...``, ...).

Binding: 127.0.0.1 by default. An MLflow server has no authentication of its own, so any host that is not
a loopback address (``0.0.0.0``, ``::``, a LAN or VPC address) is refused unless either

* ``auth=True``: MLflow's basic-auth app (``--app-name basic-auth``; needs ``pip install 'mlflow[auth]'``,
  an admin password from ``MLFLOW_AUTH_ADMIN_PASSWORD`` or the ``auth_config`` INI file, and TLS or an SSH
  tunnel in front: basic auth over plain HTTP sends passwords in the clear), or
* ``allow_insecure_public=True``: an explicit opt-out that prints a loud warning (e.g. a private network
  where a firewall or security group already limits who can connect).

On a gist-ray Ray cluster every MLflow write comes from the head node (the Tune driver and the Ray Train
controller, which Ray pins to the driver's node), so the default loopback binding plus an SSH tunnel for
people is enough; see docs/cluster.md.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from gist_ray.errors import ConfigError

DEFAULT_BACKEND = "sqlite:///mlflow.db"
DEFAULT_ARTIFACTS = "./mlartifacts"
BACKEND_SCHEMES = ("sqlite", "postgresql")

INSECURE_WARNING = """
!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!
!! WARNING: MLflow tracking server on {host}:{port} WITHOUT AUTHENTICATION (--allow-insecure-public).
!! Anyone who can reach this address can read, change and delete every experiment, run and artifact.
!! Make sure a firewall / security group limits who can connect, or use --auth, or bind 127.0.0.1 and
!! reach it through an SSH tunnel (ssh -L 5000:127.0.0.1:5000 <head>).
!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!
"""


def is_loopback(host: str) -> bool:
    """``localhost``, 127.0.0.0/8 and ::1 are loopback; names other than ``localhost`` are not trusted."""
    h = host.strip().strip("[]").lower()
    if h == "localhost":
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def check_backend_store_uri(uri: str) -> str:
    """SQLite (``sqlite:///relative.db``, ``sqlite:////abs/path.db``) or PostgreSQL
    (``postgresql://user@host:5432/db``, ``postgresql+psycopg2://...``); anything else is refused."""
    scheme = uri.split(":", 1)[0].split("+", 1)[0].lower() if ":" in uri else ""
    if scheme not in BACKEND_SCHEMES:
        raise ConfigError(f"backend_store_uri {uri!r}: use sqlite:///path/to/mlflow.db or "
                          "postgresql://user@host:5432/dbname")
    if scheme == "sqlite" and not uri.startswith("sqlite:///"):
        raise ConfigError(f"backend_store_uri {uri!r}: a SQLite URI is sqlite:///relative/path.db or "
                          "sqlite:////absolute/path.db")
    return uri


def _postgres_driver_missing(uri: str) -> str | None:
    import importlib.util

    if not uri.lower().startswith("postgresql"):
        return None
    driver = uri.split(":", 1)[0].partition("+")[2] or "psycopg2"
    module = {"psycopg2": "psycopg2", "psycopg": "psycopg", "pg8000": "pg8000"}.get(driver, driver)
    if importlib.util.find_spec(module) is None:
        return f"{uri.split('@')[-1]}: the PostgreSQL driver {module!r} is not installed (pip install psycopg2-binary)"
    return None


def _absolute_artifacts(root: str) -> str:
    return root if "://" in root else str(Path(root).expanduser().resolve())


def _absolute_sqlite(uri: str) -> str:
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return "sqlite:///" + str(Path(uri[len("sqlite:///"):]).expanduser().resolve())
    return uri


def server_command(
    backend_store_uri: str = DEFAULT_BACKEND,
    artifact_root: str = DEFAULT_ARTIFACTS,
    host: str = "127.0.0.1",
    port: int = 5000,
    *,
    workers: int | None = None,
    auth: bool = False,
    allow_insecure_public: bool = False,
    allowed_hosts: str | None = None,
    extra_args: Sequence[str] = (),
) -> list[str]:
    """The ``mlflow server`` argv for these settings, after the safety checks (no side effects)."""
    check_backend_store_uri(backend_store_uri)
    if not 0 < int(port) < 65536:
        raise ConfigError(f"port {port}: must be in 1..65535")
    if not is_loopback(host) and not auth and not allow_insecure_public:
        raise ConfigError(
            f"host {host!r} is not a loopback address, and an MLflow server has no authentication of its own: "
            "anyone who can reach it could read and delete every run. Bind 127.0.0.1 and use an SSH tunnel "
            "(the default), or pass --auth (MLflow basic-auth; pip install 'mlflow[auth]'), or, on a network "
            "whose firewall already limits access, --allow-insecure-public.")
    if workers is None:  # SQLite serialises writers anyway; one process avoids lock contention between them
        workers = 1 if backend_store_uri.startswith("sqlite") else 4
    cmd = [sys.executable, "-m", "mlflow", "server",
           "--backend-store-uri", _absolute_sqlite(backend_store_uri),
           "--serve-artifacts", "--artifacts-destination", _absolute_artifacts(artifact_root),
           "--host", host, "--port", str(int(port)), "--workers", str(int(workers))]
    if auth:
        cmd += ["--app-name", "basic-auth"]
    if allowed_hosts:
        cmd += ["--allowed-hosts", allowed_hosts]
    return cmd + list(extra_args)


def _preflight(cmd: list[str], backend_store_uri: str, artifact_root: str, host: str, port: int, auth: bool,
               auth_config: str | None) -> dict[str, str]:
    """Checks that need the machine (drivers, files, the port); returns extra environment for the server."""
    import importlib.util

    env: dict[str, str] = {}
    missing = _postgres_driver_missing(backend_store_uri)
    if missing:
        raise ConfigError(missing)
    if backend_store_uri.startswith("sqlite:///"):
        Path(_absolute_sqlite(backend_store_uri)[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    if "://" not in artifact_root:
        Path(_absolute_artifacts(artifact_root)).mkdir(parents=True, exist_ok=True)
    if auth:
        if importlib.util.find_spec("flask_wtf") is None:
            raise ConfigError("--auth needs MLflow's basic-auth app: pip install 'mlflow[auth]'")
        if auth_config:
            if not Path(auth_config).is_file():
                raise ConfigError(f"auth_config {auth_config}: file not found")
            env["MLFLOW_AUTH_CONFIG_PATH"] = str(Path(auth_config).resolve())
    elif auth_config:
        raise ConfigError("auth_config is only used with auth=True (--auth)")
    try:  # fail here rather than health-check some other server already listening on the port
        family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host.strip("[]"), int(port)))
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc} (another server running?)") from None
    return env


def url_for(host: str, port: int) -> str:
    """The URL local clients use: a wildcard bind is reached through loopback."""
    h = host.strip("[]")
    if h in ("0.0.0.0", ""):
        h = "127.0.0.1"
    elif h == "::":
        h = "::1"
    return f"http://[{h}]:{port}" if ":" in h else f"http://{h}:{port}"


def healthy(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=timeout) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


@dataclass
class TrackingServer:
    """A running ``mlflow server`` (its own process group); ``url`` is what clients put in ``tracking.uri``."""

    process: subprocess.Popen
    url: str
    command: list[str]
    log_path: Path | None = None
    env: dict[str, str] = field(default_factory=dict)

    def running(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, n: int = 40) -> str:
        if self.log_path is None or not self.log_path.is_file():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM the server and its workers, SIGKILL what is left after ``timeout``."""
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.process.wait(timeout)
        return self.process.returncode

    def __enter__(self) -> "TrackingServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _checked_command(backend_store_uri: str, artifact_root: str, host: str, port: int, workers: int | None,
                     auth: bool, auth_config: str | None, allow_insecure_public: bool, allowed_hosts: str | None,
                     extra_args: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """The ``mlflow server`` command and its extra environment, after every check; warns on stderr when it will
    serve a public address without authentication."""
    cmd = server_command(backend_store_uri, artifact_root, host, port, workers=workers, auth=auth,
                         allow_insecure_public=allow_insecure_public, allowed_hosts=allowed_hosts,
                         extra_args=extra_args)
    extra_env = _preflight(cmd, backend_store_uri, artifact_root, host, port, auth, auth_config)
    if allow_insecure_public and not is_loopback(host) and not auth:
        print(INSECURE_WARNING.format(host=host, port=port), file=sys.stderr, flush=True)
    return cmd, extra_env


def start_server(
    backend_store_uri: str = DEFAULT_BACKEND,
    artifact_root: str = DEFAULT_ARTIFACTS,
    host: str = "127.0.0.1",
    port: int = 5000,
    *,
    workers: int | None = None,
    auth: bool = False,
    auth_config: str | None = None,
    allow_insecure_public: bool = False,
    allowed_hosts: str | None = None,
    log_file: str | os.PathLike | None = None,
    wait_s: float = 120.0,
    env: Mapping[str, str] | None = None,
    extra_args: Sequence[str] = (),
) -> TrackingServer:
    """Start ``mlflow server`` in the background; return once ``/health`` answers (or raise with its log).

    Every check (host, backend URI, driver, auth, free port) runs before any process starts.
    """
    cmd, extra_env = _checked_command(backend_store_uri, artifact_root, host, port, workers, auth, auth_config,
                                      allow_insecure_public, allowed_hosts, extra_args)
    if allow_insecure_public and not is_loopback(host) and not auth:
        warnings.warn(f"MLflow server on {host}:{port} without authentication", stacklevel=2)
    full_env = {**os.environ, **extra_env, **(env or {})}
    log_path = Path(log_file) if log_file else None
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL
    try:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=full_env, start_new_session=True)
    finally:
        if log_path:
            out.close()
    server = TrackingServer(proc, url_for(host, port), cmd, log_path, extra_env)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if not server.running():
            raise RuntimeError(f"mlflow server exited with code {proc.returncode}:\n{server.log_tail()}")
        if healthy(server.url):
            return server
        time.sleep(0.5)
    server.stop()
    raise TimeoutError(f"mlflow server did not answer {server.url}/health within {wait_s:.0f} s:\n{server.log_tail()}")


def serve(
    backend_store_uri: str = DEFAULT_BACKEND,
    artifact_root: str = DEFAULT_ARTIFACTS,
    host: str = "127.0.0.1",
    port: int = 5000,
    *,
    workers: int | None = None,
    auth: bool = False,
    auth_config: str | None = None,
    allow_insecure_public: bool = False,
    allowed_hosts: str | None = None,
    extra_args: Sequence[str] = (),
) -> int:
    """Run the server in the foreground until it exits or Ctrl-C; returns its exit code."""
    cmd, extra_env = _checked_command(backend_store_uri, artifact_root, host, port, workers, auth, auth_config,
                                      allow_insecure_public, allowed_hosts, extra_args)
    url = url_for(host, port)
    print(f"MLflow tracking server: {url}  (backend {backend_store_uri}, artifacts {_absolute_artifacts(artifact_root)})")
    print(f"  runs log here with tracking.uri={url}")
    proc = subprocess.Popen(cmd, env={**os.environ, **extra_env}, start_new_session=True)
    server = TrackingServer(proc, url, cmd, None, extra_env)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        return server.stop() or 0


# ----------------------------------------------------------------------------- command line


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend-store-uri", default=DEFAULT_BACKEND,
                   help="sqlite:///path/mlflow.db (default sqlite:///mlflow.db) or postgresql://user@host:5432/db")
    p.add_argument("--artifact-root", default=DEFAULT_ARTIFACTS,
                   help="where the server stores artifacts it proxies: a directory (default ./mlartifacts) or s3://...")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1; others need --auth or "
                                                       "--allow-insecure-public)")
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--workers", type=int, default=None, help="server processes (default 1 for SQLite, 4 otherwise)")
    p.add_argument("--auth", action="store_true", help="MLflow basic-auth (pip install 'mlflow[auth]'; admin password "
                                                       "from MLFLOW_AUTH_ADMIN_PASSWORD or --auth-config)")
    p.add_argument("--auth-config", default=None, help="basic-auth INI file (MLFLOW_AUTH_CONFIG_PATH)")
    p.add_argument("--allow-insecure-public", action="store_true",
                   help="bind a non-loopback host WITHOUT authentication (prints a warning; firewall it!)")
    p.add_argument("--allowed-hosts", default=None, help="Host headers MLflow accepts (its --allowed-hosts)")


def run_from_args(args: argparse.Namespace) -> int:
    return serve(args.backend_store_uri, args.artifact_root, args.host, args.port, workers=args.workers,
                 auth=args.auth, auth_config=args.auth_config, allow_insecure_public=args.allow_insecure_public,
                 allowed_hosts=args.allowed_hosts)


def add_cli(subparsers) -> argparse.ArgumentParser:
    """Register ``mlflow-server`` on a ``gist-ray`` subparsers object (``set_defaults(func=...)`` included)."""
    p = subparsers.add_parser("mlflow-server", help="run an MLflow tracking server (127.0.0.1 unless --auth)")
    add_arguments(p)
    p.set_defaults(func=run_from_args)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m gist_ray.tracking_server", description=__doc__.splitlines()[0])
    add_arguments(p)
    args = p.parse_args(argv)
    try:
        return run_from_args(args)
    except ConfigError as exc:
        print(f"gist-ray mlflow-server: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
