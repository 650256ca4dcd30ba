"""The embedded demo model: it loads offline, solves its tasks, and its graphs show the planted structure."""

import json
import os
from collections import deque

import pytest
import torch

import attribution_nb as anb
from attribution_nb.demo import DEMO_DIR, load_demo_model
from attribution_nb.demo import train as demo_train

pytestmark = pytest.mark.skipif(not os.path.isfile(os.path.join(DEMO_DIR, "config.json")),
                                reason="the trained demo model is not in this checkout")


@pytest.fixture(scope="module")
def demo():
    return anb.load_model()


@pytest.fixture(scope="module")
def world():
    return demo_train.build_world(json.load(open(os.path.join(DEMO_DIR, "world.json")))["seed"])


def _predict(model, prompt):
    return model.tokenizer.decode([int(model.logits(prompt).argmax())])


def test_loads_offline_with_labels(demo, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = load_demo_model()
    assert model.name == "demo" and model.n_layers == 4
    assert len(model.feature_labels) > 100 and all("→" in v for v in list(model.feature_labels.values())[:20])
    assert any(model.feature_contexts.values())


def test_two_hop_facts_on_held_out_cities(demo, world):
    items = world["heldout"]["two_hop"]
    correct = sum(_predict(demo, p) == capital for p, capital, _ in items)
    assert correct / len(items) >= 0.8, f"{correct}/{len(items)}"


def _reaches(graph, source, target):
    out = {}
    for s, t in zip(graph.edges.source, graph.edges.target):
        out.setdefault(s, []).append(t)
    seen, todo = {source}, deque([source])
    while todo:
        n = todo.popleft()
        if n == target:
            return True
        for m in out.get(n, []):
            if m not in seen:
                seen.add(m)
                todo.append(m)
    return False


def test_two_hop_graph_has_a_state_feature_on_a_path_to_the_capital(demo, world):
    found = 0
    cases = [(p, c, s) for p, c, s in world["heldout"]["two_hop"] if _predict(demo, p) == c][:4]
    for prompt, capital, state in cases:
        graph = anb.attribute(demo, prompt, progress=False).prune(0.8, 0.98)
        logit = graph.logit_node(capital)
        assert logit in set(graph.nodes.node_id)
        feats = graph.nodes[(graph.nodes.kind == "feature") & graph.nodes.label.str.contains(rf"\b{state}\b")]
        found += any(_reaches(graph, nid, logit) for nid in feats.node_id)
    assert found >= len(cases) - 1, f"state features on a path to the capital in {found}/{len(cases)} prompts"


def _line_end(text: str) -> str:
    """The last word of a generated line ("grey as a rat." -> "rat")."""
    words = text.replace(".", " .").split()
    return words[words.index(".") - 1] if "." in words and words.index(".") > 0 else ""


def _comma_ids(model, prompt):
    """Feature node ids of every feature active at the prompt's last position (the comma)."""
    cap = model.capture(model.tokenize(prompt))
    c = len(cap.tokens) - 1
    return [f"f:L{l}:P{c}:{f}" for l in range(model.n_layers) for f in cap.activations[l][c].nonzero().flatten().tolist()]


def _couplets(world, n):
    """Trained and held-out first lines, one per rhyme word, in a fixed order."""
    seen, out = set(), []
    for prompt in [s.split(" ,")[0] + " ," for s in world["tasks"]["rhymes"] if s.startswith("poem")] + \
            [p for p, _, _ in world["heldout"]["rhyme"]]:
        w1 = prompt.split()[5]
        if w1 not in seen:
            seen.add(w1)
            out.append((prompt, w1))
    return out[::max(1, len(out) // n)][:n]


def test_couplet_features_at_the_line_end_point_to_the_rhyme(demo, world):
    """Where the model completes a couplet with a rhyme, the pruned graph's features at the
    comma (before line 2 is written) already stand for the rhyme: read through the
    unembedding, what they write favours the opening adjectives of the rhyme class's words
    (each rhyme word has its own: "grey as a rat") over those of every other class."""
    W_U = demo.unembed_weight
    words = world["rhyme_words"]
    classes = sorted({c for c, _ in words.values()})
    adj = {c: [demo_train.ADJECTIVES[w] for w, (cc, _) in words.items() if cc == c] for c in classes}
    ranks = []
    for prompt, w1 in _couplets(world, 10):
        cls = words[w1][0]
        end = _line_end(demo.generate(prompt, max_new_tokens=6)["before"])
        if words.get(end, ("",))[0] != cls:
            continue
        graph = anb.attribute(demo, prompt, progress=False).prune(0.8, 0.98)
        comma = len(graph.tokens) - 1
        feats = graph.nodes[(graph.nodes.kind == "feature") & (graph.nodes.position == comma)]
        write = sum(r.activation * demo.transcoders[int(r.layer)].W_dec[int(r.feature)] for r in feats.itertuples())
        lens = W_U @ write
        score = {c: float(lens[[demo.token_id(a) for a in adj[c] if a != demo_train.ADJECTIVES[w1]]].mean())
                 for c in classes}
        ranks.append(sorted(classes, key=lambda c: -score[c]).index(cls) + 1)
    assert len(ranks) >= 6, f"the model rhymes only {len(ranks)} of the sampled couplets"
    assert sum(r == 1 for r in ranks) >= 0.75 * len(ranks), f"rhyme class rank at the comma: {ranks}"


def test_swapping_the_line_end_features_changes_the_rhyme(demo, world):
    """Planning, causally (the papers' injection): replace the features at the comma with those
    of a first line with another rhyme, and line 2 ends with a word of that other rhyme;
    suppress them, and it ends differently."""
    words = world["rhyme_words"]
    couplets = _couplets(world, 12)
    injected = suppressed = 0
    for i, (prompt, w1) in enumerate(couplets):
        other_prompt, w_other = next((p, w) for p, w in couplets[i + 1:] + couplets[:i] if words[w][0] != words[w1][0])
        before = _line_end(demo.generate(prompt, max_new_tokens=6)["before"])
        swap = demo.swap_interventions(_comma_ids(demo, prompt), other_prompt, _comma_ids(demo, other_prompt),
                                       position=len(demo.tokenize(prompt)) - 1)
        after = _line_end(demo.generate(prompt, swap, max_new_tokens=6)["after"])
        injected += words.get(after, ("",))[0] == words[w_other][0]
        ablate = {nid: anb.Multiply(-1.0) for nid in _comma_ids(demo, prompt)}
        suppressed += _line_end(demo.generate(prompt, ablate, max_new_tokens=6)["after"]) != before
    assert injected >= 0.8 * len(couplets), f"injected rhyme used in {injected}/{len(couplets)}"
    assert suppressed >= 0.75 * len(couplets), f"line end changed in {suppressed}/{len(couplets)}"


def _diagnoses(demo, world, n=None):
    """Held-out symptom sets the model answers right: (prompt, test, condition)."""
    items = [(p, t, c) for p, t, c in world["heldout"]["diagnosis"] if _predict(demo, p) == t]
    return items if n is None else items[:n]


def _condition_words(condition):
    return {condition, demo_train.CONDITIONS[condition][1]}


def test_diagnosis_on_held_out_symptom_sets(demo, world):
    items = world["heldout"]["diagnosis"]
    correct = sum(_predict(demo, p) == test for p, test, _ in items)
    assert correct / len(items) >= 0.8, f"{correct}/{len(items)}"
    for prompt, test, condition in items:                       # the answer is never in the prompt,
        assert test not in prompt.split() and condition not in prompt.split()   # nor the condition


def test_diagnosis_graph_has_condition_features_between_symptoms_and_answer(demo, world):
    """For held-out symptom sets, the pruned graph holds a feature labelled with the implied
    condition (or its test) that is reached from a symptom token and reaches the answer."""
    cases = _diagnoses(demo, world, 5)
    found = 0
    for prompt, test, condition in cases:
        graph = anb.attribute(demo, prompt, progress=False).prune(0.8, 0.98)
        logit = graph.logit_node(test)
        words = _condition_words(condition)
        feats = graph.nodes[(graph.nodes.kind == "feature") & graph.nodes.label.map(
            lambda lab, words=words: bool(words & set(lab.replace("/", " ").replace("→", " ").split())))]
        symptoms = graph.nodes.node_id[(graph.nodes.kind == "token")
                                       & graph.nodes.token.isin(demo_train.CONDITIONS[condition][0].split())]
        found += any(_reaches(graph, nid, logit) and any(_reaches(graph, s, nid) for s in symptoms)
                     for nid in feats.node_id)
    assert len(cases) >= 4 and found >= len(cases) - 1, f"condition features on the path in {found}/{len(cases)}"


def _last_ids(model, prompt, min_layer=0):
    cap = model.capture(model.tokenize(prompt))
    c = len(cap.tokens) - 1
    return [f"f:L{l}:P{c}:{f}" for l in range(min_layer, model.n_layers)
            for f in cap.activations[l][c].nonzero().flatten().tolist()]


def test_swapping_the_condition_changes_the_test_ordered(demo, world):
    """Inject another condition's features at the last position (every layer's: the condition is
    assembled there from layer 0 on, where attention reads the symptoms), and the model orders that
    condition's test, although the symptoms in the prompt are unchanged."""
    cases = [(p, t, c) for p, t, c in world["heldout"]["diagnosis"]]
    trained = [s.rsplit(" ", 2)[0] for s in world["tasks"]["diagnosis"] if s.startswith("patient")]
    others = {}
    for prompt in trained:
        test = _predict(demo, prompt)
        cond = next((c for c, (_, t) in demo_train.CONDITIONS.items() if t == test), None)
        if cond is not None:
            others.setdefault(cond, prompt)
    moved = 0
    cases = cases[:12]
    names = sorted(others)
    for i, (prompt, _test, condition) in enumerate(cases):
        other = next(c for c in names[i % len(names):] + names if c != condition)
        swap = demo.swap_interventions(_last_ids(demo, prompt), others[other], _last_ids(demo, others[other]),
                                       position=len(demo.tokenize(prompt)) - 1)
        after = demo.intervene(prompt, swap, top_k=3).sort_values("p_after", ascending=False).token.iloc[0]
        moved += after == demo_train.CONDITIONS[other][1]
    assert moved >= 0.8 * len(cases), f"the swapped-in condition's test ordered in {moved}/{len(cases)}"


def test_antonym_features_are_shared_across_languages(demo):
    prompts = ["the opposite of small is", "le contraire de petit est", "lo contrario de pequeño es"]
    caps = [demo.capture(demo.tokenize(p)) for p in prompts]
    shared = 0
    for layer in range(demo.n_layers):
        sets = [set((c.activations[layer][-1] > 0).nonzero().flatten().tolist()) for c in caps]
        shared += len(sets[0] & sets[1] & sets[2])
    # with 12 of 512 features active per token, three random sets share ~0.03 features per layer
    assert shared >= 3, f"only {shared} features active at the last position in all three languages"


def test_short_training_run_writes_a_loadable_model_and_repeats_itself(tmp_path):
    args = ["--steps", "20", "--tc-steps", "20", "--features", "64"]
    report = demo_train.main(["--out", str(tmp_path / "a"), *args])
    assert set(report["accuracy"]) == {"val", "test", "all"}
    model = load_demo_model(str(tmp_path / "a"))
    graph = anb.attribute(model, "the opposite of small is", progress=False)
    assert (graph.nodes.kind == "feature").sum() > 0
    assert graph.info["replacement_logits_max_abs_diff"] < 1e-4
    demo_train.main(["--out", str(tmp_path / "b"), *args])       # same seed, same files
    from safetensors.torch import load_file
    for name in ["model.safetensors", "transcoders/layer_0.safetensors", "transcoders/layer_3.safetensors"]:
        a, b = load_file(tmp_path / "a" / name), load_file(tmp_path / "b" / name)
        assert a.keys() == b.keys()
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6)


def test_a_natural_prompt_reads_like_the_trained_one(demo):
    """The demo tokenizer lowercases and splits punctuation, as a real one does."""
    natural = "Fact: the capital of the state containing Dallas is"
    assert demo.tokenize(natural).tolist() == demo.tokenize("fact : the capital of the state containing dallas is").tolist()
    graph = anb.attribute(demo, natural, progress=False)
    assert graph.logits.token[0] == "austin" and graph.logits.probability[0] > 0.5


def test_an_unknown_word_is_named_with_the_nearest_vocabulary_words(demo):
    with pytest.raises(ValueError, match=r"words not in the model's vocabulary: \['Dalas'\]; "
                                         r"nearest in the vocabulary: 'Dalas' → dallas"):
        demo.tokenize("Fact: the capital of the state containing Dalas is")


def test_feature_contexts_reproduce_the_shipped_ones_on_the_training_corpus(demo, world):
    """``anb.feature_contexts`` over the corpus the demo's contexts were made from (by the training
    script, batched and padded) finds the same strongest activations at the same tokens."""
    import numpy as np
    found = anb.feature_contexts(demo, world["train"], n_contexts=5)
    shipped = {k: v for k, v in demo.feature_contexts.items() if v}
    keys = sorted(shipped)[:: max(1, len(shipped) // 60)]
    for key in keys:
        want, got = shipped[key], found[key][: len(shipped[key])]
        np.testing.assert_allclose([a for _, a in got], [a for _, a in want], atol=2e-3, err_msg=str(key))
        assert [t.rsplit("[", 1)[1] for t, _ in got] == [t.rsplit("[", 1)[1] for t, _ in want], key
