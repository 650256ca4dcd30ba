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


def _resident_pages(t: torch.Tensor) -> int:
    """How many of a tensor's whole pages are resident (``/proc/self/pagemap``, bit 63)."""
    import mmap

    import numpy as np

    page = mmap.PAGESIZE
    lo = -(-t.data_ptr() // page)
    hi = (t.data_ptr() + t.numel() * t.element_size()) // page
    with open("/proc/self/pagemap", "rb") as f:
        f.seek(lo * 8)
        entries = np.frombuffer(f.read((hi - lo) * 8), dtype=np.uint64)
    return int(((entries >> np.uint64(63)) & np.uint64(1)).sum())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="pages are checked on Linux")
def test_only_a_file_s_unwritten_pages_are_given_back(tmp_path):
    """Memory-mapped weights read as they were after their pages are given back (they come back
    from the file); a tensor in the process's own memory, or a mapped one written in place, is
    never given back (the data would be lost)."""
    from safetensors.torch import load_file, save_file

    from attribution_nb.io import drop_file_pages

    a, b = torch.randn(512, 1024), torch.randn(512, 1024)
    save_file({"a": a, "b": b}, tmp_path / "w.safetensors")
    mapped = load_file(tmp_path / "w.safetensors")  # safetensors maps the file
    assert torch.equal(mapped["a"], a) and _resident_pages(mapped["a"]) > 0
    given = drop_file_pages([mapped["a"]])
    assert given >= 2 * 2**20 - 2 * 4096 and _resident_pages(mapped["a"]) == 0
    assert torch.equal(mapped["a"], a) and torch.equal(mapped["b"], b)  # read again from the file
    own = a.clone()
    assert drop_file_pages([own]) == 0 and torch.equal(own, a)
    mapped["b"].mul_(2)
    assert drop_file_pages([mapped["b"]]) == 0 and torch.equal(mapped["b"], 2 * b)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="pages are checked on Linux")
def test_the_capture_gives_back_the_mlp_pages_and_the_graph_is_the_same(tmp_path, monkeypatch):
    """A model loaded from its safetensors file (mapped): attribute gives back each MLP's pages
    once the capture ran it, the rows never need them, and the graph is the same bit for bit."""
    from attribution_nb.demo import tiny_model

    tiny = tiny_model("llama", seed=3, d_features=128)
    tiny.hf_model.save_pretrained(tmp_path)
    tiny.tokenizer.save_pretrained(tmp_path)
    tiny.transcoders.save(tmp_path / "tc")
    model = anb.load_model(str(tmp_path), transcoders=str(tmp_path / "tc"))
    kept = anb.attribute(model, PROMPT, progress=False)
    assert kept.info["mlp_pages_given_back_mb"] == 0  # a small model: nothing looked at
    monkeypatch.setattr(cpu, "CHECK_FROM_PARAMETERS", 0)
    given = anb.attribute(model, PROMPT, progress=False)
    mlp = model.hf_model.model.layers[0].mlp.down_proj.weight
    assert given.info["mlp_pages_given_back_mb"] > 0 and _resident_pages(mlp) == 0
    assert (given.sparse_adjacency != kept.sparse_adjacency).nnz == 0
    assert given.nodes.equals(kept.nodes)
