"""QK attributions against Hugging Face's own attention and the float64 reference model.

* The maps: every head's queries and keys equal the ones Hugging Face's attention computes (read
  from its ``eager_attention_forward``: after q/k norms and rotary embeddings), and the softmax of
  ``attention_scores`` is the reference's attention pattern.
* The table: its rows sum to the score; its constant ("bias") query and key equal the ones of the
  reference run with every source zeroed; zeroing one query-side feature in the reference moves
  the score by exactly that feature's summed row.
"""

import importlib

import pytest
import torch
from conftest import PROMPT
from reference import CASES, Sources, case_id, case_model

import attribution_nb as anb
from attribution_nb.attention import attention_scores, attribute_attention, head_maps


@pytest.fixture(scope="module", params=CASES, ids=case_id)
def case(request):
    return case_model(request.param, PROMPT)


def _hf_queries_keys(model, tokens):
    """Per layer, the (query, key, scaling) Hugging Face's eager attention receives."""
    seen = []
    attn_type = type(
        model.hf_model.base_model.h[0].attn
        if hasattr(model.hf_model.base_model, "h")
        else model.hf_model.base_model.layers[0].self_attn
    )
    module = importlib.import_module(attn_type.__module__)
    original = module.eager_attention_forward

    def spy(mod, query, key, value, attention_mask, scaling=None, **kwargs):
        seen.append(
            (
                query[0].double(),
                key[0].double(),
                query.shape[-1] ** -0.5 if scaling is None else scaling,
            )
        )
        return original(mod, query, key, value, attention_mask, scaling=scaling, **kwargs)

    cfg = model.hf_model.config
    saved = cfg._attn_implementation
    cfg._attn_implementation = "eager"
    module.eager_attention_forward = spy
    try:
        with torch.no_grad():
            model.hf_model(tokens[None])
    finally:
        module.eager_attention_forward = original
        cfg._attn_implementation = saved
    return seen


def test_queries_keys_and_patterns_are_hugging_faces(case):
    model, ref = case
    tokens = model.tokenize(PROMPT)
    seen = _hf_queries_keys(model, tokens)
    n_heads = model.hf_model.config.num_attention_heads
    n_kv = getattr(model.hf_model.config, "num_key_value_heads", None) or n_heads
    for layer in range(model.n_layers):
        hf_q, hf_k, scaling = seen[layer]  # [heads, T, d_head]
        for head in range(n_heads):
            maps = head_maps(model, tokens, layer, head)
            Q = torch.stack([maps.query(p) for p in range(len(tokens))])
            K = torch.stack([maps.key(p) for p in range(len(tokens))])
            tol = 1e-4 * float(hf_q.abs().max() + hf_k.abs().max())
            torch.testing.assert_close(Q, hf_q[head], rtol=0, atol=tol)
            torch.testing.assert_close(K, hf_k[head // (n_heads // n_kv)], rtol=0, atol=tol)
            assert maps.scale == pytest.approx(float(scaling), rel=1e-6)
            scores = attention_scores(model, PROMPT, layer, head)
            if getattr(model.hf_model.config, "attn_logit_softcapping", None):
                cap = model.hf_model.config.attn_logit_softcapping
                scores = torch.tanh(scores / cap) * cap
            pattern = torch.softmax(scores.nan_to_num(float("-inf")), -1)
            if (ref.patterns[layer][head] == 0).sum() > int(
                torch.ones(len(tokens), len(tokens)).triu(1).sum()
            ):
                continue  # a sliding window masks more keys: compare rows kept
            torch.testing.assert_close(pattern, ref.patterns[layer][head], rtol=0, atol=1e-4)


def _picks(model, T):
    L, H = model.n_layers, model.hf_model.config.num_attention_heads
    return [(L - 1, 0, T - 1, 2), (1, H - 1, T - 2, T - 5), (L - 1, H // 2, T - 1, T - 1)]


def test_tables_sum_to_the_score_with_the_reference_constant(case):
    model, ref = case
    tokens = model.tokenize(PROMPT)
    T = len(tokens)
    with torch.no_grad():
        ref.run(ref.zero_sources())
        zero_resid = [h[0] if h.dim() == 3 else h for h in ref.attn_ins]
    for layer, head, q, k in _picks(model, T):
        table = attribute_attention(model, PROMPT, layer, head, q, k)
        score = table.attrs["score"]
        scale = float(table.contribution.abs().max())
        assert table.contribution.sum() == pytest.approx(score, abs=1e-5 * scale)
        maps = head_maps(model, tokens, layer, head)
        assert score == pytest.approx(
            float(attention_scores(model, PROMPT, layer, head)[q, k]), abs=1e-6 * scale
        )
        # the bias × bias term: the reference's query and key with every source zeroed
        q0, k0 = maps.query(q, zero_resid[layer][q]), maps.key(k, zero_resid[layer][k])
        bias = table[(table.query_node == "bias") & (table.key_node == "bias")].contribution.iloc[0]
        assert bias == pytest.approx(maps.scale * float(q0 @ k0), abs=1e-5 * scale)
        row = table[table.query_node == "bias"].contribution.sum()  # bias query · the whole key
        assert row == pytest.approx(maps.scale * float(q0 @ maps.key(k)), abs=1e-5 * scale)


def test_zeroing_a_query_side_feature_moves_the_score_by_its_row(case):
    model, ref = case
    tokens = model.tokenize(PROMPT)
    T = len(tokens)
    layer, head, q, k = model.n_layers - 1, 0, T - 1, 3
    table = attribute_attention(model, PROMPT, layer, head, q, k)
    maps = head_maps(model, tokens, layer, head)
    rows = table[(table.query_kind == "feature")].groupby("query_node").contribution.sum()
    later = [
        n for n in rows.abs().sort_values(ascending=False).index if anb.NodeId.parse(n).position > k
    ][:3]
    assert later, "no query-side feature after the key position"
    src = ref.clean_sources
    with torch.no_grad():
        ref.run(src)
        base = ref.attn_ins[layer].clone()
    for node in later:
        n = anb.NodeId.parse(node)
        acts = [a.clone() for a in src.acts]
        acts[n.layer][n.position, n.feature] = 0.0
        with torch.no_grad():
            ref.run(Sources(src.embed, acts, src.errors.clone()))
            changed = ref.attn_ins[layer]
        assert torch.allclose(changed[k], base[k])  # the key cannot see a later feature
        delta = maps.scale * float(
            (maps.query(q, base[q]) - maps.query(q, changed[q])) @ maps.key(k, base[k])
        )
        assert rows[node] == pytest.approx(
            delta, abs=1e-5 * float(table.contribution.abs().max()) + 1e-7
        )


def test_on_the_demo_model_a_later_head_reads_the_city_s_features():
    """In the Dallas prompt the head that looks most at "dallas" from the last position is past layer
    0 and its QK attribution says why: the key side is what layer 0 wrote at the city (its
    features); a layer-0 head's table holds no feature at all (its residual stream is embeddings);
    each table sums to its score, and the graph's strongest edge from the city into the last
    position is split exactly over the heads that carry it."""
    model = anb.load_model()
    tokens = model.tokenize(PROMPT)
    dallas = [model.token_strings([int(t)])[0] for t in tokens].index("dallas")
    heads = anb.attention_heads(model, PROMPT, -1, dallas)
    assert heads.weight[0] > 2 * heads.weight[1], heads.head()  # one head stands out
    layer, head = int(heads["layer"][0]), int(heads["head"][0])
    table = attribute_attention(model, PROMPT, layer, head, -1, dallas)
    assert layer >= 1 and table.key_kind.iloc[0] == "feature"
    assert anb.NodeId.parse(table.key_node.iloc[0]).position == dallas
    assert abs(table.contribution.sum() - table.attrs["score"]) < 1e-5 * abs(table.attrs["score"])
    first = heads[heads.layer == 0].iloc[0]
    zero = attribute_attention(model, PROMPT, 0, int(first["head"]), -1, dallas)
    assert "feature" not in set(zero.query_kind) | set(zero.key_kind)
    graph = anb.attribute(model, PROMPT, progress=False).prune(0.8, 0.98)
    pos = dict(zip(graph.nodes.node_id, graph.nodes.position))
    e = graph.edges
    cross = e[[pos[s] == dallas and pos[t] == len(tokens) - 1 for s, t in zip(e.source, e.target)]]
    row = cross.loc[cross.weight.abs().idxmax()]
    loads = anb.edge_heads(model, PROMPT, row.source, row.target)
    assert abs(loads.attrs["edge"] - row.weight) < 1e-4 * abs(row.weight)


@pytest.mark.parametrize(
    "args,message",
    [
        ((9, 0, -1, 0), "layer must be in"),
        ((0, 99, -1, 0), "head must be in"),
        ((0, 0, 3, 5), "a causal head never attends forward"),
        ((0, 0, 40, 0), "query_pos must be in"),
    ],
)
def test_bad_heads_and_positions_say_what_is_wrong(args, message):
    model = anb.load_model()
    with pytest.raises(ValueError, match=message):
        attribute_attention(model, PROMPT, *args)


def test_an_edge_within_one_position_is_refused():
    model = anb.load_model()
    with pytest.raises(ValueError, match="does not cross positions"):
        anb.edge_heads(model, PROMPT, "t:P10:21", "f:L1:P10:3")
    with pytest.raises(ValueError, match="runs from a feature"):
        anb.edge_heads(model, PROMPT, "l:P10:21", "f:L1:P10:3")


def test_attention_edges_lists_the_strongest_crossing_inputs_with_their_heads():
    model = anb.load_model()
    graph = anb.attribute(model, PROMPT, progress=False)
    node = graph.logits.node_id[0]
    table = anb.attention_edges(model, graph, node, k=3)
    incoming, _ = graph.edges_of(node)
    pos = dict(zip(graph.nodes.node_id, graph.nodes.position))
    crossing = incoming[[pos[s] < len(graph.tokens) - 1 for s in incoming.source]]
    want = list(
        crossing.reindex(crossing.weight.abs().sort_values(ascending=False).index).source[:3]
    )
    assert list(table.source) == want
    first = anb.edge_heads(model, PROMPT, want[0], node)
    assert (table.layer[0], table["head"][0]) == (first.layer[0], first["head"][0])
    assert table.loading[0] == pytest.approx(first.loading[0])
