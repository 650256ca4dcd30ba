"""Our Neuronpedia export against circuit-tracer's own writer (``create_graph_files``, run in its own
environment, see ``tests/transcoders/test_conformance.py``) on the same graph: the same nodes,
the same cumulative influence shares where both keep a node, the same link weights; and our
import of its file gives tables whose edges equal its links."""

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

import attribution_nb as anb
from transcoders.test_conformance import _publisher_python

pytestmark = pytest.mark.conformance
PROMPTS = ["fact : the capital of the state containing dallas is", "le contraire de petit est"]


def _ct_order(g: anb.AttributionGraph) -> np.ndarray:
    """Our node indices in circuit-tracer's order: features, errors (layer by layer, then position), tokens, logits."""
    n = g.nodes
    feats = np.flatnonzero(n.kind == "feature")
    errs = n[n.kind == "error"].sort_values(["layer", "position"]).index.to_numpy()
    toks = n[n.kind == "token"].sort_values("position").index.to_numpy()
    logits = [g.index(i) for i in g.logits.node_id]
    return np.concatenate([feats, errs, toks, logits]).astype(np.int64)


def _key(node: dict) -> tuple:
    """A node by what it is (not by its id text, which differs for error nodes)."""
    return node["feature_type"], str(node["layer"]), int(node["ctx_idx"]), int(node["feature"])


@pytest.fixture(scope="module")
def demo():
    return anb.load_model()


def _circuit_tracer_json(demo, g, tmp_path, node_threshold: float, edge_threshold: float) -> dict:
    """``g`` written by circuit-tracer's ``create_graph_files`` at these thresholds."""
    python = _publisher_python("circuit-tracer")
    L, T = g.n_layers, len(g.tokens)
    n = g.nodes
    assert (n.kind == "error").sum() == L * T, (
        "circuit-tracer's order needs an error node per layer and position"
    )
    order = _ct_order(g)
    A = g.sparse_adjacency.toarray()[np.ix_(order, order)].astype(np.float32)
    feats = n[n.kind == "feature"]
    cfg = demo.hf_model.config
    tok = (
        tmp_path / "tokenizer"
    )  # (the demo's tokenizer.json, with a config circuit-tracer's transformers reads)
    tok.mkdir(exist_ok=True)
    (tok / "tokenizer.json").write_bytes(
        (Path(anb.__file__).parent / "demo_model" / "tokenizer.json").read_bytes()
    )
    (tok / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "bos_token": "<bos>",
                "unk_token": "<unk>",
            }
        )
    )
    np.savez(
        tmp_path / "g.npz",
        adjacency=A,
        active_features=np.stack(
            [feats.layer, feats.position, feats.feature.astype(int)], 1
        ).astype(np.int64),
        activation_values=feats.activation.to_numpy(np.float32),
        input_tokens=np.array(g.token_ids, dtype=np.int64),
        logit_ids=g.logits.token_id.to_numpy(np.int64),
        logit_probabilities=g.logits.probability.to_numpy(np.float32),
    )
    (tmp_path / "g.json").write_text(
        json.dumps(
            {
                "prompt": g.prompt,
                "logit_strings": list(g.logits.token),
                "n_layers": L,
                "d_model": cfg.hidden_size,
                "d_head": cfg.head_dim,
                "n_heads": cfg.num_attention_heads,
                "d_mlp": cfg.intermediate_size,
                "d_vocab": cfg.vocab_size,
                "tokenizer": str(tok),
                "node_threshold": node_threshold,
                "edge_threshold": edge_threshold,
            }
        )
    )
    out = tmp_path / f"ct-{node_threshold}"
    done = subprocess.run(
        [
            python,
            str(Path(__file__).parent / "ct_export.py"),
            str(tmp_path / "g.npz"),
            str(tmp_path / "g.json"),
            str(out),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((out / "ct.json").read_text())


def _links(data) -> dict:
    """Links by what their ends are; links at an id two nodes share (circuit-tracer's error / layer-0
    feature collision) are left out: which node they belong to cannot be known; so are links of weight 0,
    which circuit-tracer writes for every pair of kept nodes when its edge threshold falls to a score of 0."""
    ids = [x["node_id"] for x in data["nodes"]]
    shared = {i for i in ids if ids.count(i) > 1}
    by_id = {x["node_id"]: _key(x) for x in data["nodes"]}
    return {
        (by_id[x["source"]], by_id[x["target"]]): x["weight"]
        for x in data["links"]
        if x["source"] not in shared and x["target"] not in shared and x["weight"] != 0
    }


@pytest.mark.parametrize("prompt", PROMPTS)
def test_our_export_matches_circuit_tracer_s_writer(demo, prompt, tmp_path):
    g = anb.attribute(demo, prompt, rows="all", progress=False)
    for node_threshold, edge_threshold in [(1.0, 1.0), (0.8, 0.98)]:
        theirs = _circuit_tracer_json(demo, g, tmp_path, node_threshold, edge_threshold)
        ours = g.to_neuronpedia(
            slug="ours", scan="demo", node_threshold=node_threshold, edge_threshold=edge_threshold
        )
        t_nodes = {_key(x): x for x in theirs["nodes"]}
        o_nodes = {_key(x): x for x in ours["nodes"]}
        if node_threshold == 1.0:  # everything that has an edge: the same nodes
            assert set(o_nodes) == set(t_nodes), set(o_nodes) ^ set(t_nodes)
        else:  # circuit-tracer ranks tokens with the features and errors, we keep tokens aside: it keeps fewer
            assert set(t_nodes) <= set(o_nodes), set(t_nodes) - set(o_nodes)
        for k, theirs_node in t_nodes.items():
            mine = o_nodes[k]
            if mine["influence"] is None or theirs_node["influence"] is None:
                assert mine["influence"] is theirs_node["influence"] is None, k
            else:
                assert mine["influence"] == pytest.approx(theirs_node["influence"], abs=1e-5), k
            if mine["feature_type"] == "mlp reconstruction error":
                assert (mine["node_id"], theirs_node["node_id"]) == (
                    f"err_{k[1]}_{k[2]}",
                    f"0_{k[1]}_{k[2]}",
                )
            else:
                assert mine["node_id"] == theirs_node["node_id"], k
        t_links, o_links = _links(theirs), _links(ours)
        common = [k for k in t_links if k in o_links]
        # (at 1.0 theirs is a subset: its float32 running sum reaches 1 before the weakest edges; at 0.8 the
        # edges are ranked among different node sets)
        assert (
            len(common) == len(t_links)
            if node_threshold == 1.0
            else len(common) > 0.9 * len(t_links)
        ), (node_threshold, len(common), len(t_links), len(o_links))
        np.testing.assert_allclose(
            [o_links[k] for k in common], [t_links[k] for k in common], rtol=1e-5, atol=1e-7
        )

    # their pruned file read back: our tables' edges are its links, one by one
    ids = [x["node_id"] for x in theirs["nodes"]]
    (tmp_path / "theirs.json").write_text(json.dumps(theirs))
    if len(set(ids)) < len(ids):  # (their error / layer-0 feature ids collided: refused by name)
        with pytest.raises(ValueError, match="two nodes have the id"):
            anb.AttributionGraph.load(tmp_path / "theirs.json")
        return
    back = anb.AttributionGraph.load(tmp_path / "theirs.json")
    assert back.n_edges == len(theirs["links"])
    ours_of = {x["node_id"]: _our_id(x, g.token_ids) for x in theirs["nodes"]}
    weights = back.edges.set_index(["source", "target"]).weight
    np.testing.assert_array_equal(
        [weights[(ours_of[x["source"]], ours_of[x["target"]])] for x in theirs["links"]],
        np.float32([x["weight"] for x in theirs["links"]]),
    )


def _our_id(node: dict, token_ids: list[int]) -> str:
    from attribution_nb.graph.neuronpedia import cantor_unpair

    pos = int(node["ctx_idx"])
    if node["feature_type"] == "cross layer transcoder":
        layer, f = cantor_unpair(int(node["feature"]))
        return f"f:L{layer}:P{pos}:{f}"
    if node["feature_type"] == "mlp reconstruction error":
        return f"e:L{node['layer']}:P{pos}"
    if node["feature_type"] == "embedding":
        return f"t:P{pos}:{token_ids[pos]}"
    return f"l:P{pos}:{node['feature']}"
