"""``validate``: a graph's claims tested by perturbation, on hand-built cases where the answers
are known, and on the demo model."""

import numpy as np
import pytest
import torch
from conftest import PROMPT

import attribution_nb as anb
from attribution_nb.demo import tiny_model
from attribution_nb.interventions import free_activations, parse_interventions
from attribution_nb.validation import propagate, validation_figure


@pytest.fixture(scope="module")
def planted():
    """A tiny model where feature B (layer 2, last position) is built to read feature A's
    (layer 0, last position) write: A's decoder is made large and B's encoder is A's decoder
    direction, threshold 0; C is an active feature at an earlier position, which A cannot reach."""
    model = tiny_model("llama", seed=3, d_features=64)
    T = len(model.tokenize(PROMPT))
    cap = model.capture(model.tokenize(PROMPT))
    a = int(cap.activations[0][T - 1].argmax())
    b = 7
    with torch.no_grad():
        tc0, tc2 = model.transcoders[0], model.transcoders[2]
        tc0.W_dec[a] *= 40.0 / float(tc0.W_dec[a].norm())
        tc2.W_enc[:, b] = tc0.W_dec[a] / tc0.W_dec[a].norm()
        tc2.b_enc[b] = 0.0
        tc2.threshold[b] = 0.0
    graph = anb.attribute(model, PROMPT, progress=False)
    ids = set(graph.nodes.node_id)
    A, B = f"f:L0:P{T - 1}:{a}", f"f:L2:P{T - 1}:{b}"
    assert A in ids and B in ids, "the planted features must be active"
    feats = graph.nodes[
        (graph.nodes.kind == "feature") & (graph.nodes.position < T - 2) & (graph.nodes.layer == 3)
    ]
    C = feats.sort_values("activation").node_id.iloc[-1]
    return model, graph, {"A": [A], "B": [B], "C": [C]}


def test_a_planted_path_is_predicted_and_observed(planted):
    model, graph, groups = planted
    table = anb.validate(graph, model, groups)
    feeds = table[table.claim == "feeds"].set_index(["group", "affects"])
    ab = feeds.loc[("A", "B")]
    assert ab.predicted < 0 and ab.observed < 0 and ab.agrees  # ablating A lowers B, as built
    # observed, independently: B's activation with and without A, from the transcoders
    tokens = model.tokenize(PROMPT)
    T = len(tokens)
    b = int(groups["B"][0].split(":")[-1])
    _, acts = free_activations(model, tokens, parse_interventions(model, {groups["A"][0]: 0.0}, T))
    clean = model.capture(tokens).activations[2][T - 1, b]
    assert ab.observed == pytest.approx(float(acts[2][T - 1, b] - clean), rel=1e-4)
    assert float(acts[2][T - 1, b]) < 0.5 * float(clean)


def test_a_group_that_cannot_be_reached_is_predicted_and_observed_unmoved(planted):
    model, graph, groups = planted
    table = anb.validate(graph, model, groups)
    # C sits at an earlier position than A: no path, and causal attention cannot carry anything back
    assert ("A", "C") not in set(
        zip(table.group, table.affects)
    )  # not even a claim: C cannot see A
    unreachable = propagate(graph, {graph.index(groups["A"][0]): 0.0})[graph.index(groups["C"][0])]
    assert unreachable == 0.0
    # and a claim the graph makes about "no path" agrees with an unmoved group
    table2 = anb.validate(graph, model, {"B": groups["B"], "C2": groups["C"]})
    assert table2[table2.claim == "feeds"].empty  # C (earlier position) cannot see B either


def test_in_frozen_mode_predicted_equals_observed(planted):
    model, graph, groups = planted
    table = anb.validate(graph, model, groups, mode="frozen", how=0.5)
    assert set(table.claim) == {"target"}
    np.testing.assert_allclose(table.predicted, table.observed, rtol=1e-3, atol=1e-5)
    assert table.agrees.all()


def test_on_the_demo_model_the_main_claims_hold():
    model = anb.load_model()
    graph = anb.attribute(model, PROMPT, progress=False)
    table = anb.validate(graph, model)
    assert len(table) >= 6 and table.agrees.mean() >= 0.75
    top = table[table.claim == "target"].iloc[0]  # the most influential group
    assert top.predicted < 0 and top.observed < 0 and top.agrees
    fig = validation_figure(table)
    assert {t.name for t in fig.data} >= {"target", "feeds", "observed = predicted"}


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"groups": {}}, "no groups to test"),
        ({"groups": {"x": ["t:P0:1"]}}, "feature nodes only"),
        ({"mode": "warm"}, "mode must be"),
        ({"target": "f:L0:P1:1"}, "unknown node id|token logit node"),
    ],
)
def test_bad_arguments_say_what_is_wrong(planted, kwargs, message):
    model, graph, _ = planted
    with pytest.raises((ValueError, KeyError), match=message):
        anb.validate(graph, model, **kwargs)
