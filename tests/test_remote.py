"""nnsight remote execution, through nnsight's own local simulation of a server.

``remote="local"`` serializes every request exactly as for NDIF, deserializes it with this
project's modules hidden (as on a server that has torch, numpy and nnsight but not
attribution_nb), and runs it.  So these tests check that attribution's requests carry all
the code they call, that they carry neither the model's weights nor the transcoders, and
that the graph is the one a local run builds.  (No test reaches NDIF itself: no network.)
"""

import sys

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import PROMPT

import attribution_nb as anb
from attribution_nb.demo import tiny_model
from attribution_nb import attention
from attribution_nb.attention import _loadings as loadings_on_server
from attribution_nb.attention import _maps_on_server as maps_on_server
from attribution_nb.ids import NodeId


class _NotOnTheServer:
    """An import hook: attribution_nb cannot be imported (it is installed here, not on NDIF)."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "attribution_nb":
            raise ModuleNotFoundError(f"No module named {name!r} (not on the simulated server)")
        return None


@pytest.fixture(autouse=True)
def server_without_this_package(monkeypatch):
    """nnsight's simulation hides this package's loaded modules while it deserializes a request;
    also block re-importing it, so any code a request does not carry by value fails."""
    from nnsight.intervention.backends.local import LocalSimulationBackend

    hide, restore = LocalSimulationBackend._hide_local_modules, LocalSimulationBackend._restore
    blocker = _NotOnTheServer()

    def hide_and_block(self):
        hidden = hide(self)
        sys.meta_path.insert(0, blocker)
        return hidden

    def unblock_and_restore(self, hidden):
        sys.meta_path.remove(blocker)
        restore(self, hidden)

    monkeypatch.setattr(LocalSimulationBackend, "_hide_local_modules", hide_and_block)
    monkeypatch.setattr(LocalSimulationBackend, "_restore", unblock_and_restore)


def _remote_copy(model, remote="local"):
    return anb.ReplacementModel(
        model.hf_model, model.tokenizer, list(model.transcoders), remote=remote, name=model.name
    )


@pytest.fixture
def requests(monkeypatch):
    """The size in bytes of every request nnsight serializes."""
    from nnsight.schema.request import RequestModel

    sizes = []
    serialize = RequestModel.serialize

    def spy(tracer, *args, **kwargs):
        blob = serialize(tracer, *args, **kwargs)
        sizes.append(len(blob))
        return blob

    monkeypatch.setattr(RequestModel, "serialize", spy)
    return sizes


def _assert_same_graph(local, remote):
    assert list(local.nodes.node_id) == list(remote.nodes.node_id)
    A, B = local.sparse_adjacency, remote.sparse_adjacency
    assert A.nnz == B.nnz and (A.indptr == B.indptr).all() and (A.indices == B.indices).all()
    np.testing.assert_array_equal(A.data, B.data)
    np.testing.assert_array_equal(local.logits.probability, remote.logits.probability)


@pytest.mark.parametrize("family,kind", [("llama", "skip"), ("gemma2", "clt"), ("gpt2", "")])
@pytest.mark.parametrize("max_feature_nodes,rows", [(None, "all"), (None, "adaptive"), (60, "all")])
def test_remote_graph_equals_local_graph(family, kind, max_feature_nodes, rows, requests):
    """All rows (one request for all feature rows), adaptive rows (a request per layer) and the
    greedy most-influential-first order (a request per influence refresh) give the local
    graph, bit for bit."""
    model = tiny_model(
        family, seed=3, d_features=128, skip=kind == "skip", cross_layer=kind == "clt"
    )
    local = anb.attribute(
        model, PROMPT, progress=False, batch_size=8, max_feature_nodes=max_feature_nodes, rows=rows
    )
    assert requests == []
    remote = anb.attribute(
        _remote_copy(model),
        PROMPT,
        progress=False,
        batch_size=8,
        max_feature_nodes=max_feature_nodes,
        rows=rows,
    )
    _assert_same_graph(local, remote)
    assert remote.info["replacement_logits_max_abs_diff"] < 1e-4
    # capture, logit rows, then feature rows: one request if all, several if adaptive or greedy
    assert len(requests) == 3 if (max_feature_nodes, rows) == (None, "all") else len(requests) > 3


def test_remote_custom_targets_equal_local(requests):
    """Contrasts and directions (in the residual stream and over the vocabulary) attribute remotely
    as they do here."""
    model = tiny_model("llama", seed=3, d_features=128)
    a, b = model.token_strings([5, 9])
    vocab = model.unembed_weight.shape[0]
    targets = [
        anb.LogitDiff(a, b),
        anb.Direction(torch.linspace(-1, 1, vocab), name="vocab"),
        anb.Direction(torch.linspace(0, 1, model.d_model), layer=1, name="mid"),
    ]
    local = anb.attribute(model, PROMPT, targets=targets, progress=False, batch_size=8)
    remote = anb.attribute(
        _remote_copy(model), PROMPT, targets=targets, progress=False, batch_size=8
    )
    _assert_same_graph(local, remote)
    np.testing.assert_allclose(remote.logits.logit, local.logits.logit, rtol=1e-6)


def test_requests_carry_neither_weights_nor_transcoders(requests):
    """Many features, few of them active: each request holds the capture, the active
    features' decoder rows and the targets, far less than the transcoders (or the model)."""
    model = tiny_model("llama", seed=3, d_features=4096)
    tc_bytes = sum(
        p.numel() * p.element_size() for tc in model.transcoders for p in tc.parameters()
    )
    model_bytes = sum(p.numel() * p.element_size() for p in model.hf_model.parameters())
    graph = anb.attribute(_remote_copy(model), PROMPT, progress=False, max_feature_nodes=200)
    n_active = graph.info["n_active_features"]
    assert n_active < 0.5 * 4 * 4096
    capture, *rows = requests
    assert capture < 0.1 * model_bytes
    # the active decoder rows in float32, plus small change
    assert max(rows) < 1.5 * n_active * model.d_model * 4 + 200_000 < 0.5 * tc_bytes


def test_meta_model_from_a_folder(tmp_path, monkeypatch):
    """``load_model(folder, remote=...)`` builds the model on the meta device (no weights
    here); the simulated server loads them, and the graph is the local one."""
    model = tiny_model("llama", seed=3, d_features=128, skip=True)
    model.hf_model.save_pretrained(tmp_path)
    model.tokenizer.save_pretrained(tmp_path)
    model.transcoders.save(tmp_path / "tc")
    remote = anb.load_model(str(tmp_path), transcoders=str(tmp_path / "tc"), remote="local")
    assert not remote.weights_here and remote.device.type == "cpu"
    assert remote.transcoders[0].W_enc.device.type == "cpu"
    # head loadings: the gradient work runs on the server (one request), and equals the local one
    tokens = model.tokenize(PROMPT)
    edge = (
        NodeId.for_token(2, int(tokens[2])),
        NodeId.for_logit(len(tokens) - 1, int(model.logits(PROMPT).argmax())),
    )
    on_server = []
    monkeypatch.setattr(
        attention, "_loadings", lambda *a: on_server.append(1) or loadings_on_server(*a)
    )
    local_heads, remote_heads = (anb.edge_heads(m, PROMPT, *edge) for m in (model, remote))
    assert len(on_server) == 2  # (a local model runs the same function, here)
    pd.testing.assert_frame_equal(remote_heads, local_heads, rtol=1e-6, atol=1e-9)
    assert abs(local_heads.attrs["edge"]) > 1e-3 and (local_heads.loading.abs() > 1e-6).sum() >= 2
    # QK tables: the head's maps are made on the server (one request), the table here; it is the local one
    on_server = []
    monkeypatch.setattr(
        attention, "_maps_on_server", lambda *a: on_server.append(1) or maps_on_server(*a)
    )
    local_table, remote_table = (
        anb.attribute_attention(m, PROMPT, 1, 0, -1, 2) for m in (model, remote)
    )
    assert on_server == [1, 1]  # (the backend decides where: a local model runs it here)
    pd.testing.assert_frame_equal(remote_table, local_table, rtol=1e-9, atol=1e-12)
    assert remote_table.attrs["score"] == pytest.approx(local_table.attrs["score"], rel=1e-12)
    torch.testing.assert_close(
        anb.attention_scores(remote, PROMPT, 0, 1),
        anb.attention_scores(model, PROMPT, 0, 1),
        equal_nan=True,
    )
    _assert_same_graph(
        anb.attribute(model, PROMPT, progress=False), anb.attribute(remote, PROMPT, progress=False)
    )
    with pytest.raises(ValueError, match="device='cuda' with remote='local'"):
        anb.load_model(
            str(tmp_path), transcoders=str(tmp_path / "tc"), remote="local", device="cuda"
        )


def test_remote_logits_and_unembedding_reads(monkeypatch):
    model = tiny_model("gemma2", seed=3, d_features=128)  # soft-capped logits
    remote = _remote_copy(model)
    torch.testing.assert_close(remote.logits(PROMPT), model.logits(PROMPT), rtol=1e-5, atol=1e-5)
    # with the weights only on the server, the unembedding is read there
    monkeypatch.setattr(anb.ReplacementModel, "weights_here", property(lambda self: False))
    with pytest.raises(RuntimeError, match="the unembedding needs the model's weights"):
        _ = remote.unembed_weight
    ids = [3, 7, 11]
    W_U = model.hf_model.lm_head.weight
    torch.testing.assert_close(
        remote.demeaned_unembedding(ids), W_U[ids] - W_U.mean(0, keepdim=True)
    )
    top = remote.feature_top_tokens(1, 5, k=4)
    expected = (W_U @ model.transcoders[1].W_dec[5]).topk(4)
    assert list(top.token) == model.token_strings(expected.indices.tolist())
    np.testing.assert_allclose(top.weight, expected.values.double().numpy(), rtol=1e-5)


@pytest.mark.parametrize("family,kind", [("llama", "clt"), ("gemma2", "skip")])
def test_remote_interventions_and_generation_equal_local(family, kind, requests):
    model = tiny_model(
        family, seed=5, d_features=128, skip=kind == "skip", cross_layer=kind == "clt"
    )
    remote = _remote_copy(model)
    graph = anb.attribute(model, PROMPT, progress=False)
    feats = graph.nodes[graph.nodes.kind == "feature"].sort_values("influence", ascending=False)
    clamps = {
        feats.node_id.iloc[0]: 0.0,
        feats.node_id.iloc[1]: anb.Multiply(-2),
        (int(feats.layer.iloc[2]), None, int(feats.feature.iloc[2])): anb.Steer(3.0),
    }
    for mode in ("free", "frozen"):
        before, after = model.intervened_logits(PROMPT, clamps, mode=mode)
        r_before, r_after = remote.intervened_logits(PROMPT, clamps, mode=mode)
        torch.testing.assert_close(r_before, before, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(r_after, after, rtol=1e-6, atol=1e-6)
        assert (after - before).abs().max() > 1e-2  # the clamps did something
    n = len(requests)
    assert remote.generate(PROMPT, clamps, max_new_tokens=3) == model.generate(
        PROMPT, clamps, max_new_tokens=3
    )
    assert len(requests) == n + 6  # one request per new token, before and after


def test_remote_errors():
    model = tiny_model("llama", seed=3, d_features=128)
    with pytest.raises(
        ValueError, match="remote must be False, True, 'local' or a server URL, got 1"
    ):
        _remote_copy(model, remote=1)
