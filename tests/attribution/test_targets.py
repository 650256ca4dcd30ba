"""Custom attribution targets (logit differences, directions, weighted mixes) against the
float64 reference model: their edges are direct effects, their incoming edges plus the constant
terms equal their value, and removing a source moves them by its edge."""

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import PROMPT
from reference import CASES, Sources, case_id, case_model, jacobian_row

import attribution_nb as anb


def _targets(model, T):
    """One of each kind, read at several places; the vectors are seeded, not chosen."""
    g = torch.Generator().manual_seed(7)
    d = model.d_model
    vocab = model.unembed_weight.shape[0]
    a, b = model.token_strings([5, 9])
    return [
        anb.LogitDiff(a, b),
        anb.Direction(torch.randn(d, generator=g), name="resid"),
        anb.Direction(torch.randn(d, generator=g), layer=1, position=T - 2, name="mid", weight=0.5),
        anb.Direction(torch.randn(vocab, generator=g), name="vocab", weight=0.25),
        0.5 * anb.LogitDiff(a, b) + anb.Logit(model.token_strings([3])[0]),
    ]


def _spec(model, graph, targets):
    """Each target as the reference computes it."""
    T = len(graph.tokens)
    W_U = model.unembed_weight.double()
    demeaned = W_U - W_U.mean(0)
    out = []
    for t in targets:
        if isinstance(t, anb.Direction):
            v = t.vector.double()
            v = v @ demeaned if len(v) == W_U.shape[0] else v
            out.append(("direction", t.layer, t.position % T, v))
        else:  # logit differences and the mix: from the unembedding rows, by hand
            terms = t.terms()
            v = torch.zeros(W_U.shape[1], dtype=torch.float64)
            for c, part in terms:
                if isinstance(part, anb.LogitDiff):
                    v += c * (demeaned[model.token_id(part.a)] - demeaned[model.token_id(part.b)])
                else:
                    v += c * demeaned[model.token_id(part.token)]
            out.append(("direction", None, T - 1, v))
    return out


@pytest.fixture(scope="module", params=CASES, ids=case_id)
def case(request):
    model, ref = case_model(request.param, PROMPT)
    targets = _targets(model, len(model.tokenize(PROMPT)))
    graph = anb.attribute(
        model, PROMPT, targets=targets, progress=False, batch_size=16, bos_features=True, rows="all"
    )
    return model, graph, ref, _spec(model, graph, targets)


def test_target_values_and_edges_sum_to_them(case):
    _, graph, ref, spec = case
    rows = list(np.flatnonzero(graph.kinds == "logit"))
    assert len(rows) == len(spec)
    with torch.no_grad():
        value = ref.targets(ref.clean_sources, spec)
        constant = ref.targets(ref.zero_sources(), spec)
    scale = float(value.abs().max())
    np.testing.assert_allclose(graph.logits.logit, value.numpy(), rtol=0, atol=2e-5 * scale + 1e-6)
    incoming = graph.adjacency[rows].double().sum(1)
    torch.testing.assert_close(incoming + constant, value, rtol=0, atol=2e-5 * scale + 1e-6)


def test_a_logit_difference_is_the_difference_of_demeaned_logits(case):
    model, graph, ref, _ = case
    t = graph.logits.iloc[0]
    a, b = model.token_strings([5, 9])
    assert t.token == f"{a} − {b}" and pd.isna(t.token_id)
    raw = ref.clean_logits[-1]  # before any soft-cap
    assert t.logit == pytest.approx(float(raw[5] - raw[9]), abs=1e-4)


def test_target_edges_are_jacobian_rows(case):
    _, graph, ref, spec = case
    for r, t in zip(np.flatnonzero(graph.kinds == "logit"), spec):
        expected = jacobian_row(ref, graph, t)
        torch.testing.assert_close(
            graph.adjacency[r].double(),
            expected,
            rtol=0,
            atol=2e-5 * float(expected.abs().max()) + 1e-7,
        )


def test_removing_one_feature_moves_each_target_by_its_edge(case):
    _, graph, ref, spec = case
    rows = list(np.flatnonzero(graph.kinds == "logit"))
    src = ref.clean_sources
    with torch.no_grad():
        base = ref.targets(src, spec)
    feats = graph.nodes[graph.nodes.kind == "feature"]
    strongest = graph.adjacency[rows][:, feats.index].abs().sum(0).argsort(descending=True)[:3]
    for j in feats.index[strongest.numpy()]:
        f = graph.nodes.iloc[j]
        acts = [a.clone() for a in src.acts]
        acts[f.layer][f.position, f.feature] = 0.0
        with torch.no_grad():
            removed = ref.targets(Sources(src.embed, acts, src.errors.clone()), spec)
        torch.testing.assert_close(
            graph.adjacency[rows, j], (base - removed).float(), rtol=1e-4, atol=1e-5
        )


def test_weights_drive_influence_and_the_file_keeps_targets(llama, tmp_path):
    T = len(llama.tokenize(PROMPT))
    graph = anb.attribute(llama, PROMPT, targets=_targets(llama, T), progress=False)
    np.testing.assert_allclose(
        graph.logit_weights[graph.kinds == "logit"], [1.0, 1.0, 0.5, 0.25, 1.0]
    )
    assert list(graph.logits.node_id) == [
        f"l:P{T - 1}:c0",
        f"l:P{T - 1}:c1",
        f"l:P{T - 2}:c2",
        f"l:P{T - 1}:c3",
        f"l:P{T - 1}:c4",
    ]
    mid = graph.node(f"l:P{T - 2}:c2")
    assert mid.position == T - 2 and mid.token == "mid"
    # no edge into the layer-1 target comes from layer 1 or above, nor from a later position
    incoming, _ = graph.edges_of(mid.node_id)
    assert all(graph.node(s).layer < 1 and graph.node(s).position <= T - 2 for s in incoming.source)
    graph.save(tmp_path / "t.graph")
    back = anb.AttributionGraph.load(tmp_path / "t.graph")
    pd.testing.assert_frame_equal(back.logits, graph.logits)
    assert anb.NodeId.parse("l:P3:c2") == anb.NodeId("logit", position=3, target=2)


def test_a_contrast_on_the_demo_model_is_explained_by_texas_features():
    model = anb.load_model()
    graph = anb.attribute(
        model, PROMPT, targets=anb.LogitDiff("austin", "sacramento"), progress=False
    )
    top = graph.prune(0.8, 0.98).top_features(5)
    assert any("texas" in label or "austin" in label for label in top.label), list(top.label)


@pytest.mark.parametrize(
    "targets,message",
    [
        ([anb.LogitDiff("austin", "austin")], "compares a token with itself"),
        ([anb.Direction([1.0, 2.0])], "a Direction's vector has 2 entries"),
        ([anb.Direction(np.ones(128), layer=9)], "layer must be below 4"),
        ([anb.Direction(np.ones(128), position=40)], "position must be in"),
        (
            [anb.Direction(np.ones(128), name="x"), anb.Direction(np.ones(128), name="x")],
            "both named 'x'",
        ),
        ([anb.Direction(np.ones(128)) + anb.Direction(np.ones(128), layer=1)], "at one place"),
        ([anb.LogitDiff("austin", "zzzz")], "not in the vocabulary"),
        ([], "targets is empty"),
    ],
)
def test_bad_targets_say_what_is_wrong(targets, message):
    model = anb.load_model()
    with pytest.raises(ValueError, match=message):
        anb.attribute(model, PROMPT, targets=targets, progress=False)


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda: anb.LogitDiff("a", "b", weight=0), "weight must be in"),
        (lambda: anb.Direction([[1.0]]), "must be 1-D"),
        (lambda: anb.Direction([np.nan]), "finite"),
        (lambda: anb.Direction([1.0], position=1.5), "position must be an integer"),
        (lambda: "x" * anb.Logit("a"), "coefficient"),
    ],
)
def test_bad_target_objects_are_refused_when_made(make, message):
    with pytest.raises(ValueError, match=message):
        make()
