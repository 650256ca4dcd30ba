"""attribute on a shared CPU: no more torch threads than the cores other processes leave free."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import torch

import attribution_nb as anb
import attribution_nb.attribution.cpu as cpu
from attribution_nb.attribution.cpu import foreign_load, threads_to_use

PROMPT = "fact : the capital of the state containing dallas is"


@pytest.mark.parametrize(
    "threads, cores, foreign, expected",
    [
        (2, 2, 0.0, 2),  # quiet
        (2, 2, 0.3, 2),  # a core counts as free while less than half of it is busy
        (2, 2, 1.0, 1),  # one busy process: one thread
        (2, 2, 2.0, 1),  # never fewer than one
        (4, 16, 3.0, 4),  # a large machine keeps every thread
        (8, 8, 2.6, 5),
        (2, 2, None, 2),  # the load cannot be read: unchanged
    ],
)
def test_threads_fit_the_free_cores(threads, cores, foreign, expected):
    assert threads_to_use(threads, cores, foreign) == expected


def test_the_load_of_a_busy_process_is_seen():
    """A foreign process spinning for a second shows as about one busy core (this process
    sleeps while it looks)."""
    if foreign_load(0.05) is None:
        pytest.skip("/proc/stat cannot be read here")
    spin = subprocess.Popen(
        [sys.executable, "-c", "import time\nt=time.time()\nwhile time.time()-t<3: pass"]
    )
    try:
        time.sleep(0.5)
        seen = foreign_load(0.5)
    finally:
        spin.kill()
    assert 0.7 <= seen <= 2.5 + (torch.get_num_threads() > 8)


def test_attribute_runs_with_the_threads_left_and_restores_them(llama, monkeypatch):
    monkeypatch.setattr(cpu, "CHECK_FROM_PARAMETERS", 0)
    monkeypatch.setattr(cpu, "foreign_load", lambda seconds=0.05: 1.0)
    monkeypatch.setattr(cpu.os, "cpu_count", lambda: 2)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        seen = []
        original = cpu.torch.set_num_threads
        monkeypatch.setattr(cpu.torch, "set_num_threads", lambda n: (seen.append(n), original(n)))
        graph = anb.attribute(llama, PROMPT, progress=False)
        assert graph.info["cpu_threads"] == 1 and seen == [1, 2]
        assert torch.get_num_threads() == 2
        monkeypatch.setattr(cpu, "CHECK_FROM_PARAMETERS", 10**12)  # a small model: no look
        assert anb.attribute(llama, PROMPT, progress=False).info["cpu_threads"] == 2
    finally:
        torch.set_num_threads(before)
