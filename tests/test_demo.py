"""The embedded demo model: it loads offline, solves its tasks, and its graphs show the planted structure."""

import json
import os
from collections import deque

import pytest
import torch

import attribution_nb as anb
from attribution_nb import demo_train
from attribution_nb.demo import DEMO_DIR, load_demo_model

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
        logit = f"l:{capital}"
        assert logit in set(graph.nodes.node_id)
        feats = graph.nodes[(graph.nodes.kind == "feature") & graph.nodes.label.str.contains(rf"\b{state}\b")]
        found += any(_reaches(graph, nid, logit) for nid in feats.node_id)
    assert found >= len(cases) - 1, f"state features on a path to the capital in {found}/{len(cases)} prompts"


@pytest.mark.xfail(strict=True, reason="not yet: in the shipped demo model the comma features do not favour "
                   "the rhyme class (ranks mostly 9-11 of 11); the rhyme is chosen later in line 2")
def test_couplet_features_at_the_line_end_point_to_the_rhyme(demo, world):
    """Where the model completes a held-out couplet with a rhyme, what the pruned graph's
    features at the comma (before line 2 starts) write already favours the rhyme class:
    through the unembedding, the other words of the class score highest of the 11 classes."""
    W_U = demo.unembed_weight
    words = world["rhyme_words"]
    classes = sorted({c for c, _ in words.values()})
    ids = {w: demo.token_id(w) for w in words}
    ranks = []
    for prompt, cls, w1 in world["heldout"]["rhyme"][::2]:
        completion = demo_train.complete(demo.hf_model, demo.tokenizer, prompt)
        if len(completion) < 2 or words.get(completion[-2], ("",))[0] != cls:
            continue
        graph = anb.attribute(demo, prompt, progress=False).prune(0.8, 0.98)
        comma = len(graph.tokens) - 1
        feats = graph.nodes[(graph.nodes.kind == "feature") & (graph.nodes.position == comma)]
        write = sum(r.activation * demo.transcoders[int(r.layer)].W_dec[int(r.feature)] for r in feats.itertuples())
        lens = W_U @ write
        score = {c: float(lens[[ids[w] for w, (cc, _) in words.items() if cc == c and w != w1]].mean()) for c in classes}
        ranks.append(sorted(classes, key=lambda c: -score[c]).index(cls) + 1)
    assert len(ranks) >= 4, f"the model rhymes only {len(ranks)} of the sampled held-out couplets"
    assert sum(r == 1 for r in ranks) >= 0.75 * len(ranks), f"rhyme class rank at the comma: {ranks}"


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
