"""The demo model's toy world: its facts, its prompt frames, and the truth about every prompt.

Imported at run time (the notebooks, :func:`~attribution_nb.demo.probes`, the tests) and by the
training script. Each case study has a latent that the model must compute and that no single
input token names, and each latent is queried in two frames, so that features carrying the
latent can be told from features that say one answer:

* **two-hop**: city → state → (capital | nickname). Held-out cities never appear in either
  composed frame ("the capital/nickname of the state containing X is"), only in "X is in S";
* **poetry**: line 1 holds two rhyme words of different classes; line 2 must end with a word
  rhyming with line 1's *last* word, after filler words and an adjective that are shared by
  every rhyme class, so the rhyme class must be carried from the line break to the line's end;
* **diagnosis**: symptoms → condition (never stated) → (test | treatment); two conditions share
  each of three tests (and no symptom), so a condition is not its test;
* **multilingual antonyms**: concept × language, with a fifth of same-language items held out.
"""

from __future__ import annotations

import re

STATES = {  # state: (capital, nickname, cities)
    "texas": ("austin", "lonestar", "dallas houston arlington plano lubbock laredo"),
    "california": ("sacramento", "golden", "oakland fresno anaheim pasadena berkeley stockton"),
    "illinois": ("springfield", "prairie", "chicago peoria naperville rockford joliet evanston"),
    "florida": (
        "tallahassee",
        "sunshine",
        "miami orlando tampa jacksonville gainesville pensacola",
    ),
    "washington": ("olympia", "evergreen", "seattle spokane tacoma everett bellevue yakima"),
    "massachusetts": ("boston", "baystate", "worcester cambridge lowell newton quincy amherst"),
    "ohio": ("columbus", "buckeye", "cleveland cincinnati toledo akron dayton youngstown"),
    "georgia": ("atlanta", "peach", "savannah augusta macon athens valdosta marietta"),
    "michigan": ("lansing", "wolverine", "detroit flint kalamazoo dearborn saginaw muskegon"),
    "arizona": ("phoenix", "canyon", "tucson mesa tempe flagstaff yuma scottsdale"),
    "colorado": ("denver", "centennial", "boulder aurora pueblo durango greeley loveland"),
    "oregon": ("salem", "beaver", "portland eugene medford bend gresham corvallis"),
    "pennsylvania": (
        "harrisburg",
        "keystone",
        "philadelphia pittsburgh allentown erie scranton lancaster",
    ),
    "tennessee": (
        "nashville",
        "volunteer",
        "memphis knoxville chattanooga clarksville jackson murfreesboro",
    ),
    "wisconsin": ("madison", "badger", "milwaukee kenosha racine appleton oshkosh waukesha"),
}
CITY_STATE = {c: s for s, (_, _, cities) in STATES.items() for c in cities.split()}
CAPITAL = {s: v[0] for s, v in STATES.items()}
NICKNAME = {s: v[1] for s, v in STATES.items()}
TWO_HOP = "fact : the capital of the state containing {} is"
TWO_HOP_NICKNAME = "fact : the nickname of the state containing {} is"

RHYMES = {  # rhyme class: words
    "at": "cat rat bat hat mat",
    "og": "dog frog hog log fog",
    "ake": "snake drake cake rake lake",
    "air": "bear hare chair stair",
    "ox": "fox ox box",
    "ouse": "mouse grouse house blouse",
    "oat": "goat stoat boat coat",
    "ig": "pig twig wig fig",
    "ug": "bug pug rug mug jug",
    "ail": "snail quail pail mail nail",
    "ee": "bee flea tree key",
}
RHYME_CLASS = {w: c for c, ws in RHYMES.items() for w in ws.split()}
#: line 2 = filler + "a" + adjective + rhyme word + "." — fillers and adjectives go with any class
FILLERS = ["", "then", "and then", "and soon", "and later on", "so at last", "near"]
ADJECTIVES = "little funny sleepy lazy noisy gentle silly hungry".split()
COUPLET = "poem : a {} sat by the {} ,"

CONDITIONS = {  # condition: (symptoms, test to order, treatment) — made up, not medical advice
    # two conditions share each of three tests but no symptom; every shared symptom joins two
    # conditions with *different* tests, so the evidence left when a condition is inhibited points
    # to another test (fever: flu/appendicitis; cough: flu/asthma; nausea: appendicitis/diabetes …)
    "flu": ("fever cough aches chills", "swab", "rest"),
    "strep": ("throat rash glands headache", "swab", "penicillin"),
    "anemia": ("fatigue pallor dizziness breathless", "bloodwork", "iron"),
    "diabetes": ("thirst urination blurred nausea", "bloodwork", "insulin"),
    "asthma": ("wheeze cough breathless tightness", "spirometry", "inhaler"),
    "appendicitis": ("pain fever nausea tenderness", "scan", "surgery"),
    "migraine": ("headache glare aura dizziness", "scan", "triptan"),
}
TEST = {c: v[1] for c, v in CONDITIONS.items()}
TREATMENT = {c: v[2] for c, v in CONDITIONS.items()}
DIAGNOSIS = "patient : {} . order"
DIAGNOSIS_TREAT = "patient : {} . treat with"

ANTONYMS = [  # (english, french, spanish) pairs of opposite concepts
    (("small", "petit", "pequeño"), ("large", "grand", "grande")),
    (("hot", "chaud", "caliente"), ("cold", "froid", "frío")),
    (("fast", "rapide", "rápido"), ("slow", "lent", "lento")),
    (("high", "haut", "alto"), ("low", "bas", "bajo")),
    (("new", "nouveau", "nuevo"), ("old", "vieux", "viejo")),
    (("good", "bon", "bueno"), ("bad", "mauvais", "malo")),
    (("open", "ouvert", "abierto"), ("closed", "fermé", "cerrado")),
    (("light", "clair", "claro"), ("dark", "sombre", "oscuro")),
    (("strong", "fort", "fuerte"), ("weak", "faible", "débil")),
    (("full", "plein", "lleno"), ("empty", "vide", "vacío")),
    (("rich", "riche", "rico"), ("poor", "pauvre", "pobre")),
    (("happy", "heureux", "feliz"), ("sad", "triste", "infeliz")),
    (("long", "long", "largo"), ("short", "court", "corto")),
    (("early", "tôt", "temprano"), ("late", "tard", "tardío")),
    (("hard", "dur", "duro"), ("soft", "mou", "blando")),
    (("wet", "mouillé", "mojado"), ("dry", "sec", "seco")),
    (("clean", "propre", "limpio"), ("dirty", "sale", "sucio")),
    (("thick", "épais", "grueso"), ("thin", "mince", "delgado")),
]
LANGS = ("english", "french", "spanish")
OPPOSITE = {
    "english": "the opposite of {} is",
    "french": "le contraire de {} est",
    "spanish": "lo contrario de {} es",
}


def concept_of(word: str, lang: str) -> tuple[int, int]:
    """``(pair, side)`` of an antonym word in a language (side 0 or 1 of :data:`ANTONYMS`)."""
    i = LANGS.index(lang)
    for p, pair in enumerate(ANTONYMS):
        for side in (0, 1):
            if pair[side][i] == word:
                return p, side
    raise KeyError(f"{word!r} is not a {lang} antonym word of the demo world")


def antonym(word: str, lang: str, out_lang: str | None = None) -> str:
    """The opposite of ``word`` (a ``lang`` word), in ``out_lang`` (default ``lang``)."""
    p, side = concept_of(word, lang)
    return ANTONYMS[p][1 - side][LANGS.index(out_lang or lang)]


_LINE2 = re.compile(r"^(?P<filler>(?:[a-z]+ )*?)a (?P<adj>[a-z]+) (?P<word>[a-z]+) \.$")


def read_line2(text: str) -> dict | None:
    """Parse a generated second line: ``{"filler", "adjective", "word", "class"}`` where it is a
    well-formed line of the world (a known filler, a known adjective, a rhyme word, a full stop),
    else ``None``."""
    words = re.sub(r"\s*([.,])", r" \1", text).split()  # a decoder may glue "mat." together
    if "." in words:
        words = words[: words.index(".") + 1]
    m = _LINE2.match(" ".join(words))
    if (
        not m
        or m["filler"].strip() not in FILLERS
        or m["adj"] not in ADJECTIVES
        or m["word"] not in RHYME_CLASS
    ):
        return None
    return {
        "filler": m["filler"].strip(),
        "adjective": m["adj"],
        "word": m["word"],
        "class": RHYME_CLASS[m["word"]],
    }


def symptom_sets(condition: str) -> list[tuple[str, ...]]:
    """The sets of two or three of a condition's symptoms that no other condition has all of."""
    from itertools import combinations

    mine = CONDITIONS[condition][0].split()
    others = [set(s.split()) for c, (s, _, _) in CONDITIONS.items() if c != condition]
    return [
        combo
        for k in (2, 3)
        for combo in combinations(mine, k)
        if not any(set(combo) <= o for o in others)
    ]


def probes(split: dict, which: str = "train") -> list[dict]:
    """Probes of every case study for :func:`attribution_nb.latent_labels`: prompts of the world
    with the latent values at their last position. ``split`` is ``world.json``'s "split" (the
    held-out cities, rhyme line ends and symptom sets); ``which`` picks the items out of it
    ("train") or in it ("heldout"), so features are labelled on one and tested on the other.
    Latents: ``state``, ``capital``, ``nickname``, ``frame`` (two-hop); ``rhyme`` (the class line 2
    must end in, at the line break); ``condition``, ``test``, ``treatment`` (diagnosis);
    ``concept``, ``answer`` (English names) and ``language`` (multilingual)."""
    if which not in ("train", "heldout"):
        raise ValueError(f"which must be 'train' or 'heldout', got {which!r}")
    held = which == "heldout"
    out = _two_hop_probes(split, held) + _rhyme_probes(split, held) + _diagnosis_probes(split, held)
    return out + ([] if held else _antonym_probes())


def _two_hop_probes(split: dict, held: bool) -> list[dict]:
    out: list[dict] = []
    cities = set(split["two_hop_cities"])
    for city, state in sorted(CITY_STATE.items()):
        if (city in cities) == held:
            out.append(
                {
                    "prompt": TWO_HOP.format(city),
                    "state": state,
                    "capital": CAPITAL[state],
                    "frame": "capital",
                }
            )
            out.append(
                {
                    "prompt": TWO_HOP_NICKNAME.format(city),
                    "state": state,
                    "nickname": NICKNAME[state],
                    "frame": "nickname",
                }
            )
    return out


def _rhyme_probes(split: dict, held: bool) -> list[dict]:
    out: list[dict] = []
    ends = set(split["rhyme_line_ends"])
    words = sorted(RHYME_CLASS)
    for i, w1 in enumerate(words):
        if (w1 in ends) == held:
            others = [w for w in words if RHYME_CLASS[w] != RHYME_CLASS[w1] and w not in ends]
            for d in (others[(7 * i) % len(others)], others[(7 * i + 13) % len(others)]):
                out.append({"prompt": COUPLET.format(d, w1), "rhyme": RHYME_CLASS[w1]})
    return out


def split_symptom_sets(split: dict, held: bool) -> list[tuple[str, str]]:
    """``(listed symptoms, condition)`` of every held-out (``held``) or training symptom set of
    ``split`` (``world.json``'s "split"), conditions in :data:`CONDITIONS` order."""
    sets = {tuple(x) for x in split["diagnosis_symptom_sets"]}
    return [
        (" , ".join(combo), condition)
        for condition in CONDITIONS
        for combo in symptom_sets(condition)
        if ((" , ".join(combo), condition) in sets) == held
    ]


def _diagnosis_probes(split: dict, held: bool) -> list[dict]:
    out: list[dict] = []
    for listed, condition in split_symptom_sets(split, held):
        out.append(
            {"prompt": DIAGNOSIS.format(listed), "condition": condition, "test": TEST[condition]}
        )
        out.append(
            {
                "prompt": DIAGNOSIS_TREAT.format(listed),
                "condition": condition,
                "treatment": TREATMENT[condition],
            }
        )
    return out


def _antonym_probes() -> list[dict]:
    out: list[dict] = []
    for pair in ANTONYMS:
        for side in (0, 1):
            for li, lang in enumerate(LANGS):
                out.append(
                    {
                        "prompt": OPPOSITE[lang].format(pair[side][li]),
                        "concept": pair[side][0],
                        "answer": pair[1 - side][0],
                        "language": lang,
                    }
                )
    return out
