"""The attribution graph's numbers against an independent hand-written frozen model.

For every supported architecture and transcoder kind, on tiny random models:
1. the replacement model with error nodes reproduces the original logits;
2. each target's incoming edges plus constant terms equal its pre-activation / demeaned logit;
3. each edge equals a derivative of the frozen linear model (a Jacobian row), and removing a
   single source changes its target by exactly that edge.
"""

import numpy as np
import pytest
import torch
from conftest import PROMPT
from reference import CASES, Sources, case_id, case_model, jacobian_row

import attribution_nb as anb
from attribution_nb.demo import tiny_model


@pytest.fixture(scope="module", params=CASES, ids=case_id)
def case(request):
    model, ref = case_model(request.param, PROMPT)
    graph = anb.attribute(
        model, PROMPT, progress=False, batch_size=16, bos_features=True, rows="all"
    )
    return model, graph, ref


def _target_spec(graph, rows):
    spec = []
    for i in rows:
        n = graph.nodes.iloc[i]
        if n.kind == "feature":
            spec.append(("feature", int(n.layer), int(n.position), int(n.feature)))
        else:
            spec.append(("logit", int(n.token_id)))
    return spec


def _sample_rows(graph, n_features=25, seed=0):
    kinds = graph.nodes.kind.to_numpy()
    feats = np.flatnonzero(kinds == "feature")
    rng = np.random.default_rng(seed)
    picked = rng.choice(feats, size=min(n_features, len(feats)), replace=False)
    return list(np.sort(picked)) + list(np.flatnonzero(kinds == "logit"))


def test_reference_matches_huggingface(case):
    _, _, ref = case
    # HF norms compute in float32 even for a float64 model, hence 1e-5
    torch.testing.assert_close(ref.capped(ref.clean_logits), ref.hf_logits, rtol=0, atol=1e-5)


def test_replacement_model_reproduces_logits(case):
    model, graph, ref = case
    frozen_logits, _ = ref.run(ref.clean_sources)  # sources: embeddings, features, errors
    torch.testing.assert_close(ref.capped(frozen_logits), ref.hf_logits, rtol=0, atol=1e-5)
    with torch.no_grad():
        hf_logits = model.hf_model(model.tokenize(PROMPT)[None]).logits[0, -1]
    np.testing.assert_allclose(
        graph.logits.logit, hf_logits[graph.logits.token_id].numpy(), rtol=1e-5, atol=1e-5
    )
    assert graph.info["replacement_logits_max_abs_diff"] < 1e-4


def test_active_features_match_reference(case):
    _, graph, ref = case
    feats = graph.nodes[graph.nodes.kind == "feature"]
    expected = {
        (l, p, f): float(a[p, f])
        for l, a in enumerate(ref.clean_sources.acts)
        for p, f in a.nonzero().tolist()
    }
    got = {
        (int(r.layer), int(r.position), int(r.feature)): r.activation for r in feats.itertuples()
    }
    assert got.keys() == expected.keys()
    np.testing.assert_allclose(
        [got[k] for k in expected], list(expected.values()), rtol=1e-4, atol=1e-5
    )


def test_edges_sum_to_target_preactivation(case):
    _, graph, ref = case
    rows = _sample_rows(graph)
    spec = _target_spec(graph, rows)
    with torch.no_grad():
        value = ref.targets(ref.clean_sources, spec)
        constant = ref.targets(
            ref.zero_sources(), spec
        )  # biases propagated through the frozen model
    incoming = graph.adjacency[rows].double().sum(1)
    scale = value.abs().max()
    torch.testing.assert_close(incoming + constant, value, rtol=0, atol=2e-5 * float(scale) + 1e-6)


def test_edges_equal_jacobian_of_frozen_model(case):
    _, graph, ref = case
    rows = _sample_rows(graph, n_features=15, seed=1)
    for r, t in zip(rows, _target_spec(graph, rows)):
        expected = jacobian_row(ref, graph, t)
        got = graph.adjacency[r].double()
        torch.testing.assert_close(
            got, expected, rtol=0, atol=2e-5 * float(expected.abs().max()) + 1e-7
        )


def test_removing_a_source_changes_target_by_its_edge(case):
    _, graph, ref = case
    rows = [i for i in _sample_rows(graph, n_features=0)]  # logit targets
    spec = _target_spec(graph, rows)
    src = ref.clean_sources
    with torch.no_grad():
        base = ref.targets(src, spec)
    feats = graph.nodes[graph.nodes.kind == "feature"]
    strongest = graph.adjacency[rows][:, feats.index].abs().sum(0).argsort(descending=True)[:5]
    for j in feats.index[strongest.numpy()]:
        n = graph.nodes.iloc[j]
        acts = [a.clone() for a in src.acts]
        acts[n.layer][n.position, n.feature] = 0.0
        errors = src.errors.clone()
        with torch.no_grad():
            removed = ref.targets(Sources(src.embed, acts, errors), spec)
        change = (base - removed).float()
        torch.testing.assert_close(graph.adjacency[rows, j], change, rtol=1e-4, atol=1e-5)


def test_no_edges_from_later_layers_or_positions(llama_graph):
    g = llama_graph
    layer = torch.tensor(g.nodes.layer.to_numpy())
    pos = torch.tensor(g.nodes.position.to_numpy())
    tgt, src = g.adjacency.nonzero(as_tuple=True)
    kinds = g.kinds
    is_error_src = torch.from_numpy(kinds == "error")[src]
    assert (pos[src] <= pos[tgt]).all()
    # sources write at their layer's MLP output; targets read at their layer's MLP input
    assert (layer[src][~is_error_src] < layer[tgt][~is_error_src]).all()
    assert (layer[src][is_error_src] < layer[tgt][is_error_src]).all()
    # token and error nodes have no incoming edges
    assert not g.adjacency[torch.from_numpy(np.isin(kinds, ("token", "error")))].any()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_graph_is_close_to_float32(dtype, tmp_path):
    """The same model in bfloat16 / float16 (as on a GPU): same predictions, and the edges
    they share with the float32 graph agree to half precision.  Edges from error nodes are
    looser: an error is a difference of two large vectors, which half precision rounds."""
    full = tiny_model("llama", seed=3, d_features=128)
    g32 = anb.attribute(full, PROMPT, progress=False)
    folder = tmp_path / "m"
    full.hf_model.save_pretrained(folder)
    full.tokenizer.save_pretrained(folder)
    full.transcoders.save(folder / "tc")
    half = anb.load_model(str(folder), transcoders=str(folder / "tc"), dtype=dtype)
    assert (
        next(half.hf_model.parameters()).dtype == dtype and half.transcoders[0].W_enc.dtype == dtype
    )
    g = anb.attribute(half, PROMPT, progress=False)
    assert list(g.logits.token[:3]) == list(g32.logits.token[:3])
    e32 = g32.edges.set_index(["source", "target"]).weight
    e = g.edges.set_index(["source", "target"]).weight
    common = e32.index.intersection(e.index)
    assert len(common) > 0.9 * len(e32)
    scale = float(e32.abs().max())
    diff = (e.loc[common] - e32.loc[common]).abs() / scale
    from_errors = np.array([s.startswith("e:") for s, _ in common])
    assert diff[~from_errors].max() < 0.05 and diff[from_errors].max() < 0.25
    assert diff.quantile(0.99) < 0.02


def test_prefix_traces_give_the_same_graph(monkeypatch):
    """Long prompts run feature rows on prefix traces (attention is causal): forcing them on a
    short prompt gives the same edges as the full trace."""
    from attribution_nb.attribution import rows

    model = tiny_model("llama", seed=3, d_features=128, skip=True)
    monkeypatch.setattr(rows, "PREFIX_MIN_TOKENS", 10**6)
    full = anb.attribute(model, PROMPT, progress=False, batch_size=8, max_feature_nodes=None)
    monkeypatch.setattr(rows, "PREFIX_MIN_TOKENS", 1)
    monkeypatch.setattr(rows, "RETRACE_PASSES", 0)
    prefixed = anb.attribute(model, PROMPT, progress=False, batch_size=8, max_feature_nodes=None)
    a, b = full.sparse_adjacency, prefixed.sparse_adjacency
    assert a.nnz == b.nnz and (a.indices == b.indices).all() and (a.indptr == b.indptr).all()
    np.testing.assert_allclose(b.data, a.data, rtol=1e-4, atol=1e-6 * float(np.abs(a.data).max()))
    assert prefixed.info["replacement_logits_max_abs_diff"] < 1e-4


def test_prefix_jobs_hold_as_many_tokens_as_full_ones():
    """A backward pass on a prefix of a quarter of the prompt takes four times the targets (its
    trace holds as many tokens), a half-length prefix twice, up to PREFIX_MAX_BATCH_GROWTH; targets
    run longest prefix first, the current trace's first, and a pass with room takes the shorter
    targets after it (their own trace may then never be built)."""
    from types import MethodType, SimpleNamespace

    from attribution_nb.attribution.rows import PREFIX_MAX_BATCH_GROWTH, RowEngine, RowRunner

    engine = SimpleNamespace(batch=8, T=16, buckets=[2, 4, 8, 16], length=None)
    engine.bucket = MethodType(RowEngine.bucket, engine)
    engine.batch_for = MethodType(RowEngine.batch_for, engine)
    assert [engine.batch_for(n) for n in (16, 8, 4, 2)] == [8, 16, 32, 8 * PREFIX_MAX_BATCH_GROWTH]
    runner = RowRunner(None, engine, None)
    positions = np.array([2] * 130 + [15] * 10 + [1] * 3 + [6] * 70 + [15] * 2)
    # 12 targets need 16 tokens, 70 need 8, 130 need 4, 3 need 2: too few for a trace of their
    # own (a trace costs RETRACE_PASSES passes of 32), those 3 ride on the length-4 trace
    lengths = runner.lengths(positions)
    assert lengths.tolist() == [4] * 130 + [16] * 10 + [4] * 3 + [8] * 70 + [16] * 2
    order = runner.order(lengths)
    assert order.tolist() == [
        *range(130, 140),
        213,
        214,
        *range(143, 213),
        *range(130),
        140,
        141,
        142,
    ]
    got = [(j.start, j.stop) for j in runner.jobs(lengths[order])]
    # 8 of length 16; 4 of 16 + 4 of 8 on one length-16 pass; 16 of 8 four times; 2 of 8 + 14
    # of 4 on a length-8 pass; 32 of 4 three times; the last 23
    assert got == [
        (0, 8), (8, 16), (16, 32), (32, 48), (48, 64), (64, 80), (80, 96),
        (96, 128), (128, 160), (160, 192), (192, 215),
    ]  # fmt: skip
    engine.length = 2  # the current trace is free: its targets keep it and run first
    lengths = runner.lengths(positions)
    assert lengths[140:143].tolist() == [2, 2, 2]
    assert runner.order(lengths)[:3].tolist() == [140, 141, 142]
    # one length only (each group of the adaptive sweep): its own trace, however few the targets
    engine.length = 16
    assert runner.lengths(np.array([2, 2])).tolist() == [4, 4]


def test_the_source_layout_is_the_graph_s_node_order():
    """One owner of the node order: a graph with every feature has exactly the layout's sources
    (ids, kinds, layers, positions) followed by its targets."""
    from attribution_nb.attribution import graph_capture
    from attribution_nb.attribution.rows import ActiveFeatures, SourceLayout

    model = tiny_model("llama", seed=2, d_features=64)
    graph = anb.attribute(model, PROMPT, rows="all", progress=False)
    cap, _ = graph_capture(model, model.tokenize(PROMPT))
    active = ActiveFeatures.of(cap.activations)
    L, T = model.n_layers, len(cap.tokens)
    layout = SourceLayout(len(active), L, T)
    n = layout.n_sources
    assert len(graph.nodes) == n + len(graph.logits)
    assert list(graph.nodes.node_id[:n]) == list(layout.ids(active, cap.tokens))
    assert list(graph.nodes.kind) == list(layout.kinds(len(graph.logits)))
    layer, position = layout.columns(active)
    assert (
        graph.nodes.layer[:n].tolist() == layer.tolist()
        and graph.nodes.position[:n].tolist() == position.tolist()
    )
    errors = graph.nodes[graph.nodes.kind == "error"]
    assert (errors.layer.tolist(), errors.position.tolist()) == layout.error_cells()
