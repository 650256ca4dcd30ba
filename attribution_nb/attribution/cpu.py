"""How many CPU threads ``attribute`` runs with on a shared machine.

torch's CPU kernels split every matmul over its threads and wait for all of them at the end.
When another process keeps a core busy, the thread that shares that core runs half the time and
every kernel waits for it: measured on this project's 2-core machine beside one busy process,
``attribute`` on SmolLM2-135M (17 tokens, 2,048 features per layer) took 27.8 s with 2 threads
and 11.9 s with 1, against 9.8 s quiet (``bench/contention.py``).  So before a run on a CPU
model large enough to matter, :func:`fitted_threads` looks at the machine's load for 50 ms and
uses no more threads than the cores other processes leave free, for that run only.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch

#: CPU models with at least this many parameters look at the load first (smaller runs take
#: well under a second, so a 50 ms look would cost more than it can save)
CHECK_FROM_PARAMETERS = 20_000_000
#: how long the look lasts (seconds)
LOOK_SECONDS = 0.05


def foreign_load(seconds: float = LOOK_SECONDS) -> float | None:
    """How many cores other processes keep busy, over ``seconds`` while this one sleeps (from
    ``/proc/stat``); None where that cannot be read (not Linux)."""

    def busy() -> float:
        with open("/proc/stat") as f:
            v = [float(x) for x in f.readline().split()[1:]]
        return sum(v) - v[3] - v[4]  # not idle, not waiting for I/O

    try:
        b0, t0, own0 = busy(), time.perf_counter(), time.process_time()
        time.sleep(seconds)
        b1, t1, own1 = busy(), time.perf_counter(), time.process_time()
    except (OSError, ValueError, IndexError):
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    return max(0.0, ((b1 - b0) / ticks - (own1 - own0)) / (t1 - t0))


def threads_to_use(threads: int, cores: int, foreign: float | None) -> int:
    """No more than ``threads``, nor than the cores that ``foreign`` busy cores leave (a core
    counts as free while less than half of it is busy), and at least one."""
    if foreign is None:
        return threads
    return max(1, min(threads, int(cores - foreign + 0.5)))


@contextmanager
def fitted_threads(model) -> Iterator[int]:
    """torch's thread count, for the ``with`` block, lowered to the cores other processes leave
    free (:func:`threads_to_use`) when ``model`` runs here on a CPU and has at least
    :data:`CHECK_FROM_PARAMETERS` parameters; yields the count used and restores it after."""
    before = torch.get_num_threads()
    use = before
    if before > 1 and not model.remote and model.device.type == "cpu":
        if sum(p.numel() for p in model.hf_model.parameters()) >= CHECK_FROM_PARAMETERS:
            use = threads_to_use(before, os.cpu_count() or before, foreign_load())
    try:
        if use != before:
            torch.set_num_threads(use)
        yield use
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)
