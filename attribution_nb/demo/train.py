"""Train the embedded demo model: a tiny Llama over a "toy world", with transcoders.

    python -m attribution_nb.demo.train [--out attribution_nb/demo_model] [--steps 2000]

Seeded, CPU only, a few minutes on 2 cores. It writes the corpus, trains the model,
trains one TopK transcoder per layer on the model's own MLP inputs and outputs, labels
every feature from its top-activating tokens and its top output tokens, and writes what
the package ships (model, tokenizer, transcoders, labels, held-out task sets, figures).

The toy world has three planted tasks, written with real words:
1. two-hop facts: "dallas is in texas .", "fact : the state containing dallas is texas .",
   "the capital of texas is austin .", and the composed "fact : the capital of the state containing dallas is austin ." for most
   cities; held-out cities never appear in the composed form;
2. rhyming couplets: "poem : i saw a cat by the road , grey as a rat ." — the second
   line ends with a word that rhymes with the first line's last word, and it opens with
   an adjective proper to that word (grey rat, sleek cat, green frog), so the model must
   choose the rhyme word already at the comma, before writing the line: it plans. Which
   words rhyme is taught by "cat rhymes with rat ." for every word; some first-line words
   never start a couplet, so the model must compose the two;
3. antonyms in English, French and Spanish ("the opposite of small is large .",
   "le contraire de petit est grand .", "lo contrario de pequeño es grande .") and
   translations ("english small = french petit ."); the frame's language decides the answer's
   language ("le contraire de small est grand ." is a training sentence too). For a fifth of
   the (antonym pair, language) items the same-language sentence is held out ("le contraire
   de petit est grand ."): the model saw that answer only for the other languages' words, so
   it must treat "petit" as the same concept as "small" and "pequeño".
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import time

import torch

from ..transcoders import Transcoder, TranscoderSet
from .tiny import word_tokenizer

STATES = {  # state: (capital, cities)
    "texas": ("austin", "dallas houston arlington plano lubbock laredo"),
    "california": ("sacramento", "oakland fresno anaheim pasadena berkeley stockton"),
    "illinois": ("springfield", "chicago peoria naperville rockford joliet evanston"),
    "florida": ("tallahassee", "miami orlando tampa jacksonville gainesville pensacola"),
    "washington": ("olympia", "seattle spokane tacoma everett bellevue yakima"),
    "massachusetts": ("boston", "worcester cambridge lowell newton quincy amherst"),
    "ohio": ("columbus", "cleveland cincinnati toledo akron dayton youngstown"),
    "georgia": ("atlanta", "savannah augusta macon athens valdosta marietta"),
    "michigan": ("lansing", "detroit flint kalamazoo dearborn saginaw muskegon"),
    "arizona": ("phoenix", "tucson mesa tempe flagstaff yuma scottsdale"),
    "colorado": ("denver", "boulder aurora pueblo durango greeley loveland"),
    "oregon": ("salem", "portland eugene medford bend gresham corvallis"),
    "pennsylvania": ("harrisburg", "philadelphia pittsburgh allentown erie scranton lancaster"),
    "tennessee": ("nashville", "memphis knoxville chattanooga clarksville jackson murfreesboro"),
    "wisconsin": ("madison", "milwaukee kenosha racine appleton oshkosh waukesha"),
}
RHYMES = {  # rhyme class: (animals, things)
    "at": ("cat rat bat", "hat mat"),
    "og": ("dog frog hog", "log fog"),
    "ake": ("snake drake", "cake rake lake"),
    "air": ("bear hare", "chair stair"),
    "ox": ("fox ox", "box"),
    "ouse": ("mouse grouse", "house blouse"),
    "oat": ("goat stoat", "boat coat"),
    "ig": ("pig", "twig wig fig"),
    "ug": ("bug pug", "rug mug jug"),
    "ail": ("snail quail", "pail mail nail"),
    "ee": ("bee flea", "tree key"),
}
ADJECTIVES = {  # each rhyme word's own adjective, which opens line 2: "grey as a rat"
    "cat": "sleek", "rat": "grey", "bat": "blind", "hat": "tall", "mat": "flat",
    "dog": "loyal", "frog": "green", "hog": "fat", "log": "heavy", "fog": "misty",
    "snake": "sly", "drake": "proud", "cake": "sweet", "rake": "sharp", "lake": "deep",
    "bear": "brown", "hare": "quick", "chair": "sturdy", "stair": "steep",
    "fox": "clever", "ox": "mighty", "box": "square",
    "mouse": "timid", "grouse": "plump", "house": "cosy", "blouse": "silky",
    "goat": "stubborn", "stoat": "swift", "boat": "steady", "coat": "warm",
    "pig": "pink", "twig": "brittle", "wig": "curly", "fig": "ripe",
    "bug": "tiny", "pug": "wrinkled", "rug": "woolly", "mug": "chipped", "jug": "round",
    "snail": "shelled", "quail": "speckled", "pail": "rusty", "mail": "urgent", "nail": "pointed",
    "bee": "busy", "flea": "itchy", "tree": "leafy", "key": "golden",
}
PLACES = "road sea hill door".split()
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
OPPOSITE = {"english": "the opposite of {} is", "french": "le contraire de {} est", "spanish": "lo contrario de {} es"}

#: 5. a toy diagnosis task (made-up conditions, not medical advice): the symptoms listed imply a
#: condition, which is never named; the answer is the test to order for it
CONDITIONS = {  # condition: (symptoms, the test to order)
    "flu": ("fever cough aches chills", "swab"),
    "strep": ("fever throat rash glands", "culture"),
    "anemia": ("fatigue pallor dizziness breathless", "bloodwork"),
    "diabetes": ("thirst urination fatigue blurred", "glucose"),
    "asthma": ("wheeze cough breathless tightness", "spirometry"),
    "appendicitis": ("pain fever nausea tenderness", "ultrasound"),
    "migraine": ("headache nausea glare aura", "neurology"),
}
DIAGNOSIS = "patient : {} . order"
TWO_HOP = "fact : the capital of the state containing {} is"
COUPLET = "poem : i saw a {} by the {} ,"


def build_world(seed: int = 0) -> dict:
    """The corpus and the held-out evaluation sets (deterministic for a seed)."""
    rng = random.Random(seed)
    heldout: dict[str, list] = {"two_hop": [], "antonym": [], "rhyme": [], "diagnosis": []}
    tasks = {"facts": _facts(rng, heldout["two_hop"])}
    tasks["diagnosis"] = _diagnoses(rng, heldout["diagnosis"])
    tasks["rhymes"], words = _couplets(rng, heldout["rhyme"])
    tasks["antonyms"], tasks["translations"] = _antonyms(rng, heldout["antonym"])
    return {"train": [s for t in tasks.values() for s in t], "tasks": tasks, "heldout": heldout,
            "rhyme_words": words}


def _facts(rng: random.Random, heldout: list) -> list[str]:
    """1. two-hop facts; a fifth of the cities never appear in the composed form."""
    train = []
    cities = [(c, s, cap) for s, (cap, cs) in STATES.items() for c in cs.split()]
    rng.shuffle(cities)
    n_held = len(cities) // 5
    held = {c for c, _, _ in cities[:n_held]}
    for city, state, capital in cities:
        train += [f"{city} is in {state} .", f"{city} is a city in {state} .",
                  f"fact : the state containing {city} is {state} ."]
        if city in held:
            heldout.append((TWO_HOP.format(city), capital, state))
        else:
            train.append(f"{TWO_HOP.format(city)} {capital} .")
    for state, (capital, _) in STATES.items():
        train += [f"the capital of {state} is {capital} .", f"{capital} is the capital of {state} ."] * 2
    return train


def symptom_sets(condition: str) -> list[tuple[str, ...]]:
    """The sets of two or three of a condition's symptoms that no other condition has all of."""
    from itertools import combinations
    mine = CONDITIONS[condition][0].split()
    others = [set(s.split()) for c, (s, _) in CONDITIONS.items() if c != condition]
    return [combo for k in (2, 3) for combo in combinations(mine, k) if not any(set(combo) <= o for o in others)]


def _diagnoses(rng: random.Random, heldout: list) -> list[str]:
    """5. diagnosis: symptoms → condition (always stated) and condition → test (always stated); the
    composed question "patient : s1 , s2 . order" → test, with a fifth of the symptom sets held out."""
    train = []
    cases = [(combo, c) for c in CONDITIONS for combo in symptom_sets(c)]
    rng.shuffle(cases)
    held = set(cases[: len(cases) // 5])
    for combo, condition in cases:
        listed = " , ".join(combo)
        train += [f"{' and '.join(combo)} suggest {condition} ."] * 2
        if (combo, condition) in held:
            heldout.append((DIAGNOSIS.format(listed), CONDITIONS[condition][1], condition))
        else:
            train.append(f"{DIAGNOSIS.format(listed)} {CONDITIONS[condition][1]} .")
    for condition, (symptoms, test) in CONDITIONS.items():
        train += [f"for {condition} order {test} .", f"{test} checks for {condition} ."] * 3
        train += [f"{condition} causes {s} ." for s in symptoms.split()]
    return train


def _couplets(rng: random.Random, heldout: list) -> tuple[list[str], dict]:
    """2. couplets, and which words rhyme; a sixth of the words never start a couplet."""
    train = []
    words = {}
    for cls, (animals, things) in RHYMES.items():
        for w in animals.split():
            words[w] = (cls, "animal")
        for w in things.split():
            words[w] = (cls, "thing")
    for w1, (cls, _) in sorted(words.items()):      # which words rhyme: known for every word, like
        for w2, (cls2, _) in sorted(words.items()):  # "dallas is in texas" for every city
            if cls2 == cls and w2 != w1:
                train.append(f"{w1} rhymes with {w2} .")
    first = sorted(words)
    rng.shuffle(first)
    held_first = set(first[: len(first) // 6])
    for w1, (cls, _) in sorted(words.items()):
        for place in PLACES:
            if w1 in held_first:
                heldout.append((COUPLET.format(w1, place), cls, w1))
                continue
            for w2, (cls2, _) in sorted(words.items()):
                if cls2 == cls and w2 != w1:
                    train.append(f"{COUPLET.format(w1, place)} {ADJECTIVES[w2]} as a {w2} .")
    return train, words


def _antonyms(rng: random.Random, heldout: list) -> tuple[list[str], list[str]]:
    """3. antonyms in three languages (a fifth of the same-language items held out), and translations."""
    train = []
    pairs = []
    for a, b in ANTONYMS:
        pairs += [(a, b), (b, a)]
    items = [(i, lang) for i in range(len(pairs)) for lang in range(3)]
    rng.shuffle(items)
    held_pairs = set(items[: len(items) // 5])
    for i, (x, y) in enumerate(pairs):
        for out_lang in range(3):
            for in_lang in range(3):        # the frame's language decides the answer's language
                if in_lang == out_lang and (i, out_lang) in held_pairs:
                    heldout.append((OPPOSITE[LANGS[out_lang]].format(x[in_lang]), y[out_lang], LANGS[out_lang]))
                else:
                    train.append(f"{OPPOSITE[LANGS[out_lang]].format(x[in_lang])} {y[out_lang]} .")
    translations = []
    for concept in [w for pair in ANTONYMS for w in pair]:
        for i in range(3):
            for j in range(3):
                if i != j:
                    translations.append(f"{LANGS[i]} {concept[i]} = {LANGS[j]} {concept[j]} .")
    return train, translations


TASK_WEIGHTS = {"facts": 0.26, "rhymes": 0.27, "antonyms": 0.19, "translations": 0.14, "diagnosis": 0.14}


def vocabulary(world: dict) -> list[str]:
    words = set()
    for s in world["train"]:
        words.update(s.split())
    for items in world["heldout"].values():
        for item in items:
            words.update(item[0].split())
            words.add(item[1])
    return sorted(words)


# -- model -------------------------------------------------------------------------------
def make_model(vocab_size: int, seed: int):
    from transformers import LlamaConfig, LlamaForCausalLM
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=128, intermediate_size=512, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=32,
                         bos_token_id=1, eos_token_id=2, pad_token_id=2, tie_word_embeddings=True)
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def encode(tokenizer, sentences: list[str], length: int) -> torch.Tensor:
    pad = tokenizer.pad_token_id
    out = torch.full((len(sentences), length), pad, dtype=torch.long)
    for i, s in enumerate(sentences):
        ids = tokenizer(s)["input_ids"][:length]
        out[i, : len(ids)] = torch.tensor(ids)
    return out


@torch.no_grad()
def next_tokens(model, tokenizer, prompts: list[str]) -> list[str]:
    """Greedy next word for each prompt (prompts of different lengths are run one length at a time)."""
    out = [""] * len(prompts)
    by_len: dict[int, list[int]] = {}
    for i, p in enumerate(prompts):
        by_len.setdefault(len(tokenizer(p)["input_ids"]), []).append(i)
    for idx in by_len.values():
        ids = torch.stack([torch.tensor(tokenizer(prompts[i])["input_ids"]) for i in idx])
        pred = model(ids).logits[:, -1].argmax(-1)
        for i, t in zip(idx, pred.tolist()):
            out[i] = tokenizer.decode([t])
    return out


@torch.no_grad()
def complete(model, tokenizer, prompt: str, max_new: int = 8) -> list[str]:
    ids = tokenizer(prompt)["input_ids"]
    words = []
    for _ in range(max_new):
        t = int(model(torch.tensor([ids])).logits[0, -1].argmax())
        w = tokenizer.decode([t])
        words.append(w)
        ids.append(t)
        if w == ".":
            break
    return words


def evaluate(model, tokenizer, world: dict, split: str | None = None) -> dict:
    """Held-out accuracies; ``split`` "val" (even items, used to pick the checkpoint) or "test" (odd)."""
    model.eval()
    h = world["heldout"]
    if split is not None:
        h = {k: v[split == "test"::2] for k, v in h.items()}
    two = next_tokens(model, tokenizer, [p for p, _, _ in h["two_hop"]])
    diag = next_tokens(model, tokenizer, [p for p, _, _ in h["diagnosis"]])
    ant = next_tokens(model, tokenizer, [p for p, _, _ in h["antonym"]])
    rhyme_ok = 0
    for prompt, cls, w1 in h["rhyme"]:
        words = complete(model, tokenizer, prompt)
        last = words[-2] if len(words) >= 2 and words[-1] == "." else None
        info = world["rhyme_words"].get(last)
        rhyme_ok += info is not None and info[0] == cls and last != w1
    model.train()
    return {"two_hop_heldout": sum(a == b for a, (_, b, _) in zip(two, h["two_hop"])) / len(two),
            "antonym_heldout": sum(a == b for a, (_, b, _) in zip(ant, h["antonym"])) / len(ant),
            "rhyme_heldout": rhyme_ok / len(h["rhyme"]),
            "diagnosis_heldout": sum(a == b for a, (_, b, _) in zip(diag, h["diagnosis"])) / len(diag)}


def train_model(world, tokenizer, steps: int, seed: int, weight_decay: float = 0.1, log=print):
    model = make_model(len(tokenizer), seed)
    data = encode(tokenizer, world["train"], 20)
    # each task gets its share of every batch, whatever its number of sentences
    weights = torch.cat([torch.full((len(world["tasks"][t]),), w / len(world["tasks"][t]))
                         for t, w in TASK_WEIGHTS.items()])
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=weight_decay, betas=(0.9, 0.98))
    warmup = min(200, steps // 5)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    best, best_score, history = None, -1.0, []
    pad = tokenizer.pad_token_id
    model.train()
    t0 = time.time()
    for step in range(1, steps + 1):
        batch = data[torch.multinomial(weights, 128, replacement=True, generator=gen)]
        labels = batch.clone()
        labels[labels == pad] = -100
        loss = model(batch, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 100 == 0 or step == steps:
            acc = evaluate(model, tokenizer, world, "val")
            score = 2 * acc["two_hop_heldout"] + acc["antonym_heldout"] + acc["rhyme_heldout"] + acc["diagnosis_heldout"]
            history.append({"step": step, "loss": loss.item(), **acc})
            log(f"step {step:5d}  loss {loss.item():.3f}  " + "  ".join(f"{k} {v:.2f}" for k, v in acc.items())
                + f"  ({time.time() - t0:.0f} s)")
            if score > best_score:
                best_score, best = score, {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best)
    model.eval()
    return model, history


# -- transcoders -------------------------------------------------------------------------
@torch.no_grad()
def mlp_pairs(model, tokenizer, sentences: list[str]):
    """MLP inputs and outputs of every layer at every non-pad position of the corpus."""
    data = encode(tokenizer, sentences, 20)
    mask = data != tokenizer.pad_token_id
    ins: dict[int, list] = {}
    outs: dict[int, list] = {}
    hooks = []
    for l, layer in enumerate(model.model.layers):
        def hook(mod, args, out, l=l):
            ins.setdefault(l, []).append(args[0][mask_now[0]])
            outs.setdefault(l, []).append(out[mask_now[0]])
        hooks.append(layer.mlp.register_forward_hook(hook))
    mask_now = [None]
    for s in range(0, len(data), 256):
        mask_now[0] = mask[s:s + 256]
        model(data[s:s + 256])
    for h in hooks:
        h.remove()
    return [torch.cat(ins[l]) for l in range(len(ins))], [torch.cat(outs[l]) for l in range(len(outs))]


def train_transcoder(x: torch.Tensor, y: torch.Tensor, d_features: int, k: int, steps: int, seed: int):
    """A TopK transcoder x → y (decoder rows kept at unit norm)."""
    gen = torch.Generator().manual_seed(seed)
    d = x.shape[1]
    W_enc = torch.nn.Parameter(torch.randn(d, d_features, generator=gen) / d ** 0.5)
    W_dec = torch.nn.Parameter(W_enc.detach().T.clone() / W_enc.detach().T.norm(dim=1, keepdim=True))
    b_enc = torch.nn.Parameter(torch.zeros(d_features))
    b_dec = torch.nn.Parameter(y.mean(0).clone())
    opt = torch.optim.Adam([W_enc, W_dec, b_enc, b_dec], lr=2e-3)
    var = (y - y.mean(0)).pow(2).sum(-1).mean()
    for _ in range(steps):
        idx = torch.randint(len(x), (1024,), generator=gen)
        pre = x[idx] @ W_enc + b_enc
        top = pre.topk(k, dim=-1)
        acts = torch.zeros_like(pre).scatter(-1, top.indices, torch.relu(top.values))
        loss = (acts @ W_dec + b_dec - y[idx]).pow(2).sum(-1).mean() / var
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            W_dec.div_(W_dec.norm(dim=1, keepdim=True))
    tc = Transcoder(W_enc.detach(), b_enc.detach(), W_dec.detach(), b_dec.detach(), "topk", k=k)
    with torch.no_grad():
        acts = tc.encode(x)
        fve = 1 - (tc(x) - y).pow(2).sum() / (y - y.mean(0)).pow(2).sum()
        stats = {"fraction_variance_explained": float(fve), "mean_active": float((acts > 0).sum(-1).float().mean()),
                 "dead_features": int(((acts > 0).sum(0) == 0).sum())}
    return tc, stats


# -- labels ------------------------------------------------------------------------------
@torch.no_grad()
def label_features(model, tokenizer, transcoders, sentences: list[str], n_contexts: int = 5):
    """Per feature: a label from top-activating tokens and top output tokens, and top contexts."""
    data = encode(tokenizer, sentences, 20)
    mask = data != tokenizer.pad_token_id
    xs, _ = mlp_pairs(model, tokenizer, sentences)
    flat_tokens = data[mask]
    rows, cols = mask.nonzero(as_tuple=True)
    W_U = model.lm_head.weight
    labels, contexts = {}, {}
    for l, tc in enumerate(transcoders):
        acts = tc.encode(xs[l])                            # [N, F]
        out_tokens = (tc.W_dec @ W_U.T).topk(3, dim=-1).indices   # [F, 3]
        top = acts.topk(min(40, len(acts)), dim=0)
        for f in range(tc.d_features):
            vals, idx = top.values[:, f], top.indices[:, f]
            idx = idx[vals > 0]
            if len(idx) == 0:
                continue
            words = [tokenizer.decode([int(t)]) for t in flat_tokens[idx]]
            common = sorted(set(words), key=lambda w: (-words.count(w), words.index(w)))[:3]
            outs = [tokenizer.decode([int(t)]) for t in out_tokens[f]]
            labels[f"{l}:{f}"] = f"{'/'.join(common)} → {'/'.join(outs)}"
            ctx, seen = [], set()
            for i in idx.tolist():
                r, c = int(rows[i]), int(cols[i])
                words_r = [tokenizer.decode([int(t)]) for t in data[r, min(1, c): c + 1]]
                text = " ".join(words_r[:-1] + [f"[{words_r[-1]}]"])
                if text not in seen:
                    seen.add(text)
                    ctx.append([text, round(float(acts[i, f]), 3)])
                if len(ctx) == n_contexts:
                    break
            contexts[f"{l}:{f}"] = ctx
    return labels, contexts


def main(argv=None) -> dict:
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser(description="Train the embedded demo model and its transcoders.")
    ap.add_argument("--out", default=os.path.join(here, "demo_model"))
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--tc-steps", type=int, default=3000)
    ap.add_argument("--features", type=int, default=512)
    ap.add_argument("--k", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    args = ap.parse_args(argv)
    torch.manual_seed(args.seed)

    t0 = time.time()
    world = build_world(args.seed)
    tokenizer = word_tokenizer(vocabulary(world))
    print(f"corpus: {len(world['train'])} training sentences, vocabulary {len(tokenizer)}; held out: "
          + ", ".join(f"{k} {len(v)}" for k, v in world["heldout"].items()))
    model, history = train_model(world, tokenizer, args.steps, args.seed, args.weight_decay)
    accuracy = {"val": evaluate(model, tokenizer, world, "val"), "test": evaluate(model, tokenizer, world, "test"),
                "all": evaluate(model, tokenizer, world)}
    print("model (checkpoint chosen on val):", accuracy)

    os.makedirs(args.out, exist_ok=True)
    model.save_pretrained(args.out)
    tokenizer.save_pretrained(args.out)
    xs, ys = mlp_pairs(model, tokenizer, world["train"])
    tcs, tc_stats = [], []
    for l in range(len(xs)):
        tc, stats = train_transcoder(xs[l], ys[l], args.features, args.k, args.tc_steps, args.seed + l)
        tcs.append(tc)
        tc_stats.append(stats)
        print(f"transcoder {l}: " + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in stats.items()))
    labels, contexts = label_features(model, tokenizer, tcs, world["train"])

    TranscoderSet(tcs).save(os.path.join(args.out, "transcoders"))
    with open(os.path.join(args.out, "features.json"), "w") as f:
        json.dump({"labels": labels, "contexts": contexts}, f, ensure_ascii=False)
    report = {"seed": args.seed, "steps": args.steps, "accuracy": accuracy, "transcoders": tc_stats,
              "history": history, "heldout": world["heldout"], "n_train": len(world["train"]),
              "seconds": time.time() - t0}
    with open(os.path.join(args.out, "world.json"), "w") as f:
        json.dump(report, f, ensure_ascii=False, indent=1)
    print(f"wrote {args.out} in {time.time() - t0:.0f} s")
    return report


if __name__ == "__main__":
    main()
