"""How many CPU threads ``attribute`` runs with on a shared machine.

torch's CPU kernels split every matmul over its threads and wait for all of them at the end.
When another process keeps a core busy, the thread that shares that core runs half the time and
every kernel waits for it: measured on this project's 2-core machine beside one busy process,
``attribute`` on SmolLM2-135M (17 tokens, 2,048 features per layer) took 27.8 s with 2 threads
and 11.9 s with 1, against 9.8 s quiet (``bench/contention.py``).  So before a run on a CPU
model large enough to matter, :func:`fitted_threads` looks at the machine's load for 50 ms and
uses no more threads than the cores other processes leave free, for that run only.

Memory: the row phase never runs the MLPs (their transcoders stand in for them), so once the
capture has run each one :func:`mlp_pages_given_back` returns its weights' pages when those are
a memory-mapped file's (as Hugging Face loads safetensors): on a Qwen3-0.6B that is 1 GB of its
2.4 GB, read again from the page cache by the next forward pass.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from ..architectures.base import get_module
from ..io import drop_file_pages

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
    if before > 1 and _large_local_cpu(model):
        use = threads_to_use(before, os.cpu_count() or before, foreign_load())
    try:
        if use != before:
            torch.set_num_threads(use)
        yield use
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def _large_local_cpu(model) -> bool:
    if model.remote or model.device.type != "cpu":
        return False
    return sum(p.numel() for p in model.hf_model.parameters()) >= CHECK_FROM_PARAMETERS


@contextmanager
def mlp_pages_given_back(model) -> Iterator[list[int]]:
    """For the ``with`` block (``attribute``'s capture): after each MLP of a CPU model of at least
    :data:`CHECK_FROM_PARAMETERS` parameters runs, give back its weights' resident pages where
    they are a file's unwritten pages (:func:`~attribution_nb.io.drop_file_pages`; weights in the
    process's own memory are left alone): the row phase never runs the MLPs, and the capture's
    peak then holds one MLP's weights, not all. Yields a list that ends up holding the bytes given
    back."""
    given: list[int] = [0]
    hooks = []
    if _large_local_cpu(model):
        arch = model.architecture

        def give_back(module, args, output) -> None:
            given[0] += drop_file_pages(p.detach() for p in module.parameters())

        for layer in get_module(model.hf_model, arch.layers):
            hooks.append(get_module(layer, arch.mlp).register_forward_hook(give_back))
    try:
        yield given
    finally:
        for h in hooks:
            h.remove()
