"""Memory-mapped transcoder files: the same values and the same graph as weights read into
memory, a file never written through a map, and the pages given back after a pass."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import attribution_nb as anb
from attribution_nb.demo import tiny_model
from attribution_nb.io import (
    _written,
    drop_pages,
    map_safetensors,
    read_safetensors,
    save_safetensors,
)
from attribution_nb.transcoders import Transcoder, TranscoderSet

PROMPT = "fact : the capital of the state containing dallas is"


def test_a_map_reads_what_the_file_holds_and_never_writes_it(tmp_path):
    path = tmp_path / "t.safetensors"
    tensors = {
        "a": torch.randn(7, 5),
        "b": torch.arange(3, dtype=torch.int64),
        "empty": torch.zeros(0, 4),
        "h": torch.randn(9).half(),
    }
    save_safetensors(tensors, path, metadata={"activation": "relu"})
    mapped, meta, whole = map_safetensors(path)
    assert whole is not None and meta == {"activation": "relu"}
    for k, t in tensors.items():
        assert mapped[k].dtype == t.dtype and torch.equal(mapped[k], t), k
    before = path.read_bytes()
    mapped["a"][0, 0] = 1e6  # the process's copy changes, the file does not
    assert path.read_bytes() == before
    assert torch.equal(read_safetensors(path)[0]["a"], tensors["a"])


def test_a_bfloat16_file_is_read_into_memory(tmp_path):
    path = tmp_path / "bf.safetensors"
    save_safetensors({"w": torch.randn(4, 3).bfloat16()}, path)
    tensors, _, whole = map_safetensors(path)
    assert whole is None and tensors["w"].dtype == torch.bfloat16


def _rss_file_kb(start: int, length: int) -> int:
    """Resident kB of this process's mapping that covers [start, start + length)."""
    with open("/proc/self/smaps") as f:
        lines = f.read().splitlines()
    for i, line in enumerate(lines):
        head = line.split()[0]
        if "-" in head and all(c in "0123456789abcdef-" for c in head):
            lo, hi = (int(x, 16) for x in head.split("-"))
            if lo <= start < hi:
                for rest in lines[i + 1 :]:
                    if rest.startswith("Rss:"):
                        return int(rest.split()[1])
    raise AssertionError("mapping not found")


def test_mapped_transcoders_give_the_same_graph_and_their_pages_back(tmp_path):
    model = tiny_model("llama", seed=0)
    model.transcoders.save(tmp_path / "tcs")
    eager = TranscoderSet.load(tmp_path / "tcs", mmap=False)
    mapped = TranscoderSet.load(tmp_path / "tcs", mmap=True)
    assert all(tc.mapped for tc in mapped) and not any(tc.mapped for tc in eager)
    graphs = []
    for tcs in (eager, mapped):
        m = anb.ReplacementModel(model.hf_model, model.tokenizer, tcs)
        graphs.append(anb.attribute(m, PROMPT, progress=False))
        m.close()
    a, b = (g.sparse_adjacency for g in graphs)
    assert np.array_equal(a.indptr, b.indptr) and np.array_equal(a.indices, b.indices)
    assert np.array_equal(a.data, b.data)
    assert graphs[0].nodes.node_id.tolist() == graphs[1].nodes.node_id.tolist()

    # after a whole pass over a layer's weights, its pages are given back
    tc = mapped[0]
    if _written(tc._mapped) is None:
        pytest.skip("/proc/self/pagemap cannot be read here: pages are never given back")
    start = tc.W_enc.data_ptr()
    tc.encode(torch.randn(3, tc.d_model))
    touched = _rss_file_kb(start, 1)
    tc.drop_pages()
    assert _rss_file_kb(start, 1) < touched
    assert torch.equal(tc.W_enc, eager[0].W_enc)  # and read again when used


def test_mmap_none_maps_only_large_files(tmp_path, monkeypatch):
    import attribution_nb.transcoders.transcoder as tmod

    tiny_model("llama", seed=0).transcoders[0].save(tmp_path / "t.safetensors")
    assert not Transcoder.load(tmp_path / "t.safetensors").mapped
    monkeypatch.setattr(tmod, "MAP_FROM_BYTES", 1)
    assert Transcoder.load(tmp_path / "t.safetensors").mapped
    assert not Transcoder.load(tmp_path / "t.safetensors", dtype=torch.float64).mapped


def test_a_written_map_keeps_its_pages_and_the_change(tmp_path):
    """A weight changed in place is this process's copy: giving pages back would lose it, so
    nothing is dropped once a tensor of the map was written."""
    tiny_model("llama", seed=0).transcoders[0].save(tmp_path / "t.safetensors")
    tc = Transcoder.load(tmp_path / "t.safetensors", mmap=True)
    if _written(tc._mapped) is None:
        pytest.skip("/proc/self/pagemap cannot be read here: pages are never given back")
    tc.encode(torch.randn(2, tc.d_model))
    assert drop_pages(tc._mapped)  # read only: given back
    with torch.no_grad():
        tc.W_dec[3, 5] = 123.0
    tc.drop_pages()
    assert not drop_pages(tc._mapped)
    assert float(tc.W_dec[3, 5]) == 123.0
    assert float(Transcoder.load(tmp_path / "t.safetensors", mmap=False).W_dec[3, 5]) != 123.0
