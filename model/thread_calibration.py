"""How many intra-op threads a backend decodes fastest with on this machine: measured once, then remembered.

A small decoder's step is bound by per-node overhead and by synchronising threads, not by arithmetic, and more
threads can make it slower: on a 2-core Intel Xeon the INT8 export generated 5.5x faster than real time with one
ONNX Runtime thread, 3.8x with two. So where nobody chose a count, the backend times a few decoding steps at each
candidate (1, 2, 4, ... up to the cores) and keeps the fastest. The choice is logged and cached per machine and
model shape in the cache folder (`threads.json`); MUSICOPS_THREADS, or a count the caller passes, overrides it.
"""

from __future__ import annotations

import json
import logging
import os
import platform
from collections.abc import Callable
from pathlib import Path

from model.atomic_io import atomic_file
from model.cache_dir import cache_dir
from model.errors import ModelInputError

THREADS_ENV = "MUSICOPS_THREADS"
log = logging.getLogger(__name__)


def candidates(cores: int | None = None) -> list[int]:
    """Thread counts worth timing: powers of two up to the cores, and the cores themselves."""
    cores = max(1, cores or os.cpu_count() or 1)
    counts = {1 << i for i in range(cores.bit_length()) if 1 << i <= cores} | {cores}
    return sorted(counts)


def machine() -> str:
    """This machine as the cache knows it: its CPU model and logical cores."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model} x{os.cpu_count()}"


def cache_file() -> Path:
    return cache_dir() / "threads.json"


def _override() -> int | None:
    value = os.environ.get(THREADS_ENV)
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise ModelInputError(f"{THREADS_ENV} must be a positive whole number of threads, got {value!r}")
    return int(value)


def calibrated_threads(key: str, seconds_per_step: Callable[[int], float], cores: int | None = None) -> int:
    """The fastest thread count for the model `key` names (its backend and shape) on this machine: the
    override, else the cached choice, else measured now with `seconds_per_step(threads)` and cached."""
    override = _override()
    if override is not None:
        return override
    entry = f"{machine()} | {key}"
    path = cache_file()
    try:
        cached = json.loads(path.read_text())
    except (OSError, ValueError):
        cached = {}
    if not isinstance(cached, dict):
        cached = {}
    if isinstance(cached.get(entry), dict) and isinstance(cached[entry].get("threads"), int):
        return cached[entry]["threads"]
    timings = {threads: seconds_per_step(threads) for threads in candidates(cores)}
    best = min(timings, key=timings.__getitem__)
    measured = ", ".join(f"{n}: {1000 * s:.2f} ms" for n, s in timings.items())
    log.info("decoding threads for %s: %d (a step with %s)", key, best, measured)
    cached[entry] = {"threads": best, "seconds_per_step": {str(n): s for n, s in timings.items()}}
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as handle:
        handle.write(json.dumps(cached, indent=1, sort_keys=True).encode())
    return best
