"""Top-activating contexts against a brute-force search over every position of a small corpus."""

import pytest
import torch

import attribution_nb as anb
from attribution_nb.contexts import _context_text

TEXTS = [
    "fact : the capital of the state containing dallas is",
    "the opposite of small is big",
    "dallas is in texas .",
    "the capital of texas is austin .",
    "he saw a hungry rabbit",
    "le contraire de petit est grand",
    "lo contrario de pequeño es grande",
    "the cat sat",
]


def test_contexts_are_the_strongest_distinct_activations(llama):
    n = 3
    found = anb.feature_contexts(llama, TEXTS, n_contexts=n, candidates=200, window=5, batch_size=2)
    # brute force: every window position, one window at a time, through the clean capture
    every = {}
    for text in TEXTS:
        ids = torch.tensor(llama.tokenizer(text)["input_ids"])
        for s in range(0, len(ids), 5):
            w = ids[s : s + 5]
            acts = llama.capture(w).activations
            for l, a in enumerate(acts):
                for p, f in a.nonzero().tolist():
                    every.setdefault((l, f), []).append(
                        (float(a[p, f]), _context_text(llama.tokenizer, w, p, 12))
                    )
    assert set(found) == set(every)
    for key, hits in every.items():
        best, seen = [], set()
        for value, text in sorted(hits, key=lambda h: -h[0]):
            if text not in seen and len(best) < n:
                seen.add(text)
                best.append(value)
        assert [a for _, a in found[key]] == pytest.approx(best, abs=2e-3), key


def test_a_context_marks_its_token_after_the_tokens_before_it(llama):
    ids = torch.tensor(llama.tokenizer("the capital of texas is austin .")["input_ids"])
    assert _context_text(llama.tokenizer, ids, 5, 12) == "the capital of texas [is]"  # BOS left out
    assert _context_text(llama.tokenizer, ids, 5, 2) == "of texas [is]"


def test_bad_arguments_are_named(llama):
    with pytest.raises(ValueError, match="texts must be a list of strings"):
        anb.feature_contexts(llama, "one string")
    with pytest.raises(ValueError, match="n_contexts=0"):
        anb.feature_contexts(llama, TEXTS, n_contexts=0)
    with pytest.raises(ValueError, match="texts holds no text"):
        anb.feature_contexts(llama, ["", "  "])
