"""Latent labels, latent and edge supernodes, and the experiments (patching, swaps with controls,
steering) on the tiny random Llama, each checked against an independent computation."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

import attribution_nb as anb
from attribution_nb.graph.supernodes import summary_edges

PROMPTS = [
    "fact : the capital of the state containing dallas is",
    "dallas is in texas",
    "the capital of texas is austin",
    "fact : the state containing dallas is",
    "the state containing austin is",
    "the opposite of small is large",
    "texas is",
    "austin is in texas",
]


def test_probe_activations_match_one_capture_per_prompt(llama):
    acts = anb.probe_activations(llama, PROMPTS, [-1, 2, -3, 0, -1, 1, -2, 3])
    for i, (p, pos) in enumerate(zip(PROMPTS, [-1, 2, -3, 0, -1, 1, -2, 3])):
        cap = llama.capture(llama.tokenize(p))
        for layer in range(llama.n_layers):
            torch.testing.assert_close(
                acts[layer][i], cap.activations[layer][pos].float(), rtol=1e-4, atol=1e-5
            )


def _hand_scores(fires: np.ndarray, values: list) -> dict:
    """Precision, recall, F1 per value and I(fires; latent) in bits, by counting (``None``: the
    latent is not defined there, one more value for the information, never reported)."""
    n = len(values)
    out = {}
    mi = 0.0
    for v in set(values):
        is_v = np.array([x == v for x in values])
        tp = int((fires & is_v).sum())
        prec = tp / max(fires.sum(), 1)
        rec = tp / is_v.sum()
        out[v] = (prec, rec, 0.0 if tp == 0 else 2 * prec * rec / (prec + rec))
        for f in (True, False):
            joint = int(((fires == f) & is_v).sum()) / n
            if joint > 0:
                mi += joint * math.log2(joint / ((fires == f).mean() * is_v.mean()))
    return out, mi


def test_latent_labels_count_precision_recall_f1_and_mutual_information(llama):
    colour = ["red", "red", "blue", "blue", "red", "green", None, "blue"]
    probes = pd.DataFrame({"prompt": PROMPTS, "colour": colour, "parity": ["odd", "even"] * 4})
    table = anb.latent_labels(llama, probes)
    acts = anb.probe_activations(llama, PROMPTS)
    checked = 0
    for row in table.sample(40, random_state=0).itertuples():
        fires = (acts[row.layer][:, row.feature] > 0).numpy()
        scores, mi = _hand_scores(fires, [c if pd.notna(c) else None for c in probes[row.latent]])
        assert (row.precision, row.recall, row.f1) == pytest.approx(scores[row.value], abs=1e-6)
        assert row.mi_bits == pytest.approx(mi, abs=1e-6)
        checked += 1
    assert checked == 40
    # scored only among the probes that define the latent: the blank probe drops out of every count
    inside = anb.latent_labels(llama, probes, undefined="ignore")
    for row in inside[inside.latent == "colour"].sample(20, random_state=1).itertuples():
        known = [i for i, c in enumerate(probes.colour) if pd.notna(c)]
        fires = (acts[row.layer][known, row.feature] > 0).numpy()
        scores, mi = _hand_scores(fires, [probes.colour[i] for i in known])
        assert (row.precision, row.recall, row.f1) == pytest.approx(scores[row.value], abs=1e-6)
        assert row.mi_bits == pytest.approx(mi, abs=1e-6)
    assert (table.f1.diff().dropna() <= 1e-12).all()  # sorted best first
    # a latent that is the feature itself: the feature that fires on exactly the 'on' probes gets F1 1
    layer, feature = int(table.layer[0]), int(table.feature[0])
    on = (acts[layer][:, feature] > 0).tolist()
    exact = anb.latent_labels(
        llama, pd.DataFrame({"prompt": PROMPTS, "x": ["on" if o else "off" for o in on]})
    )
    hit = exact[(exact.layer == layer) & (exact.feature == feature) & (exact.value == "on")]
    assert float(hit.f1.iloc[0]) == 1.0 and float(hit.mi_bits.iloc[0]) > 0.5


def test_latent_labels_refuse_bad_probes(llama):
    with pytest.raises(ValueError, match="'prompt' column"):
        anb.latent_labels(llama, [{"text": "a", "x": 1}])
    with pytest.raises(ValueError, match="name no latent"):
        anb.latent_labels(llama, [{"prompt": "texas is"}])
    with pytest.raises(ValueError, match="position 9 is outside"):
        anb.latent_labels(llama, [{"prompt": "texas is", "position": 9, "x": 1}])
    with pytest.raises(ValueError, match="empty"):
        anb.latent_labels(llama, [])
    with pytest.raises(ValueError, match="undefined must be"):
        anb.latent_labels(llama, [{"prompt": "texas is", "x": 1}], undefined="skip")


def test_attached_latent_labels_show_in_graphs_and_do_not_stack(llama):
    probes = pd.DataFrame(
        {"prompt": PROMPTS, "topic": ["geo", "geo", "geo", "geo", "poem", "word", "geo", "geo"]}
    )
    saved = dict(llama.feature_labels)
    try:
        llama.feature_labels[(0, 0)] = "context label"
        table = anb.latent_labels(llama, probes, attach=True, min_f1=0.5)
        n = anb.attach_latent_labels(llama, table, min_f1=0.5)  # twice: replaced, not stacked
        best = anb.best_latents(table)
        assert n == int((best.f1 >= 0.5).sum()) > 0
        row = best[best.f1 >= 0.5].iloc[0]
        label = llama.feature_labels[(int(row.layer), int(row.feature))]
        assert label.count("F1") == 1 and label.startswith(f"topic={row.value} F1 {row.f1:.2f}")
        graph = anb.attribute(llama, PROMPTS[0], progress=False)
        feats = graph.nodes[graph.nodes.kind == "feature"]
        shown = {
            (int(l), int(f)): lab for l, f, lab in zip(feats.layer, feats.feature, feats.label)
        }
        for key, lab in shown.items():
            assert lab == llama.feature_labels.get(key, "")
    finally:
        llama.feature_labels = saved
        llama.feature_latents = {}


def test_supernodes_from_latents_group_the_graph_features_by_best_value(llama, llama_graph):
    g = llama_graph.subgraph(np.ones(len(llama_graph.nodes), bool))
    feats = g.nodes[g.nodes.kind == "feature"]
    keys = sorted({(int(l), int(f)) for l, f in zip(feats.layer, feats.feature)})
    value = {k: "a" if (k[0] * 1000 + k[1]) % 2 else "b" for k in keys}
    rows = [
        {"layer": k[0], "feature": k[1], "latent": "k", "value": value[k], "f1": 0.9 - 0.001 * i}
        for i, k in enumerate(keys)
    ]
    rows.append(
        {"layer": keys[0][0], "feature": keys[0][1], "latent": "k", "value": "weak", "f1": 0.1}
    )
    rows.append(
        {"layer": keys[1][0], "feature": keys[1][1], "latent": "k", "value": "better", "f1": 0.95}
    )
    value[keys[1]] = "better"
    table = pd.DataFrame(rows).sort_values("f1", ascending=False)
    groups = g.supernodes_from_latents(table, "k", min_f1=0.5, positions=[-1])
    last = len(g.tokens) - 1
    expect: dict = {}
    for nid, pos, l, f in zip(feats.node_id, feats.position, feats.layer, feats.feature):
        if pos == last:
            expect.setdefault("k=" + value[(int(l), int(f))], []).append(nid)
    assert {k: sorted(v) for k, v in groups.items()} == {k: sorted(v) for k, v in expect.items()}
    assert {k: sorted(v) for k, v in g.supernodes.items()} == {
        k: sorted(v) for k, v in expect.items()
    }
    with pytest.raises(ValueError, match="latent 'nope' is not in the table"):
        g.supernodes_from_latents(table, "nope")


def test_summary_edges_are_sums_of_the_member_edges(llama_graph):
    g = llama_graph.prune(0.8, 0.98)
    groups = g.supernodes_by_edges(n_features=12, min_similarity=0.2, min_size=2)
    assert all(len(m) >= 2 for m in groups.values())
    assert len({n for m in groups.values() for n in m}) == sum(len(m) for m in groups.values())
    s = summary_edges(g)
    edges = g.edges
    owner = {n: name for name, members in g.supernodes.items() for n in members}
    tok = g.nodes.set_index("node_id")

    def group(n):
        if n in owner:
            return owner[n]
        k = tok.loc[n, "kind"]
        return {
            "token": f"token {tok.loc[n, 'position']}: {tok.loc[n, 'token']}",
            "logit": f"logit {tok.loc[n, 'token']}",
        }.get(k, "other")

    by_hand: dict = {}
    for a, b, w in zip(edges.source, edges.target, edges.weight):
        ga, gb = group(a), group(b)
        if ga != gb:
            by_hand[(ga, gb)] = by_hand.get((ga, gb), 0.0) + w
    got = {(a, b): w for a, b, w in zip(s.source, s.target, s.weight)}
    assert set(got) == {k for k, v in by_hand.items() if abs(v) > 0}
    for k, v in got.items():
        assert v == pytest.approx(by_hand[k], rel=1e-9, abs=1e-12)
    fig = g.summary_figure()
    assert len(fig.data[0].x) >= 2


def test_patch_position_with_the_prompt_itself_changes_nothing_and_with_another_moves_the_logits(
    llama,
):
    p, q = (
        "fact : the capital of the state containing dallas is",
        "fact : the capital of the state containing texas is",
    )
    same = llama.patch_position(p, p)
    assert np.allclose(same.logit_after, same.logit_before, atol=1e-4)
    moved = llama.patch_position(p, q)
    assert not np.allclose(moved.logit_after, moved.logit_before, atol=1e-3)
    clamps = anb.experiments.patch_position_interventions(llama, p, q)
    cap = llama.capture(llama.tokenize(q))
    last = len(llama.tokenize(p)) - 1
    for (layer, pos, f), v in list(clamps.items())[:20]:
        assert pos == last and v == pytest.approx(float(cap.activations[layer][-1, f]))


def test_steer_adds_the_direction_to_the_residual(llama):
    p = "fact : the capital of the state containing dallas is"
    d = anb.mean_difference(
        llama, ["texas is", "austin is in texas"], ["dallas is in texas"], layer=1
    )
    # adding the direction is the same as adding it by hand in a plain PyTorch forward hook
    hf = llama.hf_model
    ids = llama.tokenize(p)[None]

    def hook(mod, args, out):
        h = out[0] if isinstance(out, tuple) else out
        h = h.clone()
        h[0, -1] += 2.0 * d.to(h.dtype)
        return (h, *out[1:]) if isinstance(out, tuple) else h

    handle = hf.model.layers[1].register_forward_hook(hook)
    try:
        with torch.no_grad():
            expect = hf(ids).logits[0, -1]
    finally:
        handle.remove()
    got = anb.experiments.steered_logits(llama, p, d, layer=1, scale=2.0)
    torch.testing.assert_close(got.float(), expect.float(), rtol=1e-4, atol=1e-4)
    r = anb.residuals(llama, ["texas is", "austin is in texas"], 1)
    assert r.shape == (2, hf.config.hidden_size)
    with pytest.raises(ValueError, match="direction must be"):
        llama.steer(p, torch.ones(3), layer=1)


def test_swap_test_hits_when_the_clamps_decide_and_its_control_is_the_same_size(llama):
    p = "fact : the capital of the state containing dallas is"
    cap = llama.capture(llama.tokenize(p))
    active = torch.nonzero(cap.activations[2][-1] > 0).flatten().tolist()[:3]
    # clamping the chosen features to a large value decides the top token: find what it is
    clamps = anb.experiments.swap_clamps(
        len(llama.tokenize(p)) - 1, [(2, f) for f in active], {(3, 5): 50.0}, inhibit=2.0, scale=1.0
    )
    before, after = llama.intervened_logits(p, clamps)
    expected = llama.tokenizer.decode([int(after.argmax())]).strip()
    report = anb.swap_test(
        llama,
        [{"prompt": p, "source": "a", "target": "b", "expected": expected}],
        {"a": [(2, f) for f in active], "b": [(3, 5)]},
        {"b": {(3, 5): 50.0}},
        scale=1.0,
    )
    assert report.rate == 1.0 and report.n == 1
    row = report.table.iloc[0]
    assert row.n_removed == len(active) and row.n_added == 1
    with pytest.raises(ValueError, match="no supernode for 'c'"):
        anb.swap_test(llama, [{"prompt": p, "source": "c"}], {"a": []}, {})
    curve = anb.minimal_k(
        llama,
        [{"prompt": p, "source": "a", "target": "b", "expected": expected}],
        {"a": [(2, f) for f in active], "b": [(3, 5)]},
        {"b": {(3, 5): 50.0}},
        ks=(1, 3),
        scale=1.0,
    )
    assert list(curve.k) == [1, 3] and curve.rate.iloc[-1] == 1.0
