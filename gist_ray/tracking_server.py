"""``gist-ray mlflow-server``: an MLflow tracking server that is safe to leave running.

SQLite or PostgreSQL metadata, artifacts proxied by the server (``--serve-artifacts``: clients upload through
HTTP and need no credentials for the artifact root). Binding: 127.0.0.1 by default. An MLflow server has no
authentication of its own, so a host that is not a loopback address (``0.0.0.0``, ``::``, a LAN or VPC address)
is refused unless either

* ``auth``: MLflow's basic-auth app (``pip install 'mlflow[auth]'``, an admin password from
  ``MLFLOW_AUTH_ADMIN_PASSWORD`` or the ``auth_config`` INI file, and TLS or an SSH tunnel in front), or
* ``allow_insecure_public``: an explicit opt-out that prints a loud warning (a private network whose firewall
  already limits who can connect).

Every check (host, backend URI, database driver, auth extra, free port) runs before any process starts. On a
gist-ray cluster every MLflow write comes from the head node, so loopback plus an SSH tunnel is enough
(docs/cluster.md). Also ``python -m gist_ray.tracking_server`` (used by cluster.yaml).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import ipaddress
import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from gist_ray.errors import ConfigError

BACKEND_SCHEMES = ("sqlite", "postgresql")
JOBS_ENV = "MLFLOW_SERVER_ENABLE_JOB_EXECUTION"
PG_DRIVERS = {"psycopg2": "psycopg2", "psycopg": "psycopg", "pg8000": "pg8000"}

INSECURE_WARNING = """
!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!
!! WARNING: MLflow tracking server on {host}:{port} WITHOUT AUTHENTICATION (--allow-insecure-public).
!! Anyone who can reach this address can read, change and delete every experiment, run and artifact.
!! Make sure a firewall / security group limits who can connect, or use --auth, or bind 127.0.0.1 and
!! reach it through an SSH tunnel (ssh -L 5000:127.0.0.1:5000 <head>).
!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!
"""


@dataclass(frozen=True)
class ServerOptions:
    """Everything ``mlflow server`` is started with."""

    backend_store_uri: str = "sqlite:///mlflow.db"
    artifact_root: str = "./mlartifacts"
    host: str = "127.0.0.1"
    port: int = 5000
    workers: int | None = None  # default: 1 for SQLite (it serialises writers anyway), 4 otherwise
    auth: bool = False
    auth_config: str | None = None
    allow_insecure_public: bool = False
    allowed_hosts: str | None = None

    @property
    def public_without_auth(self) -> bool:
        return not is_loopback(self.host) and not self.auth


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


def _absolute(uri_or_path: str) -> str:
    if uri_or_path.startswith("sqlite:///") and not uri_or_path.startswith("sqlite:////"):
        return "sqlite:///" + str(Path(uri_or_path[len("sqlite:///"):]).expanduser().resolve())
    return uri_or_path if ":" in uri_or_path.split("/")[0] else str(Path(uri_or_path).expanduser().resolve())


def server_command(opts: ServerOptions) -> list[str]:
    """The ``mlflow server`` argv for ``opts`` after the checks that need nothing but the options."""
    check_backend_store_uri(opts.backend_store_uri)
    if not 0 < int(opts.port) < 65536:
        raise ConfigError(f"port {opts.port}: must be in 1..65535")
    if opts.public_without_auth and not opts.allow_insecure_public:
        raise ConfigError(
            f"host {opts.host!r} is not a loopback address, and an MLflow server has no authentication of its own: "
            "anyone who can reach it could read and delete every run. Bind 127.0.0.1 and use an SSH tunnel "
            "(the default), or pass --auth (MLflow basic-auth; pip install 'mlflow[auth]'), or, on a network "
            "whose firewall already limits access, --allow-insecure-public.")
    workers = opts.workers or (1 if opts.backend_store_uri.startswith("sqlite") else 4)
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", _absolute(opts.backend_store_uri),
           "--serve-artifacts", "--artifacts-destination", _absolute(opts.artifact_root),
           "--host", opts.host, "--port", str(int(opts.port)), "--workers", str(int(workers))]
    if opts.auth:
        cmd += ["--app-name", "basic-auth"]
    if opts.allowed_hosts:
        cmd += ["--allowed-hosts", opts.allowed_hosts]
    return cmd


def prepare(opts: ServerOptions) -> tuple[list[str], dict[str, str]]:
    """Every check, including those that need the machine (database driver, auth extra, a free port); creates
    the SQLite and artifact folders; returns the argv and the extra environment. Warns on stderr when the
    server will be public without authentication."""
    cmd = server_command(opts)
    # MLflow 3's job runner (huey consumers for GenAI judges and trace rollups) starts ~8 more processes that each
    # import mlflow; gist-ray submits no jobs, so the server starts in ~11 s instead of ~29 s on 2 cores. A user
    # who wants MLflow jobs sets MLFLOW_SERVER_ENABLE_JOB_EXECUTION=true.
    env: dict[str, str] = {JOBS_ENV: os.environ.get(JOBS_ENV, "false")}
    uri = opts.backend_store_uri
    if uri.lower().startswith("postgresql"):
        driver = uri.split(":", 1)[0].partition("+")[2] or "psycopg2"
        module = PG_DRIVERS.get(driver, driver)
        if importlib.util.find_spec(module) is None:
            raise ConfigError(f"{uri.split('@')[-1]}: the PostgreSQL driver {module!r} is not installed "
                              "(pip install psycopg2-binary)")
    if opts.auth:
        if importlib.util.find_spec("flask_wtf") is None:
            raise ConfigError("--auth needs MLflow's basic-auth app: pip install 'mlflow[auth]'")
        if opts.auth_config:
            if not Path(opts.auth_config).is_file():
                raise ConfigError(f"auth_config {opts.auth_config}: file not found")
            env["MLFLOW_AUTH_CONFIG_PATH"] = str(Path(opts.auth_config).resolve())
    elif opts.auth_config:
        raise ConfigError("auth_config is only used with auth (--auth)")
    try:  # fail here rather than health-check some other server already listening on the port
        family = socket.AF_INET6 if ":" in opts.host.strip("[]") else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((opts.host.strip("[]"), int(opts.port)))
    except OSError as exc:
        raise ConfigError(f"cannot listen on {opts.host}:{opts.port}: {exc.strerror or exc} "
                          "(another server running?)") from None
    if uri.startswith("sqlite:///"):
        Path(_absolute(uri)[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    if "://" not in opts.artifact_root:
        Path(_absolute(opts.artifact_root)).mkdir(parents=True, exist_ok=True)
    if opts.allow_insecure_public and opts.public_without_auth:
        print(INSECURE_WARNING.format(host=opts.host, port=opts.port), file=sys.stderr, flush=True)
    return cmd, env


def url_for(host: str, port: int) -> str:
    """The URL local clients use: a wildcard bind is reached through loopback."""
    h = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host.strip("[]"), host.strip("[]"))
    return f"http://[{h}]:{port}" if ":" in h else f"http://{h}:{port}"


def serve(opts: ServerOptions) -> int:
    """Run the server in the foreground until it exits or Ctrl-C; returns its exit code."""
    cmd, env = prepare(opts)
    url = url_for(opts.host, opts.port)
    print(f"MLflow tracking server: {url}  (backend {opts.backend_store_uri}, artifacts {_absolute(opts.artifact_root)})")
    print(f"  runs log here with tracking.uri={url}")
    proc = subprocess.Popen(cmd, env={**os.environ, **env})
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        return proc.wait() or 0


# ----------------------------------------------------------------------------- command line


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = ServerOptions()
    p.add_argument("--backend-store-uri", default=d.backend_store_uri,
                   help="sqlite:///path/mlflow.db (default sqlite:///mlflow.db) or postgresql://user@host:5432/db")
    p.add_argument("--artifact-root", default=d.artifact_root,
                   help="where the server stores artifacts it proxies: a directory (default ./mlartifacts) or s3://...")
    p.add_argument("--host", default=d.host, help="bind address (default 127.0.0.1; others need --auth or "
                                                  "--allow-insecure-public)")
    p.add_argument("--port", type=int, default=d.port)
    p.add_argument("--workers", type=int, default=None, help="server processes (default 1 for SQLite, 4 otherwise)")
    p.add_argument("--auth", action="store_true", help="MLflow basic-auth (pip install 'mlflow[auth]'; admin password "
                                                       "from MLFLOW_AUTH_ADMIN_PASSWORD or --auth-config)")
    p.add_argument("--auth-config", default=None, help="basic-auth INI file (MLFLOW_AUTH_CONFIG_PATH)")
    p.add_argument("--allow-insecure-public", action="store_true",
                   help="bind a non-loopback host WITHOUT authentication (prints a warning; firewall it!)")
    p.add_argument("--allowed-hosts", default=None, help="Host headers MLflow accepts (its --allowed-hosts)")


def options_from_args(args: argparse.Namespace) -> ServerOptions:
    return ServerOptions(**{f.name: getattr(args, f.name) for f in dataclasses.fields(ServerOptions)})


def run(args: argparse.Namespace) -> int:
    """The ``gist-ray mlflow-server`` command."""
    return serve(options_from_args(args))


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m gist_ray.tracking_server", description=__doc__.splitlines()[0])
    add_arguments(p)
    try:
        return run(p.parse_args(argv))
    except ConfigError as exc:
        print(f"gist-ray mlflow-server: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
