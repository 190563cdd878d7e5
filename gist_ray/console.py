"""What the terminal shows: gist-ray's own lines (one per epoch, one per finished trial, the results) on stdout;
the logs of Ray, MLflow, Optuna and Python warnings in a file under ``<output_dir>/logs/``; errors in full.

``gist-ray ... --verbose`` leaves every library's console output as it was (and still writes the file). Ray's
worker processes print to Ray's session log files, which :func:`link_ray_logs` links beside that file. A
:class:`Progress` bar on stderr marks steps that take long (backbone pretraining, decoding images, a refit): redrawn
in place on a terminal; elsewhere (a log, CI) one line every half minute once the step has run for ten seconds.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

# libraries whose console output is noise for a researcher on a successful run; shown with --verbose
QUIET = ("ray", "mlflow", "optuna", "alembic", "urllib3", "filelock", "matplotlib", "PIL", "py.warnings")
# what still reaches the terminal from them without --verbose: Ray's errors carry a failed trial's traceback
CONSOLE_LEVEL = {"ray": logging.ERROR}
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


@dataclass
class _State:
    verbose: bool = False
    log_file: Path | None = None
    handler: logging.Handler | None = None
    saved: list[tuple[Any, str, Any]] = field(default_factory=list)  # (object, attribute, old value) to restore
    capture_warnings: bool = False


_state = _State()


def set_verbose(on: bool) -> None:
    _state.verbose = bool(on)


def verbose() -> bool:
    return _state.verbose


def log_file() -> Path | None:
    """The current command's log file (None before :func:`start`)."""
    return _state.log_file


def log_dir_for(output_dir: str) -> Path:
    """``<output_dir>/logs``; with remote storage (``s3://...``) a local ``logs`` folder."""
    return Path("logs") if "://" in output_dir else Path(output_dir) / "logs"


class _GistRayOnly(logging.Filter):
    """On the console without --verbose: gist-ray's own warnings (its loggers, ``GistRayWarning``), and errors of
    libraries outside :data:`QUIET`."""

    def filter(self, record: logging.LogRecord) -> bool:
        top = record.name.split(".")[0]
        if top == "gist_ray":
            return True
        if record.name == "py.warnings":
            return "GistRayWarning" in record.getMessage()
        return top not in QUIET and record.levelno >= logging.ERROR


def _configure_libraries_now() -> None:
    """MLflow, Ray and Optuna install their console handlers when first imported (Optuna: when it first logs);
    let them do it now, so :func:`start` adjusts those handlers instead of being overwritten by them later. The
    commands that call :func:`start` import all three anyway."""
    import mlflow  # noqa: F401
    import optuna
    import ray  # noqa: F401

    optuna.logging.get_verbosity()


def _save(obj: Any, attr: str) -> None:
    _state.saved.append((obj, attr, getattr(obj, attr)))


def start(output_dir: str, name: str) -> Path:
    """Send library logs to ``<output_dir>/logs/<name>-<time>.log`` until :func:`stop`; returns the file."""
    stop()
    _configure_libraries_now()
    directory = log_dir_for(output_dir)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.log"
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter(FORMAT))
    _state.log_file, _state.handler = path, handler
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    root = logging.getLogger()
    _save(root, "level")
    root.setLevel(min(root.level or logging.WARNING, logging.INFO))
    root.addHandler(handler)
    for name_ in QUIET:
        logger = logging.getLogger(name_)
        if not logger.propagate:  # it has its own handlers: give it the file too
            logger.addHandler(handler)
        if _state.verbose:
            continue
        _save(logger, "level")
        if logger.level in (logging.NOTSET,) or logger.level > logging.INFO:
            logger.setLevel(logging.INFO)  # into the file; the console handlers below decide what is shown
        for h in logger.handlers:
            if h is not handler and not isinstance(h, logging.FileHandler):
                _save(h, "level")
                h.setLevel(max(h.level, CONSOLE_LEVEL.get(name_, logging.CRITICAL + 1)))
    console = logging.StreamHandler(sys.stderr)  # root's: gist-ray's own warnings (else only in the file)
    console.setLevel(logging.WARNING)
    console.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root.addHandler(console)
    _state.saved.append((root, "_gist_ray_console", console))
    if not _state.verbose:
        console.addFilter(_GistRayOnly())
        logging.captureWarnings(True)  # Python warnings (torch, optuna, ...) into the file
        _state.capture_warnings = True
    return path


def stop() -> None:
    """Undo :func:`start` (library loggers as they were); safe to call twice."""
    root = logging.getLogger()
    for obj, attr, old in reversed(_state.saved):
        if attr == "_gist_ray_console":
            root.removeHandler(old)
        else:
            setattr(obj, attr, old)
    _state.saved.clear()
    if _state.handler is not None:
        for name_ in ("", *QUIET):
            logging.getLogger(name_).removeHandler(_state.handler)
        _state.handler.close()
    if _state.capture_warnings:
        logging.captureWarnings(False)
        _state.capture_warnings = False
    _state.handler = None


def link_ray_logs(logs_dir: str | None) -> Path | None:
    """Link Ray's session log folder (driver, raylet, every worker's stdout/stderr) next to this command's log
    file as ``<log>.ray``; returns the link (None when there is no log file or no local session)."""
    if _state.log_file is None or not logs_dir or not Path(logs_dir).is_dir():
        return None
    link = _state.log_file.with_suffix(".ray")
    try:
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(Path(logs_dir).resolve(), target_is_directory=True)
    except OSError:
        return None
    logging.getLogger(__name__).info("Ray session logs: %s", logs_dir)
    return link


def where_logs_are() -> str:
    """One line telling where the full log is ("" when none)."""
    if _state.log_file is None:
        return ""
    ray_link = _state.log_file.with_suffix(".ray")
    extra = f" (Ray's process logs: {ray_link})" if ray_link.is_symlink() else ""
    return f"log: {_state.log_file}{extra}"


class Progress:
    """A progress bar on ``stream`` (stderr): in place on a terminal; elsewhere a line every ``every`` seconds once
    the step has taken ``long_after`` seconds, and a closing line if any was printed. Thread-safe."""

    def __init__(self, total: int, label: str, stream: TextIO | None = None, long_after: float = 10.0,
                 every: float = 30.0, min_interval: float = 0.2) -> None:
        self.total, self.label = max(1, int(total)), label
        self.stream = stream or sys.stderr
        self.long_after, self.every, self.min_interval = long_after, every, min_interval
        self.n, self.note = 0, ""
        self.t0 = time.monotonic()
        self.last_draw = -1e9
        self.drawn = False
        self.lock = threading.Lock()
        try:
            self.tty = self.stream.isatty()
        except (AttributeError, ValueError):
            self.tty = False

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def text(self) -> str:
        frac = min(1.0, self.n / self.total)
        bar = "#" * int(frac * 24)
        note = f"  {self.note}" if self.note else ""
        return (f"{self.label} [{bar:<24}] {self.n}/{self.total} ({frac:.0%}, "
                f"{time.monotonic() - self.t0:.0f} s){note}")

    def update(self, n: int = 1, note: str | None = None) -> None:
        with self.lock:
            self.n += n
            if note is not None:
                self.note = note
            now = time.monotonic()
            if self.tty:
                if now - self.last_draw >= self.min_interval or self.n >= self.total:
                    self._write("\r" + self.text() + "\x1b[K")
                    self.last_draw = now
            elif now - self.t0 >= self.long_after and now - self.last_draw >= self.every:
                self._write(self.text() + "\n")
                self.last_draw = now

    def close(self) -> None:
        with self.lock:
            if self.tty and self.drawn:
                self._write("\r" + self.text() + "\x1b[K\n")
            elif self.drawn:
                self._write(self.text() + "  done\n")
            self.drawn = False

    def _write(self, s: str) -> None:
        try:
            self.stream.write(s)
            self.stream.flush()
            self.drawn = True
        except (OSError, ValueError):  # a closed stream never stops the work
            pass
