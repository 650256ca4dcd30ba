"""Interventions checked against the graph (frozen mode), the plain model (free mode) and HF generation."""

import math
import re

import numpy as np
import pandas as pd

import pytest
import torch
from conftest import PROMPT

import attribution_nb as anb
from attribution_nb.demo import tiny_model


@pytest.fixture(scope="module", params=["llama", "qwen3-skip", "gemma2", "gpt2", "llama-clt"])
def setup(request):
    family = request.param.split("-")[0]
    model = tiny_model(
        family,
        seed=5,
        d_features=128,
        skip=request.param.endswith("skip"),
        cross_layer=request.param.endswith("clt"),
    )
    graph = anb.attribute(model, PROMPT, progress=False)
    return model, graph


def _demeaned(logits, ids, model=None):
    """Demeaned logits before any soft-cap (Gemma-2's is undone: x = c·atanh(y / c))."""
    cap = (
        getattr(model.hf_model.config, "final_logit_softcapping", None)
        if model is not None
        else None
    )
    x = logits.double() if cap is None else cap * torch.atanh(logits.double() / cap)
    return x[ids] - x.mean()


def _strong_features(graph, n=4):
    logit_rows = torch.from_numpy(graph.kinds == "logit")
    feats = torch.from_numpy(graph.kinds == "feature").nonzero().flatten()
    strength = graph.adjacency[logit_rows][:, feats].abs().sum(0)
    return [graph.nodes.node_id[int(feats[i])] for i in strength.argsort(descending=True)[:n]]


def test_frozen_ablation_changes_logits_by_the_graph_edges(setup):
    model, graph = setup
    ids = torch.tensor(graph.logits.token_id.to_numpy())
    logit_ids = graph.logits.node_id.tolist()
    for node in _strong_features(graph):
        before, after = model.intervened_logits(PROMPT, {node: 0.0}, mode="frozen")
        change = _demeaned(after, ids, model) - _demeaned(before, ids, model)
        expected = -torch.tensor([graph.edge(node, l) for l in logit_ids], dtype=torch.float64)
        torch.testing.assert_close(change, expected, rtol=1e-4, atol=1e-5)


def test_frozen_supernode_multiply_and_steer_are_linear(setup):
    model, graph = setup
    ids = torch.tensor(graph.logits.token_id.to_numpy())
    top = graph.logits.node_id[0]
    a, b = _strong_features(graph, 2)
    before, after = model.intervened_logits(PROMPT, {(a, b): anb.Multiply(-2)}, mode="frozen")
    change = float(_demeaned(after, ids, model)[0] - _demeaned(before, ids, model)[0])
    assert change == pytest.approx(
        -3 * (graph.edge(a, top) + graph.edge(b, top)), rel=1e-4, abs=1e-5
    )
    n = graph.node(a)
    before, after = model.intervened_logits(
        PROMPT, {(int(n.layer), int(n.position), int(n.feature)): anb.Steer(2.5)}, mode="frozen"
    )
    change = float(_demeaned(after, ids, model)[0] - _demeaned(before, ids, model)[0])
    assert change == pytest.approx(2.5 * graph.edge(a, top) / n.activation, rel=1e-4, abs=1e-5)


def test_free_clamp_to_own_activation_changes_nothing(setup):
    model, graph = setup
    feats = graph.nodes[graph.nodes.kind == "feature"].head(30)
    clamps = {nid: float(act) for nid, act in zip(feats.node_id, feats.activation)}
    before, after = model.intervened_logits(PROMPT, clamps, mode="free")
    torch.testing.assert_close(after, before, rtol=0, atol=1e-5)
    # and a real ablation does change something
    _, after = model.intervened_logits(PROMPT, {_strong_features(graph, 1)[0]: 0.0}, mode="free")
    assert (after - before).abs().max() > 1e-3


def test_free_ablating_all_features_and_errors_equals_replacing_the_mlp(setup):
    model, graph = setup
    if any(tc.n_later for tc in model.transcoders):
        with pytest.raises(ValueError, match="not supported with cross-layer transcoders"):
            _ablate_layer(model, 1)
        return
    layer = 1
    tc = model.transcoders[layer]
    after = _ablate_layer(model, layer)
    # independently: a plain PyTorch hook makes the MLP output only the transcoder's constant
    # part (b_dec, plus the skip term where there is one)
    expected = _hf_logits_with_mlp_hook(
        model,
        layer,
        lambda mod, args, out: (
            tc.b_dec.expand_as(out) + (0 if tc.W_skip is None else args[0] @ tc.W_skip)
        ),
    )
    torch.testing.assert_close(after, expected, rtol=0, atol=1e-4)


def _ablate_layer(model, layer):
    """Last-position logits with every feature and every error node of ``layer`` ablated (free mode)."""
    clamps = {(layer, None, f): "ablate" for f in range(model.transcoders[layer].d_features)}
    clamps.update({f"e:L{layer}:P{p}": 0 for p in range(len(model.tokenize(PROMPT)))})
    return model.intervened_logits(PROMPT, clamps, mode="free")[1]


def _hf_logits_with_mlp_hook(model, layer, hook):
    module = model.hf_model.get_submodule(model.architecture.layers)[layer].get_submodule(
        model.architecture.mlp_out
    )
    handle = module.register_forward_hook(hook)
    try:
        with torch.no_grad():
            return model.hf_model(model.tokenize(PROMPT)[None]).logits[0, -1]
    finally:
        handle.remove()


def test_intervene_table(setup):
    model, graph = setup
    node = _strong_features(graph, 1)[0]
    df = model.intervene(PROMPT, {node: anb.Multiply(-5)}, top_k=5)
    assert list(df.columns) == [
        "token",
        "token_id",
        "p_before",
        "p_after",
        "logit_before",
        "logit_after",
        "p_change",
    ]
    assert df.p_change.abs().is_monotonic_decreasing
    probs = torch.softmax(model.logits(PROMPT).double(), -1)
    assert df.p_before[0] == pytest.approx(float(probs[df.token_id[0]]))


def test_generation_without_interventions_is_the_models_greedy_generation(setup):
    model, _ = setup
    tokens = model.tokenize(PROMPT)
    ours = model.generate(PROMPT, max_new_tokens=8)
    with torch.no_grad():
        hf = model.hf_model.generate(
            tokens[None],
            max_new_tokens=8,
            do_sample=False,
            eos_token_id=None,
            pad_token_id=model.tokenizer.pad_token_id,
        )
    assert ours["before"] == ours["after"] == model.tokenizer.decode(hf[0, len(tokens) :].tolist())


def test_generation_with_interventions_differs(setup):
    model, graph = setup
    node = _strong_features(graph, 1)[0]
    n = graph.node(node)
    out = model.generate(
        PROMPT,
        {(int(n.layer), None, int(n.feature)): anb.Steer(30.0)},
        max_new_tokens=6,
        every_position=True,
    )
    assert out["before"] != out["after"]


@pytest.mark.parametrize(
    "interventions, message",
    [
        (
            {"f:L0:P1:999": 0},
            "feature 999 in 'f:L0:P1:999' is out of range: layer 0 has 128 features",
        ),
        ({"f:L7:P1:3": 0}, "layer 7 in 'f:L7:P1:3' is out of range: the model has 4 layers"),
        (
            {"f:L0:P40:3": 0},
            "position 40 in 'f:L0:P40:3' is out of range: the prompt has 11 tokens",
        ),
        (
            {"f:L0:P1:3": math.nan},
            "intervention value for 'f:L0:P1:3' must be in [-1e+06, 1e+06], got nan",
        ),
        (
            {"f:L0:P1:3": 1e308},
            "intervention value for 'f:L0:P1:3' must be in [-1e+06, 1e+06], got 1e+308",
        ),
        (
            "f:L0:P1:3",
            "interventions must be a dict {target: value} or a list of (target, value) pairs, got 'f:L0:P1:3'",
        ),
        ([("f:L0:P1:3",)], "interventions must be (target, value) pairs, got ('f:L0:P1:3',)"),
        ({"t:P3": 0}, "cannot clamp 't:P3': it is a token node"),
        ({"l:austin": 0}, "cannot clamp 'l:austin': it is a logit node"),
        ({"e:L0:P1": 2.0}, "can only be ablated"),
        ({"f:L0:P1:3": "double"}, "unknown intervention 'double'"),
        ({"x:1": 0}, "unknown node id 'x:1'"),
    ],
)
def test_bad_interventions(setup, interventions, message):
    model, _ = setup
    with pytest.raises(ValueError, match=re.escape(message)):
        model.intervene(PROMPT, interventions)


def test_numpy_and_tensor_numbers_are_numbers(setup):
    model, graph = setup
    node = graph.top_features(1).iloc[0]
    key = (np.int64(node.layer), np.int64(node.position), np.int64(node.feature))
    a = model.intervene(PROMPT, {key: torch.tensor(0.0)}, top_k=np.int64(3))
    b = model.intervene(PROMPT, {node.node_id: 0.0}, top_k=3)
    pd.testing.assert_frame_equal(a, b)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: anb.Multiply(math.inf), "Multiply's factor must be in [-1e+06, 1e+06], got inf"),
        (
            lambda: anb.Multiply("2"),
            "Multiply's factor must be in [-1e+06, 1e+06] (a number), got '2'",
        ),
        (lambda: anb.Steer(None), "Steer's scale must be in [-1e+06, 1e+06] (a number), got None"),
    ],
)
def test_bad_multiply_and_steer(make, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        make()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(max_new_tokens=-5), "max_new_tokens must be in [0, ∞], got -5"),
        (dict(temperature=math.nan), "temperature must be in [0, inf], got nan"),
        (dict(max_new_tokens=2.5), "max_new_tokens must be an integer, got 2.5"),
    ],
)
def test_bad_generation_arguments(setup, kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        setup[0].generate(PROMPT, {}, **kwargs)


def test_bad_top_k(setup):
    with pytest.raises(ValueError, match=re.escape("top_k must be in [1, ∞], got -1")):
        setup[0].intervene(PROMPT, {}, top_k=-1)


def test_bad_mode(setup):
    with pytest.raises(ValueError, match="mode must be 'free' or 'frozen', got 'warm'"):
        setup[0].intervene(PROMPT, {}, mode="warm")


def test_swap_with_itself_changes_nothing_and_equals_explicit_clamps(setup):
    model, graph = setup
    last = len(graph.tokens) - 1
    group = list(
        graph.nodes.node_id[(graph.nodes.kind == "feature") & (graph.nodes.position == last)][:5]
    )
    same = model.swap(PROMPT, group, PROMPT, group)
    assert same.p_change.abs().max() < 1e-6
    other = "the opposite of small is"
    g2 = anb.attribute(model, other, progress=False)
    add = list(
        g2.nodes.node_id[(g2.nodes.kind == "feature") & (g2.nodes.position == len(g2.tokens) - 1)][
            :5
        ]
    )
    swapped = model.swap(PROMPT, group, other, add)
    clamps = {nid: 0.0 for nid in group}
    for nid in add:
        n = g2.node(nid)
        clamps[(int(n.layer), last, int(n.feature))] = float(n.activation)
    explicit = model.intervene(PROMPT, clamps)
    assert swapped.equals(explicit)


def test_free_ablating_all_features_and_errors_zeroes_the_mlp_when_the_transcoder_has_no_bias():
    model = tiny_model("llama", seed=6, d_features=64)
    layer = 2
    model.transcoders[layer].b_dec.data.zero_()
    expected = _hf_logits_with_mlp_hook(model, layer, lambda m, a, out: torch.zeros_like(out))
    torch.testing.assert_close(_ablate_layer(model, layer), expected, rtol=0, atol=1e-4)


def test_free_clamp_of_a_cross_layer_feature_reaches_later_layers():
    """A cross-layer feature clamped in free mode changes its own layer and every later layer
    by its decoders; checked against plain PyTorch hooks on the MLP outputs."""
    model = tiny_model("llama", seed=5, d_features=128, cross_layer=True)
    graph = anb.attribute(model, PROMPT, progress=False)
    feats = graph.nodes[(graph.nodes.kind == "feature") & (graph.nodes.layer == 0)]
    node = feats.sort_values("influence").node_id.iloc[-1]
    n = graph.node(node)
    l, p, f, act = int(n.layer), int(n.position), int(n.feature), float(n.activation)
    tc = model.transcoders[l]
    assert tc.n_later == model.n_layers - 1
    handles = []
    for target in range(l, model.n_layers):
        direction = tc.W_dec[f] if target == l else tc.W_dec_later[f, target - l - 1]

        def hook(mod, args, out, direction=direction):
            out = out.clone()
            out[0, p] -= act * direction  # the feature's write, removed
            return out

        module = model.hf_model.get_submodule(model.architecture.layers)[target].get_submodule(
            model.architecture.mlp_out
        )
        handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            expected = model.hf_model(model.tokenize(PROMPT)[None]).logits[0, -1]
    finally:
        for h in handles:
            h.remove()
    # frozen mode: the logits move by exactly the graph's edges (which include the later writes)
    before, after = model.intervened_logits(PROMPT, {node: 0.0}, mode="frozen")
    ids = torch.tensor(graph.logits.token_id.to_numpy())
    change = _demeaned(after, ids) - _demeaned(before, ids)
    edges = torch.tensor(
        [graph.edge(node, nid) for nid in graph.logits.node_id], dtype=torch.float64
    )
    torch.testing.assert_close(change, -edges, rtol=1e-4, atol=1e-5)
    # free mode: each MLP output from the feature's layer on loses the feature's write there
    _, free_after = model.intervened_logits(PROMPT, {node: 0.0}, mode="free")
    torch.testing.assert_close(free_after, expected, rtol=0, atol=1e-4)
