"""GraphWidget without a browser: what it draws against the pruning function, the panel
against the graph's edge table, the buttons against the intervention API."""

import json

import numpy as np
import pandas as pd
import pytest
from conftest import PROMPT

import attribution_nb as anb
from attribution_nb.views.drawing import draw_data
from attribution_nb.views.widget import HIGHLIGHT_TRACE, N_EDGE_TRACES, NODE_TRACE, GraphWidget

pytest.importorskip("plotly")
pytest.importorskip("ipywidgets")


@pytest.fixture(scope="module")
def widget(llama, llama_graph):
    return GraphWidget(llama_graph, llama)


def _drawn_segments(w) -> int:
    """Edges drawn across the edge traces (each segment is x0, x1, NaN)."""
    return sum(int(np.isnan(np.asarray(w.figure.data[i].x, dtype=float)).sum()) for i in range(N_EDGE_TRACES))


@pytest.mark.parametrize("nt,et", [(0.8, 0.98), (0.5, 0.9), (0.95, 0.7), (1.0, 1.0)])
def test_figure_matches_the_pruned_graph(widget, llama_graph, nt, et):
    widget.state = {"node_threshold": nt, "edge_threshold": et, "collapse": False}
    pruned = llama_graph.prune(nt, et)
    node_trace = widget.figure.data[NODE_TRACE]
    assert len(node_trace.x) == len(pruned.nodes) == widget.drawn["nodes"]
    assert list(node_trace.customdata) == list(pruned.nodes.node_id)
    assert _drawn_segments(widget) == pruned.n_edges == widget.drawn["edges"]
    # tokens on the bottom row, logits on top, each node at its prompt position (± its cell)
    y = np.asarray(node_trace.y)
    assert (y[pruned.nodes.kind.to_numpy() == "token"] == -1).all()
    assert (y[pruned.nodes.kind.to_numpy() == "logit"] == llama_graph.n_layers).all()
    assert np.all(np.abs(np.asarray(node_trace.x) - pruned.nodes.position.to_numpy()) <= 0.4 + 1e-9)
    assert f"{len(pruned.nodes)} nodes, {pruned.n_edges} edges drawn" in widget.status.value


def test_edges_are_coloured_by_sign(widget, llama_graph):
    widget.state = {"node_threshold": 0.9, "edge_threshold": 0.99, "collapse": False}
    data = widget._data
    positive = sum(int(np.isnan(np.asarray(widget.figure.data[i].x, dtype=float)).sum()) for i in range(N_EDGE_TRACES // 2))
    assert positive == int((data["weight"] > 0).sum())
    assert all(widget.figure.data[i].type == "scattergl" for i in range(NODE_TRACE + 1))


def test_moving_a_slider_redraws_as_pruning_says(widget, llama_graph):
    widget.state = {"node_threshold": 0.8, "edge_threshold": 0.98}
    counts = []
    for et in (0.98, 0.9, 0.6, 0.3):
        widget.edge_slider.value = et          # as the browser does
        node_mask, edge_mask = llama_graph.prune_masks(0.8, et)
        assert widget.drawn["edges"] == int(edge_mask.sum()) == _drawn_segments(widget)
        assert widget.drawn["nodes"] == int(node_mask.sum())
        counts.append(widget.drawn["edges"])
    assert counts == sorted(counts, reverse=True) and counts[-1] < counts[0]


def test_selecting_a_node_fills_the_panel(widget, llama_graph):
    widget.state = {"node_threshold": 0.8, "edge_threshold": 0.98}
    node = llama_graph.top_features(1).node_id[0]
    widget.select(node)
    assert widget.state["selected"] == node
    # independently, from the graph's edge table
    edges = llama_graph.edges
    inc = edges[edges.target == node]
    out = edges[edges.source == node]
    tables = widget.edge_tables(node, k=5)
    assert list(tables["incoming +"].source) == list(inc[inc.weight > 0].nlargest(5, "weight").source)
    assert list(tables["incoming −"].source) == list(inc[inc.weight < 0].nsmallest(5, "weight").source)
    assert list(tables["outgoing +"].target) == list(out[out.weight > 0].nlargest(5, "weight").target)
    np.testing.assert_allclose(tables["outgoing +"].weight, out[out.weight > 0].nlargest(5, "weight").weight)
    html = widget.panel.value
    assert node in html and tables["incoming +"].source[0] in html
    n = llama_graph.node(node)
    assert f"{n.activation:.4g}" in html
    # its top output tokens: decoder row through the unembedding, computed here by hand
    W = widget.model.unembed_weight.double() @ widget.model.transcoders[int(n.layer)].W_dec[int(n.feature)].double()
    best = widget.model.token_strings([int(W.argmax())])[0]
    assert f"<td>{best}</td>" in html
    # the selected node's drawn edges are highlighted, the rest fade
    data = widget._data
    j = list(data["ids"]).index(node)
    mine = int(((data["source"] == j) | (data["target"] == j)).sum())
    assert int(np.isnan(np.asarray(widget.figure.data[HIGHLIGHT_TRACE].x, dtype=float)).sum()) == mine
    assert widget.figure.data[0].opacity < 1
    widget.select(None)
    assert widget.figure.data[0].opacity == 1 and len(widget.figure.data[HIGHLIGHT_TRACE].x) == 0


def test_clamp_button_runs_the_intervention(widget, llama, llama_graph):
    node = llama_graph.top_features(1).node_id[0]
    widget.select(node)
    widget.reset()
    widget.inhibit_button.click()
    assert widget.state["interventions"] == {node: anb.Multiply(-2.0)}
    widget.run_button.click()
    expected = llama.intervene(PROMPT, {node: anb.Multiply(-2.0)}, top_k=5)
    pd.testing.assert_frame_equal(widget.last_result, expected)
    assert "anb-before-after" in widget.result.value and expected.token[0] in widget.result.value
    assert widget.last_generation == llama.generate(PROMPT, {node: anb.Multiply(-2.0)}, max_new_tokens=6)
    widget.reset_button.click()
    assert widget.state["interventions"] == {} and widget.last_result is None


def test_clamp_needs_a_feature_and_a_model(llama_graph, widget):
    token_node = llama_graph.nodes.node_id[llama_graph.nodes.kind == "token"].iloc[1]
    with pytest.raises(ValueError, match="token node"):
        widget.clamp(token_node, "ablate")
    with pytest.raises(ValueError, match="no model"):
        GraphWidget(llama_graph).clamp(llama_graph.top_features(1).node_id[0], "ablate")
    with pytest.raises(KeyError, match="f:L9:P9:9"):
        widget.select("f:L9:P9:9")
    with pytest.raises(KeyError, match="colour"):
        widget.state = {"colour": "red"}
    with pytest.raises(TypeError, match="AttributionGraph"):
        GraphWidget("not a graph")


def test_supernodes_collapse_and_labels_are_saved(llama, tmp_path):
    graph = anb.attribute(llama, PROMPT, progress=False)
    w = GraphWidget(graph, llama)
    w.state = {"node_threshold": 0.8, "edge_threshold": 0.98, "collapse": False}
    ids = [i for i in w.drawn["ids"] if i.startswith("f:")][:3]
    for nid in ids:
        w.select(nid)
        w.pick_button.click()
    w.group_text.value = "group A"
    w.group_button.click()
    assert graph.supernodes == {"group A": ids}
    w.select(ids[0])
    w.label_text.value = "my label"
    w.label_button.click()
    assert graph.node(ids[0]).label == "my label"

    expanded = draw_data(graph, 0.8, 0.98)
    w.state = {"collapse": True}
    collapsed = w._data
    assert "s:group A" in list(collapsed["ids"]) and not set(ids) & set(collapsed["ids"])
    assert collapsed["n_nodes"] == expanded["n_nodes"] - len(ids) + 1
    # an edge from the group to a node outside it is the sum of its members' edges
    g = list(collapsed["ids"]).index("s:group A")
    inside = {list(expanded["ids"]).index(i) for i in ids}
    for k in np.flatnonzero(collapsed["source"] == g):
        target = collapsed["ids"][collapsed["target"][k]]
        t = list(expanded["ids"]).index(target)
        want = sum(expanded["weight"][e] for e in range(expanded["n_edges"])
                   if expanded["source"][e] in inside and expanded["target"][e] == t)
        assert collapsed["weight"][k] == pytest.approx(want)

    graph.save(tmp_path / "g.graph")
    back = anb.AttributionGraph.load(tmp_path / "g.graph")
    assert back.supernodes == {"group A": ids} and back.node(ids[0]).label == "my label"


def test_state_round_trip(widget, llama_graph):
    node = llama_graph.top_features(2).node_id[1]
    widget.state = {"node_threshold": 0.6, "edge_threshold": 0.9, "selected": node}
    s = widget.state
    assert (s["node_threshold"], s["edge_threshold"], s["selected"]) == (0.6, 0.9, node)
    assert widget.node_slider.value == 0.6 and widget.edge_slider.value == 0.9


def test_the_whole_state_round_trips(widget, llama_graph):
    """``w.state = w.state`` is the identity, pending clamps and supernodes included."""
    a, b = llama_graph.top_features(2).node_id
    widget.state = {"node_threshold": 0.7, "edge_threshold": 0.95, "selected": a, "picked": [a],
                    "supernodes": {"pair": [a, b]}}
    widget.clamp(a, "-2x")
    before = widget.state
    widget.state = before
    assert widget.state == before and widget.state["interventions"][a] == anb.Multiply(-2.0)
    with pytest.raises(KeyError, match=r"unknown state keys \['zoom'\]"):
        widget.state = {"zoom": 2}
    widget.reset()
    widget.state = {"supernodes": {}}


def test_close_releases_the_views_and_callbacks(llama_graph):
    import gc
    import weakref
    w = GraphWidget(llama_graph)
    widget_ref, figure_ref = weakref.ref(w), weakref.ref(w.figure)
    slider = w.node_slider
    w.close()
    assert slider.comm is None and w.root.comm is None and w.figure.comm is None   # the front end lets them go
    assert w.figure.data == ()                                                     # the drawn arrays are dropped
    del w
    gc.collect()
    # nothing holds the widget nor its figure (anywidget's hot-reload connection is undone too)
    assert widget_ref() is None and figure_ref() is None


def test_standalone_html_holds_the_graph(llama_graph, tmp_path):
    path = llama_graph.to_html(tmp_path / "g.html")
    text = open(path, encoding="utf-8").read()
    assert "Plotly" in text and len(text) > 1_000_000          # plotly's bundle is inside: no network
    data = json.loads(text.split('<script type="application/json" id="anb-data">')[1].split("</script>")[0])
    # every node and edge that a slider position can show is in the page
    nm, em = llama_graph.prune_masks(0.95, 0.99)
    ids = set(data["nodes"]["id"])
    assert set(llama_graph.nodes.node_id[nm]) <= ids
    assert len(data["edges"]["w"]) >= int(em.sum())
    with pytest.raises(ValueError, match="edge_threshold must be in"):
        llama_graph.to_html(tmp_path / "x.html", edge_threshold=1.5)
    with pytest.raises(ValueError, match="max_node_threshold"):
        llama_graph.to_html(tmp_path / "x.html", max_node_threshold=1.0)


def test_panel_shows_top_activating_contexts():
    model = anb.load_model()
    graph = anb.attribute(model, PROMPT, progress=False)
    w = GraphWidget(graph, model)
    node = next(n for n in graph.top_features(20).itertuples() if (n.layer, n.feature) in model.feature_contexts)
    w.select(node.node_id)
    text, act = model.feature_contexts[(node.layer, node.feature)][0]
    import html
    assert "where it fires most" in w.panel.value and html.escape(text, quote=False) in w.panel.value
