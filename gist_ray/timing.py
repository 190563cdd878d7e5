"""Phase timings for the fixed-cost benchmark: where the seconds of a run or a sweep go outside its epochs.

Off unless ``GIST_RAY_TIMINGS`` names a file; then every :func:`phase` appends one JSON line
``{"phase", "start", "end", "pid"}`` (wall-clock seconds since the epoch, so lines from the driver, Ray actors and
workers line up). Ray workers inherit the variable. Costs nothing measurable when off.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from typing import Iterator

ENV = "GIST_RAY_TIMINGS"


def record(name: str, start: float, end: float) -> None:
    path = os.environ.get(ENV)
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"phase": name, "start": start, "end": end, "pid": os.getpid()}) + "\n")


@contextlib.contextmanager
def phase(name: str) -> Iterator[None]:
    """Time the block as ``name`` (when timings are on)."""
    if not os.environ.get(ENV):
        yield
        return
    start = time.time()
    try:
        yield
    finally:
        record(name, start, time.time())


def mark(name: str) -> None:
    """An instant (start == end), e.g. the moment a process got past its imports."""
    if os.environ.get(ENV):
        now = time.time()
        record(name, now, now)
