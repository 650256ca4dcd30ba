"""GraphWidget and the payload without a browser: the browser's pruning rule (``prune.js``, run
in node on the payload) against the graph's, the messages the front end sends against the
intervention API, refusals against the status line.  What a person sees is in test_browser.py."""

import gc
import html
import json
import weakref

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import PROMPT
from front_end import run_js

import attribution_nb as anb
from attribution_nb.views import payload as payload_module
from attribution_nb.views.drawing import draw_data
from attribution_nb.views.payload import NEVER, axis_token, graph_payload
from attribution_nb.views.widget import GraphWidget

pytest.importorskip("anywidget")


@pytest.fixture(scope="module")
def widget(llama, llama_graph):
    return GraphWidget(llama_graph, llama)


def send(w, **msg):
    """What the front end does: a message to the kernel."""
    w._on_message(w.view, msg, [])


def browser_prune(payload: dict, nt: float, et: float):
    """``static/js/prune.js``'s pruning itself, run in node on the payload: kept node and edge masks."""
    got = run_js(
        "prune.js",
        "const {node, edge} = m.prune(data.G, data.nt, data.et); "
        "return [Array.from(node), Array.from(edge)];",
        {"G": payload, "nt": nt, "et": et},
    )
    return np.array(got[0], dtype=bool), np.array(got[1], dtype=bool)


@pytest.mark.parametrize(
    "nt,et", [(0.8, 0.98), (0.5, 0.9), (0.95, 0.7), (1.0, 1.0), (0.0, 0.5), (0.3, 0.0)]
)
def test_the_browser_prunes_the_payload_as_the_graph_prunes(llama_graph, nt, et):
    p = graph_payload(llama_graph)
    node, edge = browser_prune(p, nt, et)
    node_mask, edge_mask = llama_graph.prune_masks(nt, et)
    assert sorted(np.array(p["nodes"]["id"])[node]) == sorted(llama_graph.nodes.node_id[node_mask])
    assert int(edge.sum()) == int(edge_mask.sum())
    # the same edges, by (source, target) ids
    ids = np.array(p["nodes"]["id"])
    got = set(zip(ids[np.array(p["edges"]["s"])[edge]], ids[np.array(p["edges"]["t"])[edge]]))
    pruned = llama_graph.prune(nt, et).edges
    assert got == set(zip(pruned.source, pruned.target))


def test_a_capped_payload_stops_the_slider_where_the_sent_edges_end(llama_graph, monkeypatch):
    monkeypatch.setattr(payload_module, "MAX_EDGES", 200)
    p = graph_payload(llama_graph)
    top = p["max_edge_threshold"]
    assert 0 < top < 1 and len(p["edges"]["w"]) <= 200
    node, edge = browser_prune(p, 0.8, top)  # at the slider's end the browser is still exact
    assert int(edge.sum()) == int(llama_graph.prune_masks(0.8, top)[1].sum())


def test_shares_rank_like_the_pruning_function():
    scores = np.array([3.0, 0.0, 1.0, 1.0, 5.0])
    mb = payload_module.shares(scores)
    np.testing.assert_allclose(mb[[4, 0, 2, 3]], [-np.inf, 0.5, 0.8, 0.9])
    assert mb[1] == NEVER


def test_axis_tokens_are_visible():
    assert axis_token(",") == "“,”" and axis_token(" ") == "“␣”" and axis_token("\n") == "“⏎”"
    assert axis_token(" dallas") == "dallas" and axis_token("東京") == "東京"


def test_state_drives_what_is_drawn(widget, llama_graph):
    for nt, et in [(0.8, 0.98), (0.5, 0.9), (1.0, 1.0)]:
        widget.state = {"node_threshold": nt, "edge_threshold": et, "collapse": False}
        pruned = llama_graph.prune(nt, et)
        assert (
            widget.drawn["nodes"] == len(pruned.nodes) and widget.drawn["edges"] == pruned.n_edges
        )
        assert widget.drawn["ids"] == list(pruned.nodes.node_id)
        assert (widget.view.node_threshold, widget.view.edge_threshold) == (
            nt,
            et,
        )  # what the browser reads
    with pytest.raises(ValueError, match="node_threshold must be in"):
        widget.state = {"node_threshold": 1.5}
    with pytest.raises(KeyError, match=r"unknown state keys \['zoom'\]"):
        widget.state = {"zoom": 2}


def test_feature_details_are_computed_independently(widget, llama_graph, llama):
    node = llama_graph.top_features(1).node_id[0]
    n = llama_graph.node(node)
    info = widget.view.payload["details"][node]
    scores = (
        llama.unembed_weight.double()
        @ llama.transcoders[int(n.layer)].W_dec[int(n.feature)].double()
    )
    assert info["promotes"][0][0] == axis_token(llama.token_strings([int(scores.argmax())])[0])
    assert info["suppresses"][0][0] == axis_token(llama.token_strings([int(scores.argmin())])[0])
    # the values are demeaned over the vocabulary
    assert info["promotes"][0][1] == pytest.approx(float(scores.max() - scores.mean()), rel=1e-4)


def test_details_of_a_feature_not_sent_up_front_come_on_request(llama, llama_graph, monkeypatch):
    monkeypatch.setattr(payload_module, "MAX_DETAILS", 0)
    w = GraphWidget(llama_graph, llama)
    assert w.view.payload["details"] == {}
    node = llama_graph.top_features(3).node_id[2]
    send(w, action="details", node=node)
    assert set(w.view.details) == {node} and w.view.details[node]["promotes"]


def test_clamp_run_and_the_code_it_gives(widget, llama, llama_graph):
    node = llama_graph.top_features(1).node_id[0]
    send(widget, action="reset")
    send(widget, action="clamp", node=node, how="-2x")
    assert widget.state["interventions"] == {node: anb.Multiply(-2.0)}
    assert widget.view.queue == [[node, "×-2"]]
    # "copy as code" gives a call that reproduces the run
    model = llama
    from_code = eval(widget.view.code, {"model": model, "anb": anb})  # noqa: S307 (our own string)
    expected = llama.intervene(PROMPT, {node: anb.Multiply(-2.0)})
    pd.testing.assert_frame_equal(from_code, expected)
    runs_before = len(widget.view.runs)
    widget.view.mode = "free"
    send(widget, action="run")
    run = widget.view.runs[-1]
    assert len(widget.view.runs) == runs_before + 1 and run["mode"] == "free"
    top = expected.head(1)
    assert run["rows"][0][:2] == [top.token[0], f"{top.p_before[0]:.3f}"]
    assert widget.last_generation == llama.generate(
        PROMPT, {node: anb.Multiply(-2.0)}, max_new_tokens=6
    )
    assert run["after"] == widget.last_generation["after"]
    send(widget, action="reset")
    assert (
        widget.state["interventions"] == {} and widget.view.queue == [] and widget.view.code == ""
    )


def test_a_frozen_run_shows_the_graphs_prediction_next_to_what_happened(widget, llama, llama_graph):
    a, b = llama_graph.top_features(2).node_id
    send(widget, action="reset")
    send(widget, action="clamp", node=a, how="ablate")
    send(widget, action="clamp", node=b, how=1.5)
    widget.view.mode = "frozen"
    send(widget, action="run")
    widget.view.mode = "free"
    run = widget.view.runs[-1]
    assert run["columns"] == ["logit", "predicted Δ", "observed Δ"] and len(run["rows"]) == len(
        llama_graph.logits
    )
    # predicted, independently: −edge for the ablation, edge × (1.5/a − 1) for the set value
    act_b = float(llama_graph.node(b).activation)
    for (_token, predicted, observed), logit in zip(run["rows"], llama_graph.logits.node_id):
        want = -llama_graph.edge(a, logit) + llama_graph.edge(b, logit) * (1.5 / act_b - 1)
        assert float(predicted) == pytest.approx(want, abs=1e-4)
        assert float(observed) == pytest.approx(want, abs=2e-3 + 1e-3 * abs(want))
    send(widget, action="reset")


@pytest.mark.parametrize(
    "message,shown",
    [
        ({"action": "run"}, "nothing queued"),
        ({"action": "clamp", "node": None, "how": "ablate"}, "select a feature first"),
        (
            {"action": "clamp", "node": "TOKEN", "how": "ablate"},
            "only features and error nodes can be clamped",
        ),
        ({"action": "clamp", "node": "FEATURE", "how": 1e9}, "a clamp value must be in"),
        ({"action": "clamp", "node": "FEATURE", "how": "3x"}, "a clamp is 'ablate'"),
        ({"action": "group", "name": "  ", "members": ["FEATURE"]}, "non-empty name"),
        ({"action": "label", "node": None, "text": "x"}, "select a feature"),
        ({"action": "teleport"}, "unknown action 'teleport'"),
    ],
)
def test_refusals_show_in_the_status_line(widget, llama_graph, message, shown):
    token = llama_graph.nodes.node_id[llama_graph.nodes.kind == "token"].iloc[1]
    feature = llama_graph.top_features(1).node_id[0]
    message = json.loads(json.dumps(message).replace("TOKEN", token).replace("FEATURE", feature))
    send(widget, action="reset")
    send(widget, **message)
    assert widget.view.status["level"] == "error" and shown in widget.view.status["text"], (
        widget.view.status
    )
    assert widget.state["interventions"] == {}


def test_labels_pins_and_supernodes_are_saved(llama, tmp_path):
    graph = anb.attribute(llama, PROMPT, progress=False)
    w = GraphWidget(graph, llama)
    ids = [i for i in w.drawn["ids"] if i.startswith("f:")][:3]
    send(w, action="group", name="group A", members=ids)
    assert (
        graph.supernodes == {"group A": ids}
        and w.view.supernodes == {"group A": ids}
        and w.view.pinned == []
    )
    send(w, action="label", node=ids[0], text="my label")
    assert graph.node(ids[0]).label == "my label" and w.view.labels == {ids[0]: "my label"}
    expanded = draw_data(graph, 0.8, 0.98)
    w.state = {"collapse": True}
    collapsed = draw_data(graph, 0.8, 0.98, collapse=True)
    assert w.drawn["ids"] == list(collapsed["ids"]) and "s:group A" in w.drawn["ids"]
    assert collapsed["n_nodes"] == expanded["n_nodes"] - len(ids) + 1
    # an edge from the group to a node outside it is the sum of its members' edges
    g = list(collapsed["ids"]).index("s:group A")
    inside = {list(expanded["ids"]).index(i) for i in ids}
    for k in np.flatnonzero(collapsed["source"] == g):
        t = list(expanded["ids"]).index(collapsed["ids"][collapsed["target"][k]])
        want = sum(
            expanded["weight"][e]
            for e in range(expanded["n_edges"])
            if expanded["source"][e] in inside and expanded["target"][e] == t
        )
        assert collapsed["weight"][k] == pytest.approx(want)
    graph.save(tmp_path / "g.graph")
    back = anb.AttributionGraph.load(tmp_path / "g.graph")
    assert back.supernodes == {"group A": ids} and back.node(ids[0]).label == "my label"


def test_the_whole_state_round_trips(widget, llama_graph):
    a, b = llama_graph.top_features(2).node_id
    widget.state = {
        "node_threshold": 0.7,
        "edge_threshold": 0.95,
        "selected": a,
        "picked": [a],
        "supernodes": {"pair": [a, b]},
    }
    widget.clamp(a, "-2x")
    before = widget.state
    widget.state = before
    assert widget.state == before and widget.state["interventions"][a] == anb.Multiply(-2.0)
    assert widget.view.selected == a and widget.view.pinned == [a]
    with pytest.raises(KeyError, match="f:L9:P9:9"):
        widget.select("f:L9:P9:9")
    widget.reset()
    widget.state = {"supernodes": {}, "picked": [], "selected": None}


def test_no_model_no_interventions(llama_graph):
    w = GraphWidget(llama_graph)
    assert w.view.has_model is False and w.view.payload["details"] == {}
    with pytest.raises(ValueError, match="no model"):
        w.clamp(llama_graph.top_features(1).node_id[0], "ablate")
    with pytest.raises(TypeError, match="AttributionGraph"):
        GraphWidget("not a graph")


def test_plotly_is_sent_when_the_browser_asks(llama_graph):
    w = GraphWidget(llama_graph)
    sent = []
    w.view.send = lambda content, buffers=None: sent.append(content)
    send(w, action="plotly")
    assert (
        sent[0]["type"] == "plotly"
        and "Plotly" in sent[0]["source"]
        and len(sent[0]["source"]) > 1_000_000
    )
    # the widget itself carries no bundle: its front end is static/js/, a few tens of kB
    assert (
        len(
            type(w.view)._esm.default_value
            if hasattr(type(w.view)._esm, "default_value")
            else w.view._esm
        )
        < 100_000
    )


def test_closed_widgets_leave_nothing_registered(llama_graph):
    from ipywidgets.widgets.widget import _instances

    before = len(_instances)
    for _ in range(5):
        GraphWidget(llama_graph).close()
    assert len(_instances) == before


def test_close_releases_the_view(llama_graph):
    w = GraphWidget(llama_graph)
    ref, view_ref = weakref.ref(w), weakref.ref(w.view)
    w.close()
    assert w.view.comm is None
    del w
    gc.collect()
    assert ref() is None and view_ref() is None


def test_standalone_html_holds_the_graph_and_the_panel(llama, llama_graph, tmp_path):
    path = llama_graph.to_html(tmp_path / "g.html", model=llama)
    text = open(path, encoding="utf-8").read()
    assert "Plotly" in text and len(text) > 1_000_000  # plotly's bundle is inside: no network
    data = json.loads(
        text.split('<script type="application/json" id="anb-data">')[1].split("</script>")[0]
    )
    assert data["max_edge_threshold"] == 1.0
    node, edge = browser_prune(data, 1.0, 1.0)  # the full range: every edge that holds anything
    assert int(edge.sum()) == int(llama_graph.prune_masks(1.0, 1.0)[1].sum())
    top = llama_graph.top_features(1).node_id[0]
    assert data["details"][top]["promotes"]
    with pytest.raises(ValueError, match="edge_threshold must be in"):
        llama_graph.to_html(tmp_path / "x.html", edge_threshold=1.5)


def test_panel_contexts_come_from_the_model():
    model = anb.load_model()
    graph = anb.attribute(model, PROMPT, progress=False)
    w = GraphWidget(graph, model)
    node = next(
        n
        for n in graph.top_features(20).itertuples()
        if (n.layer, n.feature) in model.feature_contexts
    )
    text, act = model.feature_contexts[(node.layer, node.feature)][0]
    assert w.view.payload["details"][node.node_id]["contexts"][0] == [text, pytest.approx(act)]
    assert html.escape(text) not in ("",)
    for n in graph.top_features(
        20
    ).itertuples():  # the latent each feature detects best, where measured
        assert w.view.payload["details"].get(n.node_id, {}).get("latent", "") in (
            "",
            model.feature_latents.get((n.layer, n.feature), ""),
        )
    assert any(d.get("latent") for d in w.view.payload["details"].values())


def test_predicted_change_matches_frozen_mode_exactly(llama, llama_graph):
    w = GraphWidget(llama_graph, llama)
    a = llama_graph.top_features(1).node_id[0]
    before, after = llama.intervened_logits(PROMPT, {a: anb.Multiply(3.0)}, mode="frozen")
    ids = torch.tensor(llama_graph.logits.token_id.to_numpy())
    d = after.double() - before.double()
    observed = (d[ids] - d.mean()).numpy()
    np.testing.assert_allclose(
        w.predicted_change({a: anb.Multiply(3.0)}), observed, rtol=1e-3, atol=1e-4
    )


def test_custom_targets_are_drawn_like_logits_with_their_value(llama, tmp_path):
    a, b = llama.token_strings([5, 9])
    graph = anb.attribute(llama, PROMPT, targets=[anb.LogitDiff(a, b)], progress=False)
    p = graph_payload(graph)
    i = p["nodes"]["id"].index(graph.logits.node_id[0])
    assert (
        p["nodes"]["kind"][i] == "logit"
        and p["nodes"]["name"][i] == f"{a} − {b} = {graph.logits.logit[0]:.2f}"
    )
    with pytest.raises(ValueError, match="custom target"):
        graph.to_neuronpedia(tmp_path)


def test_the_heads_of_an_edge_come_with_their_qk_pairs(llama, llama_graph):
    w = GraphWidget(llama_graph, llama)
    e = llama_graph.edges
    pos = dict(zip(llama_graph.nodes.node_id, llama_graph.nodes.position))
    cross = e[
        np.array([pos[a] < pos[b] for a, b in zip(e.source, e.target)])
        & e.target.str.startswith("f:").to_numpy()
    ]
    row = cross.loc[cross.weight.abs().idxmax()]
    send(w, action="heads", source=row.source, target=row.target)
    shown = w.view.heads
    assert shown["edge"] == pytest.approx(row.weight, rel=1e-4, abs=1e-6)
    loads = anb.edge_heads(llama, PROMPT, row.source, row.target)
    assert shown["rows"][0][:2] == [loads["layer"][0], loads["head"][0]]
    qk = anb.attribute_attention(
        llama,
        PROMPT,
        int(loads["layer"][0]),
        int(loads["head"][0]),
        pos[row.target],
        pos[row.source],
    )
    assert shown["score"] == pytest.approx(qk.attrs["score"]) and 1 <= len(shown["qk"]) <= 5
    assert w.view.status["level"] == "info" and "carries" in w.view.status["text"]
    send(
        w, action="heads", source=row.target, target=row.source
    )  # backwards: refused in the status line
    assert w.view.status["level"] == "error" and row.target in w.view.status["text"]


def test_testing_the_pinned_subgraph_adds_the_table_to_the_runs(llama, llama_graph):
    w = GraphWidget(llama_graph, llama)
    send(w, action="validate")
    assert w.view.status["level"] == "error" and "pin some features" in w.view.status["text"]
    a, b = llama_graph.top_features(2).node_id
    w.state = {"picked": [a, b]}
    send(w, action="validate")
    run = w.view.runs[-1]
    table = anb.validate(llama_graph, llama, {"pinned": [a, b]})
    assert run["mode"] == "test" and len(run["rows"]) == len(table)
    assert run["rows"][0][:3] == list(table.iloc[0][["claim", "group", "affects"]])
    assert f"{int(table.agrees.sum())} agree" in run["what"]


def test_the_status_line_says_where_adaptive_rows_are_not_proved(llama):
    """A graph with features left without rows is exact when pruned at its ``prune_thresholds``
    only: elsewhere the widget's status line says so (and goes when the sliders come back)."""
    demo = anb.load_model()
    graph = anb.attribute(
        demo, "fact : the capital of the state containing dallas is", progress=False
    )
    assert (
        graph.info["features_without_rows"] > 0
    )  # top-layer features away from the answer's position
    w = GraphWidget(graph, demo)
    assert w.view.status == {}
    w.view.node_threshold = 0.6
    n = graph.info["features_without_rows"]
    assert (
        w.view.status["level"] == "info"
        and f"{n} features of this graph have no rows" in w.view.status["text"]
    )
    assert "(0.6, 0.98)" in w.view.status["text"] and "rows='all'" in w.view.status["text"]
    w.view.node_threshold = 0.8
    assert w.view.status == {}
    w.close()
    every = anb.attribute(llama, PROMPT, progress=False, rows="all")
    w = GraphWidget(every, llama, node_threshold=0.5)
    assert every.info["features_without_rows"] == 0 and w.view.status == {}
    w.close()


@pytest.mark.parametrize(
    "state, says",
    [
        ({"supernodes": {"ok": None, "bad": ["nope"]}}, "maps names to lists"),
        ({"supernodes": {"ok": ["F"], "bad": ["nope"]}}, r"nodes \['nope'\] are not in this graph"),
        ({"node_threshold": 0.5, "interventions": {"f:L9:P9:9": 0}}, "not in this graph"),
        ({"node_threshold": 0.5, "selected": 5}, "not in this graph"),
        ({"picked": [], "edge_threshold": 7}, "edge_threshold"),
        ([("supernodes", {})], "state must be a dict"),
    ],
)
def test_a_refused_state_changes_nothing(llama, llama_graph, state, says):
    """(Issue 31's reproducer: a refused state used to wipe the user's supernodes first.)"""
    g = llama_graph.subgraph(np.ones(len(llama_graph.nodes), dtype=bool))
    f = g.top_features(1).node_id[0]
    g.add_supernode("mine", [f])
    w = GraphWidget(g, llama)
    if isinstance(state, dict) and state.get("supernodes", {}).get("ok") == ["F"]:
        state = {"supernodes": {"ok": [f], "bad": ["nope"]}}  # (the top feature, known only here)
    before = w.state
    with pytest.raises((ValueError, KeyError, TypeError), match=says):
        w.state = state
    assert w.state == before and g.supernodes == {"mine": [f]}
    w.close()


def test_a_numeric_node_from_the_browser_goes_to_the_status_line(widget):
    widget._on_message(widget.view, {"action": "select", "node": 5}, [])
    widget._on_message(widget.view, {"action": "label", "node": 7, "text": "x"}, [])
    assert (
        "got 7" in widget.view.status.get("text", "") and widget.view.status.get("level") == "error"
    )
    with pytest.raises(ValueError, match="select takes a node id string"):
        widget.select(5)
