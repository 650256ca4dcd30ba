"""Fewer rows for the same pruned graph: the BOS position's features left out (folded into
that position's error nodes), and the adaptive stop's bound and certificate
(:mod:`attribution_nb.attribution.adaptive`), checked against every row computed."""

import os

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from reference import CASES, case_id

import attribution_nb as anb
from attribution_nb.attribution import default_batch_size
from attribution_nb.attribution.adaptive import _cone_sums, certify, layered_influence
from attribution_nb.demo import load_demo_model, tiny_model
from attribution_nb.attribution.schedule import feature_influence
from attribution_nb.attribution.store import RowStore
from attribution_nb.graph.maths import InfluenceWalk, compute_influence, prune_masks

PROMPT = "fact : the capital of the state containing dallas is"
#: the demo model's case-study prompts (notebooks 01-09)
CASE_STUDIES = [
    "fact : the capital of the state containing dallas is",
    "fact : the capital of the state containing oakland is",
    "poem : a dog sat by the cat ,",
    "the opposite of small is",
    "le contraire de petit est",
    "patient : fever , rash , cough . order",
]


# -- the bound and the certificate on hand-built layered graphs ----------------------
def _layered_graph(rng, n_layers=5, n_pos=4, per_cell=4, n_logits=3):
    """A random attribution-shaped graph: features and errors per (layer, position), tokens,
    logits at the last position; every edge goes to a higher layer at the same or a later
    position; weights heavy-tailed, some cells silent."""
    kinds, layer, pos = [], [], []
    for la in range(n_layers):
        for p in range(n_pos):
            k = rng.integers(0, per_cell + 1)
            kinds += ["feature"] * k
            layer += [la] * k
            pos += [p] * k
    kinds += ["error"] * (n_layers * n_pos) + ["token"] * n_pos + ["logit"] * n_logits
    layer += (
        [la for la in range(n_layers) for _ in range(n_pos)] + [-1] * n_pos + [n_layers] * n_logits
    )
    pos += (
        [p for _ in range(n_layers) for p in range(n_pos)]
        + list(range(n_pos))
        + [n_pos - 1] * n_logits
    )
    kinds, layer, pos = np.array(kinds, dtype=object), np.array(layer), np.array(pos)
    n = len(kinds)
    has_row = np.isin(kinds, ("feature", "logit"))
    reach = (layer[None] < layer[:, None]) & (pos[None] <= pos[:, None]) & has_row[:, None]
    dense = np.where(
        reach & (rng.random((n, n)) < 0.5),
        rng.standard_normal((n, n)) * rng.pareto(1.5, (n, n)),
        0.0,
    )
    w = np.zeros(n)
    w[kinds == "logit"] = rng.dirichlet(np.ones(n_logits))
    return sp.csr_array(dense), w, kinds, layer, pos


def _node_set(m, w, kinds, t=(0.8, 0.98)):
    return prune_masks(m, w, kinds, *t)[0]


def test_layered_influence_equals_the_series():
    rng = np.random.default_rng(0)
    for _ in range(5):
        m, w, kinds, layer, _ = _layered_graph(rng)
        np.testing.assert_allclose(
            layered_influence(m, w, layer), compute_influence(m, w), rtol=1e-12, atol=1e-15
        )


def test_one_walk_whole_by_layer_by_rows_and_on_a_partial_graph():
    """The four uses of :class:`InfluenceWalk` against a dense ``w·Â(I − Â)⁻¹``: the series, the
    layered pass, rows passed on as they arrive top layer first (the adaptive sweep), and the
    greedy schedule's estimate on a partial graph (rows of some features only, in a RowStore)."""
    rng = np.random.default_rng(3)
    for _ in range(5):
        m, w, kinds, layer, _ = _layered_graph(rng)
        dense = np.abs(m.toarray())
        sums = dense.sum(1, keepdims=True)
        a_hat = np.divide(dense, sums, out=np.zeros_like(dense), where=sums > 0)
        expected = w @ a_hat @ np.linalg.inv(np.eye(len(w)) - a_hat)
        walk = InfluenceWalk(m)
        np.testing.assert_allclose(walk.total(w), expected, rtol=1e-9, atol=1e-13)
        np.testing.assert_allclose(walk.layered(w, layer), expected, rtol=1e-9, atol=1e-13)
        received = w.copy()
        for la in sorted(set(layer.tolist()), reverse=True):
            rows = np.flatnonzero(layer == la)
            received += InfluenceWalk(m[rows]).step(received[rows])
        np.testing.assert_allclose(received - w, expected, rtol=1e-9, atol=1e-13)

        # the greedy schedule: sources first (features, errors, tokens), logits after them
        n_src = int((kinds != "logit").sum())
        n_active = int((kinds == "feature").sum())
        visited = rng.choice(n_active, size=n_active // 2, replace=False)
        store = RowStore()
        rows = m.tocsr()
        for key, r in [(("logit", i), n_src + i) for i in range(len(w) - n_src)] + [
            (int(v), int(v)) for v in visited
        ]:
            a, b = rows.indptr[r], rows.indptr[r + 1]
            store.add([key], (np.array([b - a]), rows.indices[a:b], rows.data[a:b]))
        partial = dense.copy()
        partial[np.setdiff1d(np.arange(n_active), visited)] = 0
        partial[n_active:n_src] = 0
        sums = partial.sum(1, keepdims=True)
        p_hat = np.divide(partial, sums, out=np.zeros_like(partial), where=sums > 0)
        want = (w @ p_hat @ np.linalg.inv(np.eye(len(w)) - p_hat))[:n_active]
        got = feature_influence(store, w[n_src:], visited, n_active, n_src)
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-13)


def test_missing_rows_move_influence_within_the_bound():
    """0 ≤ x − e ≤ δ for every node, and Σ (x − e) over features and errors ≤ E = Σ_U e_u·layer(u)."""
    rng = np.random.default_rng(1)
    for _ in range(30):
        m, w, kinds, layer, pos = _layered_graph(rng)
        feats = np.flatnonzero(kinds == "feature")
        U = rng.choice(feats, size=rng.integers(1, max(2, len(feats) // 2)), replace=False)
        partial = m.tolil()
        partial[U] = 0
        partial = sp.csr_array(partial)
        x, e = compute_influence(m, w), compute_influence(partial, w)
        delta = _cone_sums(e[U], layer[U], pos[U], layer, pos, int(layer.max()))
        assert (x - e >= -1e-12).all()
        assert (x - e <= delta + 1e-12).all()
        ranked = np.isin(kinds, ("feature", "error"))
        assert (x - e)[ranked].sum() <= (e[U] * layer[U]).sum() + 1e-12


def test_certificate_is_sound_and_not_vacuous():
    """Whenever the certificate holds, the partial graph prunes to the nodes of the full one;
    it holds for small missing sets and fails for some large ones."""
    rng = np.random.default_rng(2)
    verdicts = []
    for _ in range(120):
        m, w, kinds, layer, pos = _layered_graph(rng, per_cell=rng.integers(2, 6))
        x = compute_influence(m, w)
        feats = np.flatnonzero(kinds == "feature")
        weakest = feats[np.argsort(x[feats])]
        U = weakest[: rng.integers(1, len(weakest) // 2 + 2)]
        partial = m.tolil()
        partial[U] = 0
        partial = sp.csr_array(partial)
        unvisited = np.zeros(len(kinds), dtype=bool)
        unvisited[U] = True
        cert = certify(partial, w, kinds, layer, pos, unvisited, 0.8, 0.98)
        same = np.array_equal(_node_set(partial, w, kinds), _node_set(m, w, kinds))
        verdicts.append((cert.ok, same))
        if cert.ok:
            assert same, cert
    oks = [ok for ok, _ in verdicts]
    assert 10 <= sum(oks) <= len(oks) - 10, f"certificate held {sum(oks)} of {len(oks)} times"
    assert any(not same for ok, same in verdicts if not ok), "no uncertified case actually differed"


# -- on the models -----------------------------------------------------------------
@pytest.mark.parametrize("case", [CASES[0], CASES[6], CASES[8], CASES[9]], ids=case_id)
def test_adaptive_rows_prune_like_all_rows(case):
    """Tiny models (Llama, Gemma-2, GPT-2, cross-layer): the same pruned nodes, the same rows
    where both have one, no incoming edges where the adaptive graph has none."""
    family, activation, skip = case
    model = tiny_model(
        family,
        seed=3,
        activation=activation,
        skip=skip is True,
        cross_layer=skip == "clt",
        d_features=128,
    )
    full = anb.attribute(model, PROMPT, progress=False, rows="all", batch_size=8)
    fast = anb.attribute(model, PROMPT, progress=False, batch_size=8)
    _assert_same_pruned(full, fast)


@pytest.fixture(scope="module")
def demo():
    return load_demo_model()


def test_adaptive_rows_on_the_demo_case_studies(demo):
    saved, total = 0, 0
    for prompt in CASE_STUDIES:
        full = anb.attribute(demo, prompt, progress=False, rows="all")
        fast = anb.attribute(demo, prompt, progress=False)
        _assert_same_pruned(full, fast)
        saved += full.info["feature_rows"] - fast.info["feature_rows"]
        total += full.info["feature_rows"]
    assert saved > 0, "the adaptive stop saved no rows on any case study"


def _assert_same_pruned(full, fast):
    assert (
        fast.info["rows"] == "adaptive"
        and fast.info["certificate"] in ("proved",)
        or fast.info["certificate"].startswith("exact")
    )
    assert (
        fast.info["feature_rows"] + fast.info["features_without_rows"] == full.info["feature_rows"]
    )
    assert list(fast.nodes.node_id) == list(full.nodes.node_id)
    a, b = full.prune(0.8, 0.98), fast.prune(0.8, 0.98)
    assert set(a.nodes.node_id) == set(b.nodes.node_id)
    A, B = full.sparse_adjacency, fast.sparse_adjacency
    has_row = np.diff(B.indptr) > 0
    a_rows = A[has_row].toarray()  # equal up to float32 sums taken in other batches
    np.testing.assert_allclose(
        B[has_row].toarray(), a_rows, rtol=1e-5, atol=1e-6 * np.abs(a_rows).max()
    )
    rowless = np.flatnonzero(~has_row & (fast.kinds == "feature"))
    assert len(rowless) == fast.info["features_without_rows"]


# -- BOS features ------------------------------------------------------------------
@pytest.mark.parametrize("case", [CASES[0], CASES[6], CASES[9]], ids=case_id)
def test_bos_features_fold_into_the_bos_error_nodes(case):
    """Left out (the default), the BOS position's features vanish and each error node there
    takes what they wrote: its edge equals, in the graph that keeps them, its own edge plus
    the edges of the features that wrote to its layer (cross-layer ones from earlier layers)."""
    family, activation, skip = case
    model = tiny_model(
        family,
        seed=3,
        activation=activation,
        skip=skip is True,
        cross_layer=skip == "clt",
        d_features=128,
    )
    tokens = model.tokenize(PROMPT)
    assert int(tokens[0]) in model.tokenizer.all_special_ids
    kept = anb.attribute(model, PROMPT, progress=False, rows="all", bos_features=True)
    left = anb.attribute(model, PROMPT, progress=False, rows="all")
    bos_kept = (kept.nodes.kind == "feature") & (kept.nodes.position == 0)
    assert left.info["bos_features_left_out"] == int(bos_kept.sum()) > 0
    assert not ((left.nodes.kind == "feature") & (left.nodes.position == 0)).any()
    # rows of the nodes both have, over the sources both have, are equal
    ki = {n: i for i, n in enumerate(kept.nodes.node_id)}
    li = {n: i for i, n in enumerate(left.nodes.node_id)}
    rows = [n for n in left.nodes.node_id if n in ki]
    cols = [n for n in rows if not n.startswith("e:") or not n.endswith(":P0")]
    A, B = kept.sparse_adjacency, left.sparse_adjacency
    ra, rb = [ki[n] for n in rows], [li[n] for n in rows]
    np.testing.assert_allclose(
        B[rb][:, [li[n] for n in cols]].toarray(),
        A[ra][:, [ki[n] for n in cols]].toarray(),
        rtol=1e-5,
        atol=1e-6,
    )
    # the BOS error nodes: their own edge plus what the left-out features wrote to their layer
    # (a cross-layer feature writes to several layers: there, compare the sums over layers)
    errs = [f"e:L{layer}:P0" for layer in range(left.n_layers)]
    by_layer = [
        [n for n in kept.nodes.node_id[bos_kept] if n.startswith(f"f:L{layer}:")]
        for layer in range(left.n_layers)
    ]
    got = B[rb][:, [li[e] for e in errs]].toarray()
    own = A[ra][:, [ki[e] for e in errs]].toarray()
    written = np.stack([A[ra][:, [ki[n] for n in f]].toarray().sum(1) for f in by_layer], 1)
    if skip == "clt":
        got, own, written = got.sum(1), own.sum(1), written.sum(1)
    np.testing.assert_allclose(got, own + written, rtol=1e-4, atol=1e-5)


def test_a_prompt_without_bos_keeps_its_first_features(llama):
    ids = llama.tokenize(PROMPT)[1:]  # no special token first: nothing is left out
    graph = anb.attribute(llama, ids, progress=False)
    assert graph.info["bos_features_left_out"] == 0
    assert ((graph.nodes.kind == "feature") & (graph.nodes.position == 0)).any()


def test_the_batch_fits_the_memory_budget(llama, monkeypatch):
    """On a CPU the trace takes at most CPU_MEMORY_SHARE of the memory available: the batch
    shrinks below 16 copies when a prompt is long for the machine, never below one."""
    import attribution_nb.attribution as attribution

    cfg = llama.hf_model.config
    per_copy = 15 * cfg.num_hidden_layers * 4000 * cfg.hidden_size * 4
    monkeypatch.setattr(attribution, "available_memory", lambda: 10 * per_copy)
    assert default_batch_size(llama, 4000) == 5  # half of 10 copies' worth
    monkeypatch.setattr(attribution, "available_memory", lambda: per_copy // 10)
    assert default_batch_size(llama, 4000) == 1
    monkeypatch.setattr(attribution, "available_memory", lambda: None)  # unknown: the usual 16
    assert default_batch_size(llama, 4000) == 16
    monkeypatch.undo()
    free = attribution.available_memory()
    assert free is None or 0 < free <= os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def test_batch_size_defaults_from_the_device(llama):
    assert default_batch_size(llama, 11) == 32  # a tiny model: the most
    assert anb.attribute(llama, PROMPT, progress=False).info["batch_size"] == 32
    cfg = llama.hf_model.config
    per_copy = (
        15 * cfg.num_hidden_layers * 4000 * cfg.hidden_size * 4
    )  # 4,000 tokens: ~61 MB of trace a copy
    assert default_batch_size(llama, 4000) == max(16, min(32, (256 << 20) // per_copy)) == 16
    with pytest.raises(ValueError, match="rows must be 'adaptive' or 'all', got 'some'"):
        anb.attribute(llama, PROMPT, rows="some")
    torch.manual_seed(0)
