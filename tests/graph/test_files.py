"""Graph files are checked before they are trusted: property-based round trips and mutated
files (any mutation loads to the same graph or raises this package's ValueError naming the
file), and one crafted file per check."""

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.numpy import save_file

import attribution_nb as anb

SETTINGS = dict(
    deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)


@pytest.fixture(scope="module")
def small(llama_graph):
    return llama_graph.prune(0.6, 0.8)


@pytest.fixture(scope="module")
def saved(small, tmp_path_factory):
    path = tmp_path_factory.mktemp("graph") / "g.graph"
    small.save(path)
    return path.read_bytes()


def _same(a, b) -> None:
    pd.testing.assert_frame_equal(a.nodes, b.nodes)
    pd.testing.assert_frame_equal(a.logits, b.logits)
    assert (a.sparse_adjacency != b.sparse_adjacency).nnz == 0
    assert (a.prompt, a.tokens, a.token_ids, a.supernodes, a.info) == (
        b.prompt,
        b.tokens,
        b.token_ids,
        b.supernodes,
        b.info,
    )


@settings(max_examples=40, **SETTINGS)
@given(nt=st.floats(0.0, 1.0), et=st.floats(0.0, 1.0), label=st.text(max_size=20))
def test_save_then_load_round_trips(llama_graph, tmp_path, nt, et, label):
    g = llama_graph.prune(nt, et)
    g.nodes.loc[0, "label"] = label
    g.save(tmp_path / "r.graph")
    _same(anb.AttributionGraph.load(tmp_path / "r.graph"), g)


@settings(max_examples=1000, **SETTINGS)
@given(data=st.data())
def test_a_mutated_file_loads_unchanged_or_raises_naming_the_file(small, saved, tmp_path, data):
    blob = bytearray(saved)
    how = data.draw(st.sampled_from(["flip", "truncate", "header"]))
    if how == "truncate":
        blob = blob[: data.draw(st.integers(0, len(blob) - 1))]
    else:
        header_end = 8 + int.from_bytes(saved[:8], "little")
        hi = header_end - 1 if how == "header" else len(blob) - 1
        for _ in range(data.draw(st.integers(1, 3))):
            at = data.draw(st.integers(0, hi))
            blob[at] = data.draw(st.integers(0, 255))
    path = tmp_path / "mutant.graph"
    path.write_bytes(bytes(blob))
    try:
        loaded = anb.AttributionGraph.load(path)
    except ValueError as err:
        assert "mutant.graph" in str(err), str(err)
        return
    _same(loaded, small)


def _craft(small, tmp_path, change, checksum: bool = True):
    """Save, then rewrite the file with ``change(tensors, meta)`` applied and its checksum recomputed
    (as a careful forger would), so the meaning checks themselves are what refuses it."""
    from safetensors import safe_open

    from attribution_nb.graph.files import _checksum

    small.save(tmp_path / "ok.graph")
    with safe_open(str(tmp_path / "ok.graph"), "np") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        meta = json.loads(f.metadata()["attribution_nb.graph"])
    del meta["checksum"]
    change(tensors, meta)
    if checksum:
        meta["checksum"] = _checksum(tensors, meta)
    save_file(
        tensors,
        str(tmp_path / "crafted.graph"),
        metadata={"attribution_nb.graph": json.dumps(meta)},
    )
    return tmp_path / "crafted.graph"


def _set(column, i, value):
    def change(tensors, meta):
        meta["nodes"][column][i] = value

    return change


def _nan_edge(tensors, meta):
    tensors["data"][0] = np.nan


def _backward_edge(tensors, meta):
    tensors["indices"][0] = (
        tensors["indptr"].shape[0] - 2
    )  # the last node (a logit) as the first edge's source


def _bad_probability(tensors, meta):
    tensors["probability"][0] = 1.5


def _int_data(tensors, meta):
    tensors["data"] = tensors["data"].astype(np.int32)


@pytest.mark.parametrize(
    "change, says",
    [
        (_set("node_id", 0, "f:L9:P9:9"), "disagrees with its row"),
        (_set("kind", 0, "error"), "disagrees with its row"),
        (_set("node_id", 1, "<img src=x onerror=alert(1)>"), "unknown node id"),
        (_set("kind", 0, "magic"), r"node column\(s\) \['kind'\]"),
        (_set("node_id", 0, "f:L0:P01:5"), "unknown node id"),
        (_set("layer", 0, 1.5), r"\['layer'\]"),
        (_set("token_id", -1, True), r"\['token_id'\]"),
        (lambda t, m: m.update(n_layers=10**9), "n_layers"),
        (lambda t, m: m.update(prompt=123), "'prompt' must be a str"),
        (lambda t, m: m["supernodes"].update(x=["f:L9:P9:9"]), "supernode 'x'"),
        (
            lambda t, m: t["activation"].__setitem__(0, np.nan),
            "activations and influences must be finite",
        ),
        (_nan_edge, "non-finite edge weights"),
        (_backward_edge, "(does not run forward|a logit node is the source)"),
        (_bad_probability, r"probabilities must be in \[0, 1\]"),
        (_int_data, "tensor 'data' has dtype int32"),
    ],
)
def test_each_inconsistency_is_named(small, tmp_path, change, says):
    path = _craft(small, tmp_path, change)
    with pytest.raises(ValueError, match=f"crafted.graph.*{says}"):
        anb.AttributionGraph.load(path)


def test_a_graph_file_without_its_checksum_is_refused(small, tmp_path):
    path = _craft(small, tmp_path, lambda t, m: None, checksum=False)
    with pytest.raises(ValueError, match="crafted.graph: the graph has no checksum"):
        anb.AttributionGraph.load(path)


def _mutations(meta: dict, rng) -> list:
    """Edits of a graph header's fields: every node column, the logits, tokens, numbers, supernodes."""
    hostile = [
        None,
        True,
        -1,
        1.5,
        2**70,
        float("nan"),
        "",
        "x\n",
        "١",
        [],
        {},
        "f:L0:P1:1\n",
        10**9,
        "0",
    ]
    out = []
    n = len(meta["nodes"]["node_id"])
    for col in meta["nodes"]:
        for i in rng.choice(n, size=min(n, 4), replace=False):
            for v in hostile:
                out.append(("nodes", col, int(i), v))
    for key in (
        "prompt",
        "tokens",
        "token_ids",
        "n_layers",
        "n_nodes",
        "model_name",
        "info",
        "supernodes",
    ):
        for v in hostile:
            out.append((key, None, None, v))
    for i in range(len(meta["token_ids"])):
        for v in (-1, True, 2**40, "1"):
            out.append(("token_ids", None, i, v))
    for v in hostile:
        out.append(("logits", "token_id", 0, v))
        out.append(("logits", "token", 0, v))
    return out


def _apply(meta: dict, m) -> None:
    where, col, i, v = m
    if where == "nodes":
        meta["nodes"][col][i] = v
    elif where == "logits":
        meta["logits"][col][i] = v
    elif i is not None:
        meta[where][i] = v
    else:
        meta[where] = v


@pytest.mark.parametrize("checksum", [True, False], ids=["checksum-recomputed", "checksum-dropped"])
def test_header_mutations_are_refused_by_name_or_load_equal(small, tmp_path, checksum):
    """Every edit of the header (≥ 250 per mode, checksum recomputed or dropped) gives the package's
    ValueError naming the file, or a graph equal to the original one (an edit that changes nothing)."""
    from safetensors import safe_open

    from attribution_nb.graph.files import _checksum

    small.save(tmp_path / "ok.graph")
    with safe_open(str(tmp_path / "ok.graph"), "np") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        original = json.loads(f.metadata()["attribution_nb.graph"])
    mutations = _mutations(original, np.random.default_rng(0))
    assert len(mutations) >= 250
    outcomes = {"refused": 0, "equal": 0}
    for m in mutations:
        meta = json.loads(json.dumps(original))
        del meta["checksum"]
        _apply(meta, m)
        if checksum:
            meta["checksum"] = _checksum(tensors, meta)
        path = tmp_path / "m.graph"
        save_file(tensors, str(path), metadata={"attribution_nb.graph": json.dumps(meta)})
        try:
            loaded = anb.AttributionGraph.load(path)
        except ValueError as err:
            assert "m.graph" in str(err), (m, str(err))
            outcomes["refused"] += 1
            continue
        loaded.prune(
            0.8, 0.98
        )  # it works, and only free text may differ: labels, names, the prompt
        if m[1] == "label" or m[0] in ("model_name", "prompt", "info"):
            rest = loaded.nodes.drop(columns="label"), small.nodes.drop(columns="label")
            pd.testing.assert_frame_equal(*rest)
            assert (
                loaded.sparse_adjacency != small.sparse_adjacency
            ).nnz == 0 and loaded.tokens == small.tokens
            outcomes["free text"] = outcomes.get("free text", 0) + 1
            continue
        _same(loaded, small)
        outcomes["equal"] += 1
    assert outcomes["refused"] > 0.8 * len(mutations), outcomes


def test_overlapping_tensors_are_refused_before_reading(tmp_path):
    header = {
        "a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
        "b": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]},
        "__metadata__": {"attribution_nb.graph": "{}"},
    }
    raw = json.dumps(header).encode()
    (tmp_path / "o.graph").write_bytes(len(raw).to_bytes(8, "little") + raw + bytes(24))
    with pytest.raises(ValueError, match="o.graph.*tensors 'a' and 'b' overlap"):
        anb.AttributionGraph.load(tmp_path / "o.graph")


def test_a_large_non_graph_file_is_refused_without_reading_its_tensors(tmp_path, monkeypatch):
    save_file(
        {"weights": np.zeros((2048, 4096), dtype=np.float32)}, str(tmp_path / "model.safetensors")
    )  # 32 MB
    reads = []
    real = np.fromfile
    monkeypatch.setattr(np, "fromfile", lambda *a, **k: reads.append(a) or real(*a, **k))
    with pytest.raises(
        ValueError, match="model.safetensors is a safetensors file but not an attribution_nb graph"
    ):
        anb.AttributionGraph.load(tmp_path / "model.safetensors")
    assert reads == []
