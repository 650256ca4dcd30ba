"""Neuronpedia / circuit-tracer graph JSON both ways: the viewer's influence semantics, ids that
never collide, feature pages a local viewer reads, and import back into our tables."""

import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pandas as pd
import pytest
import torch

import attribution_nb as anb
from attribution_nb.graph.neuronpedia import cantor, cantor_unpair, cumulative_shares
from attribution_nb.latents import probe_activations

DALLAS = "fact : the capital of the state containing dallas is"


@pytest.fixture(scope="module")
def demo():
    return anb.load_model()


@pytest.fixture(scope="module")
def dallas(demo):
    return anb.attribute(demo, DALLAS, rows="all", progress=False)


def colliding_graph() -> anb.AttributionGraph:
    """Layer 0's feature 0 and layer 0's error node, both at position 1: circuit-tracer's ids are both ``0_0_1``."""
    A = torch.zeros(6, 6)
    A[0, 3], A[0, 4] = 2.0, -1.0  # f0 ← tokens
    A[1, 0], A[1, 2] = 3.0, 1.0  # f1 ← f0, e0
    A[5, 1], A[5, 4] = -4.0, 1.0  # logit ← f1, t1
    nodes = pd.DataFrame(
        {
            "node_id": ["f:L0:P1:0", "f:L1:P1:3", "e:L0:P1", "t:P0:1", "t:P1:5", "l:P1:5"],
            "kind": ["feature", "feature", "error", "token", "token", "logit"],
            "layer": [0, 1, 0, -1, -1, 2],
            "position": [1, 1, 1, 0, 1, 1],
            "token": ["<bos>", "a", "a", "<bos>", "a", "x"],
            "token_id": pd.array([None, None, None, 1, 5, 5], dtype="Int64"),
            "feature": pd.array([0, 3, None, None, None, None], dtype="Int64"),
            "activation": [1.0, 2.0, 0.5, 1.0, 1.0, 3.0],
            "influence": 0.0,
            "label": ["zero", "three", "", "", "", ""],
        }
    )
    logits = pd.DataFrame({"token": ["x"], "token_id": [5], "probability": [0.5], "logit": [3.0]})
    g = anb.AttributionGraph(
        prompt="a",
        tokens=["<bos>", "a"],
        token_ids=[1, 5],
        nodes=nodes,
        adjacency=A,
        logits=logits,
        n_layers=2,
        supernodes={"both": ["f:L0:P1:0", "f:L1:P1:3"]},
    )
    g.nodes["influence"] = g.influence()
    return g


def test_cumulative_shares_by_hand():
    # ranked 0.5 (a), 0.3 (c), 0.1 (b), 0.1 (d); running sums over 1.0
    np.testing.assert_allclose(cumulative_shares([0.5, 0.1, 0.3, 0.1]), [0.5, 0.9, 0.8, 1.0])
    assert cumulative_shares([0.0, 0.0]).tolist() == [1.0, 1.0]


def test_cantor_pairing_inverts_and_matches_the_formula():
    for layer, f in [(0, 0), (0, 1), (1, 0), (25, 16383), (3, 515)]:
        z = cantor(layer, f)
        assert z == (layer + f) * (layer + f + 1) // 2 + f and cantor_unpair(z) == (layer, f)


@pytest.mark.parametrize("slider", [0.4, 0.5, 0.7])
def test_the_viewer_slider_keeps_the_most_influential_nodes(dallas, slider):
    """circuit-tracer's viewer keeps nodes with influence ≤ slider: that must be a top-k by influence."""
    data = dallas.to_neuronpedia(slug="dallas")
    ranked = dallas.nodes.sort_values("influence", ascending=False, kind="stable")
    order = {
        f"{int(r.layer)}_{int(r.feature)}_{int(r.position)}": i
        for i, r in enumerate(ranked.itertuples())
        if r.kind == "feature"
    }
    shown = [n for n in data["nodes"] if n["feature_type"] == "cross layer transcoder"]
    kept = sorted(order[n["node_id"]] for n in shown if n["influence"] <= slider)
    hidden = sorted(order[n["node_id"]] for n in shown if n["influence"] > slider)
    assert kept, f"nothing kept at {slider}"
    assert not hidden or max(kept) < min(hidden), (
        "a weaker feature is shown while a stronger one is hidden"
    )
    top = dallas.top_features(1).iloc[0]
    assert f"{top.layer}_{top.feature}_{top.position}" in {
        n["node_id"] for n in shown if n["influence"] <= slider
    }


def test_error_and_feature_ids_never_collide():
    g = colliding_graph()
    data = g.to_neuronpedia(prune=False, slug="c")
    ids = [n["node_id"] for n in data["nodes"]]
    assert len(set(ids)) == len(ids) == 6
    assert "0_0_1" in ids and "err_0_1" in ids  # the feature keeps circuit-tracer's form
    err = next(n for n in data["nodes"] if n["feature_type"] == "mlp reconstruction error")
    assert err["node_id"] == "err_0_1" and err["layer"] == "0" and err["ctx_idx"] == 1
    # the error node's links are its own: e0 → f1 only
    assert [(x["source"], x["target"]) for x in data["links"] if x["source"] == "err_0_1"] == [
        ("err_0_1", "1_3_1")
    ]


def test_round_trip_keeps_nodes_edges_labels_and_supernodes(dallas, tmp_path):
    g = dallas.subgraph(np.ones(len(dallas.nodes), dtype=bool))
    g.supernodes["top three"] = list(g.top_features(3).node_id)
    path = g.to_neuronpedia(tmp_path, slug="dallas")
    back = anb.AttributionGraph.load(path)
    pruned = g.prune(0.8, 0.98)
    assert set(back.nodes.node_id) == set(pruned.nodes.node_id)
    a = pruned.edges.set_index(["source", "target"]).weight.sort_index()
    b = back.edges.set_index(["source", "target"]).weight.sort_index()
    assert a.index.equals(b.index)
    np.testing.assert_allclose(b.to_numpy(), a.to_numpy().astype(np.float32), rtol=0, atol=0)
    labels = pruned.nodes.set_index("node_id").label
    assert (
        back.nodes.set_index("node_id").label.reindex(labels.index).fillna("") == labels.fillna("")
    ).all()
    assert back.supernodes == {"top three": list(pruned.supernodes["top three"])}
    assert back.tokens == g.tokens and back.token_ids == g.token_ids and back.n_layers == g.n_layers
    np.testing.assert_allclose(back.logits.probability, pruned.logits.probability)
    feats = pruned.nodes[pruned.nodes.kind == "feature"].set_index("node_id").activation
    np.testing.assert_allclose(
        back.nodes.set_index("node_id").activation.reindex(feats.index), feats
    )
    # what the file cannot hold is said, and pruning again is refused by name
    assert "logit values" in back.info["absent"] and back.info["edges_complete"] is False
    with pytest.raises(ValueError, match="holds only the edges its writer kept"):
        back.prune(0.5, 0.9)
    # and it saves and loads as our own format
    back.save(tmp_path / "back.graph")
    again = anb.AttributionGraph.load(tmp_path / "back.graph")
    assert set(again.nodes.node_id) == set(back.nodes.node_id) and again.n_edges == back.n_edges


def test_the_collision_in_a_circuit_tracer_file_is_refused(tmp_path):
    data = colliding_graph().to_neuronpedia(prune=False, slug="c")
    for n in data["nodes"]:  # write the error node as circuit-tracer does
        if n["node_id"] == "err_0_1":
            n["node_id"] = "0_0_1"
    for x in data["links"]:
        x["source"] = "0_0_1" if x["source"] == "err_0_1" else x["source"]
    with pytest.raises(ValueError, match="two nodes have the id '0_0_1'"):
        anb.AttributionGraph.from_neuronpedia(data)


@pytest.mark.parametrize(
    "damage, message",
    [
        (
            lambda d: d["links"].append(
                {"source": "nope", "target": d["links"][0]["target"], "weight": 1.0}
            ),
            "names a node",
        ),
        (lambda d: d["links"].append(dict(d["links"][0])), "two links run"),
        (lambda d: d["links"][0].update(weight=float("nan")), "not a finite number"),
        (lambda d: d["nodes"][0].update(feature="x"), "must be an integer"),
        (lambda d: d["nodes"][0].update(ctx_idx=99), "past the prompt"),
        (lambda d: d["nodes"][0].update(feature_type="mystery"), "feature_type 'mystery'"),
        (lambda d: d.pop("links"), "links missing"),
        (lambda d: d["metadata"].update(prompt_tokens=[]), "prompt_tokens"),
    ],
)
def test_a_damaged_graph_json_is_refused_by_name(damage, message):
    data = colliding_graph().to_neuronpedia(prune=False, slug="c")
    damage(data)
    with pytest.raises(ValueError, match=message):
        anb.AttributionGraph.from_neuronpedia(data)


def test_load_names_files_that_are_not_graphs(dallas, tmp_path):
    dallas.to_neuronpedia(tmp_path, slug="d")
    with pytest.raises(ValueError, match="graph index"):
        anb.AttributionGraph.load(tmp_path / "graph-metadata.json")
    with zipfile.ZipFile(tmp_path / "g.pt", "w") as z:
        z.writestr("data.pkl", b"x")
    with pytest.raises(ValueError, match="never unpickles"):
        anb.AttributionGraph.load(tmp_path / "g.pt")
    (tmp_path / "o.json").write_text('{"a": 1}')
    with pytest.raises(ValueError, match="not an attribution graph JSON"):
        anb.AttributionGraph.load(tmp_path / "o.json")


def test_feature_pages_hold_the_model_s_own_activations(demo, dallas, tmp_path):
    path = dallas.to_neuronpedia(tmp_path, slug="dallas", features=True, model=demo)
    data = json.loads(open(path).read())
    assert data["metadata"]["scan"] == "./graph_data/features/demo"
    feats = [n for n in data["nodes"] if n["feature_type"] == "cross layer transcoder"]
    pages = os.listdir(tmp_path / "features" / "demo")
    assert {f"{n['feature']}.json" for n in feats} == set(pages)
    checked = 0
    for n in feats[:6]:
        page = json.loads((tmp_path / "features" / "demo" / f"{n['feature']}.json").read_text())
        layer, f = cantor_unpair(n["feature"])
        assert (page["layer"], page["feature"]) == (layer, f)
        examples = page["examples_quantiles"][0]["examples"] if page["examples_quantiles"] else []
        assert len(examples) == min(4, len(demo.feature_contexts.get((layer, f), [])))
        for (
            e
        ) in examples:  # the marked token's activation, measured independently at the last position
            text = "".join(e["tokens"][1:])
            want = float(probe_activations(demo, [text])[layer][0, f])
            assert e["tokens_acts_list"][e["train_token_ind"]] == pytest.approx(want, abs=1e-3)
            checked += 1
        # the most promoted token, from the decoder row and the demeaned unembedding
        W_U = demo.unembed_weight.float()
        s = W_U @ demo.transcoders[layer].W_dec[f].float()
        assert page["top_logits"][0] == demo.token_strings([int((s - s.mean()).argmax())])[0]
    assert checked > 0


def test_features_need_the_model_and_the_model_needs_features(dallas, demo, tmp_path):
    with pytest.raises(ValueError, match="features=True needs model="):
        dallas.to_neuronpedia(tmp_path, features=True)
    with pytest.raises(ValueError, match="model= is used only with features=True"):
        dallas.to_neuronpedia(tmp_path, model=demo)


def test_concurrent_exports_keep_every_index_entry(tmp_path):
    script = f"""
import sys
sys.path.insert(0, {os.path.dirname(__file__)!r})
from test_neuronpedia import colliding_graph
g = colliding_graph()
for i in range(15):
    g.to_neuronpedia({str(tmp_path)!r}, slug=f"p{{sys.argv[1]}}-{{i}}", prune=False)
"""
    procs = [
        subprocess.Popen([sys.executable, "-c", script, str(k)], stderr=subprocess.PIPE)
        for k in range(4)
    ]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), errors
    listing = json.loads((tmp_path / "graph-metadata.json").read_text())
    assert sorted(g["slug"] for g in listing["graphs"]) == sorted(
        f"p{k}-{i}" for k in range(4) for i in range(15)
    )


def test_a_damaged_index_is_named_before_the_graph_is_written(tmp_path):
    (tmp_path / "graph-metadata.json").write_text("{not json")
    with pytest.raises(ValueError, match="graph-metadata.json: not a readable graph index"):
        colliding_graph().to_neuronpedia(tmp_path, slug="c", prune=False)
    assert sorted(os.listdir(tmp_path)) == ["graph-metadata.json"]


def test_an_unpruned_demo_graph_exports_unique_ids_where_circuit_tracer_s_collide(demo):
    """The demo's layer 0 has 1,024 features and 4 layers: features 0–3 at layer 0 share circuit-tracer's
    error-node ids ``0_{layer}_{pos}`` (feature 3 is active on this prompt); find such a pair in the
    graph, then check our ids stay apart."""
    dallas = anb.attribute(
        demo, "fact : the capital of the state containing dallas is", rows="all", progress=False
    )
    n = dallas.nodes
    errors = {(int(r.layer), int(r.position)) for r in n[n.kind == "error"].itertuples()}
    clashing = [
        r.node_id
        for r in n[(n.kind == "feature") & (n.layer == 0)].itertuples()
        if int(r.feature) < dallas.n_layers and (int(r.feature), int(r.position)) in errors
    ]
    assert clashing, (
        "the graph must hold a layer-0 feature whose circuit-tracer id is also an error node's"
    )
    data = dallas.to_neuronpedia(prune=False, slug="all")
    ids = [x["node_id"] for x in data["nodes"]]
    assert len(ids) == len(set(ids)) == len(n)
    for nid in clashing:
        f = dallas.node(nid)
        assert f"0_{f.feature}_{f.position}" in ids and f"err_{f.feature}_{f.position}" in ids
