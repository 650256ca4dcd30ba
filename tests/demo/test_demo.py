"""The embedded demo model: it loads offline, solves its tasks, and its graphs show the planted structure."""

import json
import os

import pytest
import torch

import attribution_nb as anb
from attribution_nb.demo import DEMO_DIR, load_demo_model
from attribution_nb.demo import cases
from attribution_nb.demo import train as demo_train
from attribution_nb.demo import world as world_mod

pytestmark = pytest.mark.skipif(
    not os.path.isfile(os.path.join(DEMO_DIR, "config.json")),
    reason="the trained demo model is not in this checkout",
)


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
    assert len(model.feature_labels) > 100 and all(
        "→" in v for v in list(model.feature_labels.values())[:20]
    )
    assert any(model.feature_contexts.values())


def _accuracy(model, items):
    return sum(_predict(model, p) == answer for p, answer, _ in items) / len(items)


@pytest.mark.parametrize(
    "task", ["two_hop", "two_hop_nickname", "antonym", "diagnosis", "diagnosis_treat"]
)
def test_held_out_accuracy_of_each_one_token_task(demo, world, task):
    """Every held-out item of the task (the composed form never in training) answered right, ≥ 90%."""
    assert _accuracy(demo, world["heldout"][task]) >= 0.9


def test_held_out_couplets_rhyme_and_are_well_formed(demo, world):
    from attribution_nb.demo.world import read_line2

    ok = 0
    for prompt, cls, w1 in world["heldout"]["rhyme"]:
        line = read_line2(demo.generate(prompt, max_new_tokens=8, stop=".")["before"])
        ok += line is not None and line["class"] == cls and line["word"] != w1
    assert ok / len(world["heldout"]["rhyme"]) >= 0.9, ok


def test_latent_labels_find_features_for_most_latent_values(demo):
    """The best feature of each latent value, scored on training probes: the median F1 over values
    is high for the one-token latents, and labels carry the latent where F1 ≥ 0.5."""
    best = anb.best_per_value(cases.latent_table(demo))
    for latent in ("state", "condition", "test", "language"):
        assert best[best.latent == latent].f1.median() >= 0.7, latent
    graph = anb.attribute(demo, world_mod.TWO_HOP.format("houston"), progress=False)
    top = graph.prune(0.8, 0.98).top_features(10)
    shown = [(int(r.layer), int(r.feature)) for r in top.itertuples()]
    for (layer, feature), label in zip(shown, top.label):
        assert (
            label.startswith(demo.feature_latents[(layer, feature)])
            if (layer, feature) in demo.feature_latents
            else "F1" not in label
        )


def test_state_swap_on_held_out_cities_in_both_frames_beats_its_random_control(demo):
    capital = cases.two_hop_swap(demo, "capital")
    nickname = cases.two_hop_swap(demo, "nickname")
    assert capital.n == 54 and capital.rate >= 0.7 and capital.control_rate <= 0.1, capital
    assert nickname.rate >= 0.6 and nickname.control_rate <= 0.1, nickname


def test_condition_swap_on_held_out_symptom_sets_beats_its_random_control(demo):
    swap = cases.condition_swap(demo)
    assert swap.rate >= 0.7 and swap.control_rate <= 0.1, swap


def test_condition_suppression_moves_the_order_to_another_test_not_to_punctuation(demo):
    report = cases.condition_inhibit(demo)
    assert report.table.after.str.strip().isin(set(world_mod.TEST.values())).all(), report.table
    assert report.rate >= 0.7 and report.control_rate <= 0.1, report


def test_concept_swap_on_held_out_antonym_prompts_beats_its_random_control(demo):
    swap = cases.concept_swap(demo)
    assert swap.n == 21 and swap.rate >= 0.8 and swap.control_rate <= 0.1, swap


def test_the_rhyme_plan_at_the_line_break_moves_line_2_s_end_also_teacher_forced(demo):
    """Another class's rhyme family swapped in at the comma, line 2's first words forced to the
    model's own: its last word is in that class; random sets of the same size do not move it (the
    free-running injection is asserted in notebooks/03_poetry.ipynb)."""
    report = cases.rhyme_inject(demo, forced=True)
    assert report.rate >= 0.7 and report.control_rate <= 0.1, report


def test_suppressing_the_rhyme_plan_at_the_line_break_gives_a_couplet_in_another_class(demo):
    """The rhyme family at the comma mean-ablated to the other classes: line 2 is still a well-formed
    line and ends in another class, on held-out couplets; random sets of the same size do not."""
    report = cases.rhyme_suppress(demo)
    assert report.n == 32 and set(report.table.target) == {f"¬{c}" for c in report.table.source}
    assert report.rate >= 0.7 and report.control_rate <= 0.1, report


def test_a_suppression_to_the_source_s_own_mean_fails_the_same_check(demo):
    """The suppression's check is not vacuous: the same clamps set to the mean of the line end's
    *own* class (a broken suppression that keeps the plan) leave line 2 in that class."""
    from attribution_nb.demo import world as w

    family = cases.family_of(cases.supernodes(demo, "rhyme"))
    reference = cases._rhyme_reference(cases.DEMO_DIR)
    items = [
        {"prompt": p, "source": w.RHYME_CLASS[w1], "target": "own " + w.RHYME_CLASS[w1]}
        for p, w1 in cases.couplets()
    ]
    means = {
        f"own {c}": anb.feature_means(demo, reference(c), family)
        for c in {i["source"] for i in items}
    }

    def other_class(item, text):
        line = w.read_line2(text)
        return line is not None and line["class"] != item.source

    report = anb.swap_test(
        demo,
        items,
        {k: family for k in set(means) | {i["source"] for i in items}},
        means,
        inhibit=0.0,
        scale=1.0,
        control=False,
        check=other_class,
    )
    assert report.rate <= 0.2, report


def test_cases_run_on_training_items_too_and_refuse_an_unknown_split(demo):
    """``which="train"`` (where the protocol was chosen) runs the same experiment on the training
    items: the symptom sets of the two splits are disjoint and together all of the world's."""
    from attribution_nb.demo import world as w

    held, train = cases.symptom_sets(), cases.symptom_sets(which="train")
    assert not set(held) & set(train)
    assert len(held) + len(train) == sum(len(w.symptom_sets(c)) for c in w.CONDITIONS)
    assert {p for p, _ in cases.couplets(which="train")}.isdisjoint(p for p, _ in cases.couplets())
    with pytest.raises(ValueError, match="which must be 'heldout' or 'train', got 'test'"):
        cases.couplets(which="test")
    with pytest.raises(ValueError, match="suppress must be 'mean' or 'inhibit', got 'zero'"):
        cases.condition_inhibit(demo, suppress="zero")


def test_conditions_that_share_a_test_share_no_symptom():
    """The diagnosis world: a shared symptom always joins two conditions with different tests, so
    what is left when a condition is inhibited points to another test."""
    symptoms = {c: set(v[0].split()) for c, v in world_mod.CONDITIONS.items()}
    pairs = [(a, b) for a in symptoms for b in symptoms if a < b]
    assert all(
        not (symptoms[a] & symptoms[b]) for a, b in pairs if world_mod.TEST[a] == world_mod.TEST[b]
    )
    assert sum(bool(symptoms[a] & symptoms[b]) for a, b in pairs) >= 5
    assert len(set(world_mod.TEST.values())) < len(
        world_mod.CONDITIONS
    )  # a condition is not its test


def test_the_training_mask_hides_line_1_from_line_2_except_the_line_break():
    """Hand-built: with the mask, no head of any layer attends from line 2 to line 1's words (only to
    the break, <bos> and line 2); without it they do; rows that are not couplets keep the causal mask."""
    from attribution_nb.demo.tiny import word_tokenizer

    words = "poem rhyme : a cat dog sat by the fox , then little rat . patient fever".split()
    tok = word_tokenizer(words)
    data = demo_train.encode(
        tok, ["poem : a cat sat by the fox , then a little rat .", "patient : fever , fever ."], 14
    )
    breaks = demo_train.line_breaks(tok, data)
    assert breaks.tolist() == [9, -1]
    mask = demo_train.couplet_mask(breaks, 14, 1.0, torch.Generator().manual_seed(0))
    allowed = mask[:, 0] == 0
    causal = torch.ones(14, 14).tril().bool()
    assert torch.equal(allowed[1], causal)
    expected = causal.clone()
    expected[10:, 1:9] = False
    assert torch.equal(allowed[0], expected)
    model = demo_train.make_model(len(tok), 0).eval()
    model.set_attn_implementation("eager")
    with torch.no_grad():
        masked = model(data, attention_mask=mask, output_attentions=True).attentions
        plain = model(data, output_attentions=True).attentions
    for a, b in zip(masked, plain):
        assert a[0, :, 10:, 1:9].abs().max() == 0 and a[0, :, 10:, 9].min() > 0  # only the break
        assert b[0, :, 10:, 1:9].min() > 0
        torch.testing.assert_close(a[1], b[1])  # not a couplet


def test_a_broken_swap_fails_the_same_check(demo):
    """The check is not vacuous: swapping in the *wrong* reference values (each target's family
    means replaced by the source's own) leaves the answer where it was."""
    import random
    from attribution_nb.demo import world as w

    held = cases.split()["two_hop_cities"]
    nodes = cases.supernodes(demo, "state")
    family = cases.family_of(nodes)
    items = [
        {
            "prompt": w.TWO_HOP.format(c),
            "source": w.CITY_STATE[c],
            "target": w.CITY_STATE[c],
            "expected": w.CAPITAL[
                random.Random(c).choice(sorted(set(w.STATES) - {w.CITY_STATE[c]}))
            ],
        }
        for c in held
    ]
    ref = {
        s: anb.feature_means(
            demo,
            [w.TWO_HOP.format(c) for c, s2 in w.CITY_STATE.items() if s2 == s and c not in held],
            family,
        )
        for s in w.STATES
    }
    report = anb.swap_test(
        demo, items, {s: family for s in w.STATES}, ref, inhibit=0.0, scale=2.0, control=False
    )
    assert report.rate <= 0.1, report


def test_short_training_run_writes_a_loadable_model_and_repeats_itself(tmp_path):
    args = ["--steps", "20", "--tc-steps", "20", "--features", "64"]
    report = demo_train.main(["--out", str(tmp_path / "a"), *args])
    assert set(report["accuracy"]) == {"val", "test", "all"}
    model = load_demo_model(str(tmp_path / "a"))
    graph = anb.attribute(model, "the opposite of small is", progress=False)
    assert (graph.nodes.kind == "feature").sum() > 0
    assert graph.info["replacement_logits_max_abs_diff"] < 1e-4
    demo_train.main(["--out", str(tmp_path / "b"), *args])  # same seed, same files
    from safetensors.torch import load_file

    for name in [
        "model.safetensors",
        "transcoders/layer_0.safetensors",
        "transcoders/layer_3.safetensors",
    ]:
        a, b = load_file(tmp_path / "a" / name), load_file(tmp_path / "b" / name)
        assert a.keys() == b.keys()
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6)


def test_a_natural_prompt_reads_like_the_trained_one(demo):
    """The demo tokenizer lowercases and splits punctuation, as a real one does."""
    natural = "Fact: the capital of the state containing Dallas is"
    assert (
        demo.tokenize(natural).tolist()
        == demo.tokenize("fact : the capital of the state containing dallas is").tolist()
    )
    graph = anb.attribute(demo, natural, progress=False)
    assert graph.logits.token[0] == "austin" and graph.logits.probability[0] > 0.5


def test_an_unknown_word_is_named_with_the_nearest_vocabulary_words(demo):
    with pytest.raises(
        ValueError,
        match=r"words not in the model's vocabulary: \['Dalas'\]; "
        r"nearest in the vocabulary: 'Dalas' → dallas",
    ):
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
        np.testing.assert_allclose(
            [a for _, a in got], [a for _, a in want], atol=2e-3, err_msg=str(key)
        )
        assert [t.rsplit("[", 1)[1] for t, _ in got] == [t.rsplit("[", 1)[1] for t, _ in want], key
