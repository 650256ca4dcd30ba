"""The case studies' claims, measured on held-out items with random controls of the same size.

Each function runs one experiment of one case study over *all* its held-out items and returns a
:class:`~attribution_nb.experiments.SwapReport` (``.rate``, ``.control_rate``, ``.table``). The
notebooks walk through one item and then call these; the tests and ``bench/case_studies.py``
assert and report the same numbers. Supernodes are found, not typed: for a latent (state, rhyme,
condition, concept) each feature at the last position joins the supernode of the value it detects
best, measured on the *training* items' probes (:func:`attribution_nb.latent_labels`), when that F1
is at least ``min_f1``. The latent's *family* is the union of its values' supernodes.

* A **swap** sets every feature of the family, at the last position, to ``scale`` × its mean on
  training prompts of the target value: features of the source value go off, the target's come
  on, features shared by both stay; nothing outside the family is touched.
* A **suppression** (``suppress="mean"``, the protocol) is a mean ablation of the family: every
  feature of it set to its mean on training prompts of all *other* values (``¬cat`` in the
  tables), so the position holds "some value, not this one" at in-distribution activations.
  ``suppress="inhibit"`` is the papers' negative steering instead: the source value's own
  supernode multiplied by ``-inhibit`` — here weaker, because the value is carried by the rest of
  the family too (``bench/results_case_studies.txt``).

The random control changes as many features, in the same layers, in the same way. The protocol
was chosen on the training items (``which="train"``) and is reported on the held-out ones.
"""

from __future__ import annotations

import json
import os
import random
from typing import Any

import pandas as pd

from ..experiments import SwapReport, feature_means, swap_test
from ..latents import best_latents, latent_labels
from . import DEMO_DIR
from . import world as W

#: the protocol of every swap and suppression below (one for all case studies, not tuned per item;
#: chosen on the training items, reported on the held-out ones)
PROTOCOL: dict[str, Any] = {
    "min_f1": 0.2,
    "layers": (0, 1, 2, 3),
    "scale": 2.0,
    "suppress": "mean",
    "inhibit": 2.0,
}


def _world_json(folder: str) -> dict:
    with open(os.path.join(folder, "world.json"), encoding="utf-8") as f:
        return json.load(f)


def split(folder: str = DEMO_DIR) -> dict:
    """The held-out splits the demo model was trained with (``world.json``)."""
    return _world_json(folder)["split"]


def latent_table(model, folder: str = DEMO_DIR):
    """Every feature scored against every latent on the training items' probes, each latent among the
    probes of its own case study (``undefined="ignore"``; cached on the model)."""
    if getattr(model, "_case_latents", None) is None:
        # each latent scored among the prompts of its own case study (a state among two-hop prompts)
        model._case_latents = latent_labels(
            model, W.probes(split(folder), "train"), undefined="ignore"
        )
    return model._case_latents


def supernodes(
    model, latent: str, min_f1: float | None = None, layers=None, folder: str = DEMO_DIR
) -> dict[str, list[tuple[int, int]]]:
    """``{value: [(layer, feature)]}``: the last position's features grouped by the ``latent`` value
    each detects best (F1 ≥ ``min_f1``), in ``layers``; best first."""
    min_f1 = PROTOCOL["min_f1"] if min_f1 is None else min_f1
    layers = PROTOCOL["layers"] if layers is None else layers
    best = best_latents(latent_table(model, folder), latent)
    best = best[(best.f1 >= min_f1) & best.layer.isin(layers)]
    return {
        v: [(int(r.layer), int(r.feature)) for r in g.itertuples()]
        for v, g in best.groupby("value")
    }


def _run(
    model,
    items,
    latent,
    reference_prompts,
    *,
    folder=DEMO_DIR,
    check=None,
    max_new_tokens=8,
    position: int = -1,
    values=(),
    **protocol,
) -> SwapReport:
    """Swap (items with a ``target``) or suppress (none has one) the ``latent`` family; ``values``:
    every value of the latent in the world (the "others" a mean ablation averages over)."""
    p = {**PROTOCOL, **protocol}
    if p["suppress"] not in ("mean", "inhibit"):
        raise ValueError(f"suppress must be 'mean' or 'inhibit', got {p['suppress']!r}")
    nodes = supernodes(model, latent, p["min_f1"], p["layers"], folder)
    family = family_of(nodes)
    suppress = all(item.get("target") is None for item in items)
    if suppress and p["suppress"] == "inhibit":  # each value's own supernode × -inhibit
        return swap_test(
            model,
            items,
            nodes,
            {},
            inhibit=p["inhibit"],
            check=check,
            max_new_tokens=max_new_tokens,
        )
    if suppress:  # mean ablation: the family at its mean over every other value
        sources = sorted({item["source"] for item in items})
        others = {
            f"¬{v}": [q for u in values if u != v for q in reference_prompts(u)] for v in sources
        }
        ref = {k: feature_means(model, qs, family, position) for k, qs in others.items()}
        items = [{**item, "target": f"¬{item['source']}"} for item in items]
        scale = 1.0
    else:
        wanted = {item["target"] for item in items}  # the source's family is replaced whole
        ref = {v: feature_means(model, reference_prompts(v), family, position) for v in wanted}
        scale = p["scale"]
    return swap_test(
        model,
        items,
        {v: family for v in {item["source"] for item in items} | set(ref)},
        ref,
        inhibit=0.0,
        scale=scale,
        check=check,
        max_new_tokens=max_new_tokens,
    )


def family_of(nodes: dict) -> list[tuple[int, int]]:
    """The union of a latent's supernodes, in (layer, feature) order."""
    return sorted({f for members in nodes.values() for f in members})


def _which(which: str) -> bool:
    """True for the held-out items, False for the training ones."""
    if which not in ("heldout", "train"):
        raise ValueError(f"which must be 'heldout' or 'train', got {which!r}")
    return which == "heldout"


# -- two-hop -----------------------------------------------------------------------------------
def two_hop_swap(
    model, frame: str = "capital", folder: str = DEMO_DIR, which: str = "heldout", **protocol
) -> SwapReport:
    """Held-out (or training) cities × 3 other states: the state supernode swapped at the last
    position; a hit is the target state's capital (``frame="capital"``) or nickname
    (``"nickname"``). The reference means come from training cities other than the item's."""
    template, answer = {
        "capital": (W.TWO_HOP, W.CAPITAL),
        "nickname": (W.TWO_HOP_NICKNAME, W.NICKNAME),
    }[frame]
    held = set(split(folder)["two_hop_cities"])
    mine = sorted(c for c in W.CITY_STATE if (c in held) == _which(which))
    items = [
        {
            "prompt": template.format(c),
            "source": W.CITY_STATE[c],
            "target": t,
            "expected": answer[t],
        }
        for c in mine
        for t in random.Random(c).sample(sorted(s for s in W.STATES if s != W.CITY_STATE[c]), 3)
    ]

    def reference(state):
        return [template.format(c) for c, s in W.CITY_STATE.items() if s == state and c not in held]

    return _run(model, items, "state", reference, folder=folder, **protocol)


# -- poetry ------------------------------------------------------------------------------------
def couplets(folder: str = DEMO_DIR, which: str = "heldout") -> list[tuple[str, str]]:
    """(prompt, line-1 end word) for every held-out (or training) line end, each with four
    distractor first words of other classes (training words)."""
    ends = set(split(folder)["rhyme_line_ends"])
    words = sorted(W.RHYME_CLASS)
    return [
        (W.COUPLET.format(d, w1), w1)
        for w1 in words
        if (w1 in ends) == _which(which)
        for d in random.Random(w1).sample(
            [w for w in words if W.RHYME_CLASS[w] != W.RHYME_CLASS[w1] and w not in ends], 4
        )
    ]


def _rhyme_reference(folder):
    prompts = [p["prompt"] for p in W.probes(split(folder), "train") if "rhyme" in p]
    return lambda cls: [p for p in prompts if W.RHYME_CLASS[p.split()[-2]] == cls]


def rhyme_suppress(model, folder: str = DEMO_DIR, which: str = "heldout", **protocol) -> SwapReport:
    """The line-1 class's plan suppressed at the line break (the comma; by default the rhyme family
    mean-ablated to the other classes); a hit is a well-formed line 2 that ends in another class."""
    items = [{"prompt": p, "source": W.RHYME_CLASS[w1]} for p, w1 in couplets(folder, which)]

    def other_class(item, text):
        line = W.read_line2(text)
        return line is not None and line["class"] != item.source

    return _run(
        model,
        items,
        "rhyme",
        _rhyme_reference(folder),
        folder=folder,
        check=other_class,
        values=sorted(W.RHYMES),
        **protocol,
    )


def rhyme_inject(
    model, forced: bool = False, folder: str = DEMO_DIR, which: str = "heldout", **protocol
) -> SwapReport:
    """Another class's plan swapped in at the line break (2 target classes per couplet); a hit is a
    well-formed line 2 ending in the target class. With ``forced`` the model's own line 2 (before
    the swap) is teacher-forced up to its last word, and the hit is the next word being of the
    target class: the plan acts at the line's end, not through the next tokens."""
    items = []
    for p, w1 in couplets(folder, which):
        for t in random.Random(p).sample(sorted(c for c in W.RHYMES if c != W.RHYME_CLASS[w1]), 2):
            item = {"prompt": p, "source": W.RHYME_CLASS[w1], "target": t}
            if forced:  # the model's own line 2 up to its last word (skipped where ill-formed)
                line = W.read_line2(model.generate(p, max_new_tokens=8, stop=".")["before"])
                if line is None:
                    continue
                item["forced"] = f"{line['filler']} a {line['adjective']}".strip()
            items.append(item)
    if forced:

        def next_word(item, text):
            words = text.split()
            return bool(words) and W.RHYME_CLASS.get(words[0]) == item.target

        return _run(
            model,
            items,
            "rhyme",
            _rhyme_reference(folder),
            folder=folder,
            check=next_word,
            max_new_tokens=1,
            **protocol,
        )

    def target_class(item, text):
        line = W.read_line2(text)
        return line is not None and line["class"] == item.target

    return _run(
        model,
        items,
        "rhyme",
        _rhyme_reference(folder),
        folder=folder,
        check=target_class,
        **protocol,
    )


# -- diagnosis ---------------------------------------------------------------------------------
def symptom_sets(folder: str = DEMO_DIR, which: str = "heldout") -> list[tuple[str, str]]:
    """(listed symptoms, condition) of every held-out (or training) symptom set."""
    return W.split_symptom_sets(split(folder), _which(which))


def _diagnosis_reference(folder, template=W.DIAGNOSIS):
    train = symptom_sets(folder, "train")
    return lambda c: [template.format(s) for s, c2 in train if c2 == c]


def condition_swap(model, folder: str = DEMO_DIR, which: str = "heldout", **protocol) -> SwapReport:
    """Held-out (or training) symptom sets × every condition with another test: the condition
    supernode swapped; a hit is the target condition's test."""
    items = [
        {"prompt": W.DIAGNOSIS.format(s), "source": c, "target": t, "expected": W.TEST[t]}
        for s, c in symptom_sets(folder, which)
        for t in W.CONDITIONS
        if W.TEST[t] != W.TEST[c]
    ]
    return _run(model, items, "condition", _diagnosis_reference(folder), folder=folder, **protocol)


def condition_inhibit(
    model, folder: str = DEMO_DIR, which: str = "heldout", **protocol
) -> SwapReport:
    """Held-out (or training) symptom sets: the condition suppressed at the last position (by
    default the condition family mean-ablated to the other conditions); a hit is another *test*
    as the answer (not punctuation, not the same test)."""
    tests = set(W.TEST.values())
    items = [{"prompt": W.DIAGNOSIS.format(s), "source": c} for s, c in symptom_sets(folder, which)]

    def other_test(item, text):
        words = text.split()
        return bool(words) and words[0] in tests and words[0] != W.TEST[item.source]

    return _run(
        model,
        items,
        "condition",
        _diagnosis_reference(folder),
        folder=folder,
        check=other_test,
        max_new_tokens=1,
        values=sorted(W.CONDITIONS),
        **protocol,
    )


# -- multilingual ------------------------------------------------------------------------------
def _heldout_antonym_prompts(folder: str) -> set[str]:
    """The same-language antonym prompts never answered in training (``world.json``'s held-out
    items)."""
    return {item[0] for item in _world_json(folder)["heldout"]["antonym"]}


def concept_swap(model, folder: str = DEMO_DIR, which: str = "heldout", **protocol) -> SwapReport:
    """Every held-out (or training) antonym prompt × one other concept: the concept family (features
    that detect a concept at the last position, whatever the language) set there to 2 × their mean
    on the target concept's training prompts in the same language; a hit is the target concept's
    antonym in the prompt's language."""
    held = _heldout_antonym_prompts(folder)
    probes = [p for p in W.probes(split(folder), "train") if "concept" in p]
    concepts = sorted({q["concept"] for q in probes})
    protocol = {"layers": (0, 1, 2, 3), **protocol}
    reports = []
    for lang in W.LANGS:
        mine = [p for p in probes if p["language"] == lang]
        known = {p["concept"] for p in mine if p["prompt"] not in held}  # a reference exists
        items = [
            {
                "prompt": p["prompt"],
                "source": p["concept"],
                "target": t,
                "expected": W.antonym(t, "english", lang),
            }
            for p in mine
            if (p["prompt"] in held) == _which(which)
            for t in random.Random(p["prompt"]).sample(
                [c for c in concepts if c in known and c not in (p["concept"], p["answer"])], 1
            )
        ]
        if not items:
            continue

        def reference(c, mine=mine):
            return [p["prompt"] for p in mine if p["concept"] == c and p["prompt"] not in held]

        reports.append(_run(model, items, "concept", reference, folder=folder, **protocol))
    return SwapReport(pd.concat([r.table for r in reports], ignore_index=True), reports[0].settings)
