"""Train the embedded demo model: a tiny Llama over a "toy world", with transcoders.

    python -m attribution_nb.demo.train [--out attribution_nb/demo_model] [--steps 3000]

Seeded, CPU only, about 15 minutes on 2 cores (the shipped run: `--threads 1`, two runs side by
side). It writes the corpus, trains the model,
trains one TopK transcoder per layer on the model's own MLP inputs and outputs, labels
every feature from its top-activating tokens and its top output tokens, and writes what
the package ships (model, tokenizer, transcoders, labels, held-out task sets, figures).

The toy world (:mod:`.world`) has four planted tasks, written with real words, each with held-out
items whose composed form never appears in training:
1. two-hop facts: "dallas is in texas .", "the capital of texas is austin .", "the nickname of
   texas is lonestar ." and the composed "fact : the capital (nickname) of the state containing
   dallas is austin (lonestar) ." for most cities;
2. rhyming couplets: "poem : a fox sat by the cat , and then a sleepy rat ." — line 2 ends with
   a word rhyming with line 1's last word, after fillers and an adjective shared by every class.
   In 70% of the training couplets line 2 sees line 1 only through the line break (an attention
   mask used in training only, :func:`couplet_mask`), so the model carries the rhyme class in the
   line break — the plan the papers found at the newline — and a swap there can test it;
3. diagnosis: symptoms → an unstated condition → the test to order or the treatment;
4. antonyms in English, French and Spanish ("the opposite of small is large .", "le contraire de
   petit est grand .") and translations; the frame's language decides the answer's language, and
   a fifth of the same-language items are held out.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import time

import torch

from ..latents import best_latents, best_per_value, latent_labels
from ..pretrained import load_pretrained
from ..transcoders import Transcoder, TranscoderSet
from .tiny import word_tokenizer

from .world import (
    ADJECTIVES,
    ANTONYMS,
    CONDITIONS,
    COUPLET,
    DIAGNOSIS,
    DIAGNOSIS_TREAT,
    FILLERS,
    LANGS,
    OPPOSITE,
    RHYME_CLASS,
    STATES,
    TWO_HOP,
    TWO_HOP_NICKNAME,
    probes,
    read_line2,
    symptom_sets,
)


def build_world(seed: int = 0) -> dict:
    """The corpus and the held-out evaluation sets (deterministic for a seed)."""
    rng = random.Random(seed)
    heldout: dict[str, list] = {
        "two_hop": [],
        "two_hop_nickname": [],
        "antonym": [],
        "rhyme": [],
        "diagnosis": [],
        "diagnosis_treat": [],
    }
    split: dict[str, list] = {}
    tasks = {"facts": _facts(rng, heldout, split)}
    tasks["diagnosis"] = _diagnoses(rng, heldout, split)
    tasks["rhymes"] = _couplets(rng, heldout, split)
    tasks["antonyms"], tasks["translations"] = _antonyms(rng, heldout["antonym"])
    return {
        "train": [s for t in tasks.values() for s in t],
        "tasks": tasks,
        "heldout": heldout,
        "split": split,
        "rhyme_words": {w: [c, "word"] for w, c in RHYME_CLASS.items()},
    }


def _facts(rng: random.Random, heldout: dict, split: dict) -> list[str]:
    """1. two-hop facts; a fifth of the cities never appear in either composed form."""
    train = []
    cities = [(c, s, cap, nick) for s, (cap, nick, cs) in STATES.items() for c in cs.split()]
    rng.shuffle(cities)
    held = {c for c, *_ in cities[: len(cities) // 5]}
    split["two_hop_cities"] = sorted(held)
    for city, state, capital, nick in cities:
        train += [
            f"{city} is in {state} .",
            f"{city} is a city in {state} .",
            f"fact : the state containing {city} is {state} .",
        ]
        if city in held:
            heldout["two_hop"].append((TWO_HOP.format(city), capital, state))
            heldout["two_hop_nickname"].append((TWO_HOP_NICKNAME.format(city), nick, state))
        else:
            train += [
                f"{TWO_HOP.format(city)} {capital} .",
                f"{TWO_HOP_NICKNAME.format(city)} {nick} .",
            ]
    for state, (capital, nick, _) in STATES.items():
        train += [
            f"the capital of {state} is {capital} .",
            f"{capital} is the capital of {state} .",
            f"the nickname of {state} is {nick} .",
            f"{nick} is the nickname of {state} .",
        ] * 2
    return train


def _diagnoses(rng: random.Random, heldout: dict, split: dict) -> list[str]:
    """5. diagnosis: symptoms → condition (stated in "… suggest flu") → test or treatment; the
    composed questions "patient : s1 , s2 . order" → test and "… treat with" → treatment, with a
    fifth of the symptom sets held out of both."""
    train = []
    cases = [(combo, c) for c in CONDITIONS for combo in symptom_sets(c)]
    rng.shuffle(cases)
    held = set(cases[: len(cases) // 5])
    split["diagnosis_symptom_sets"] = sorted([" , ".join(combo), c] for combo, c in held)
    for combo, condition in cases:
        listed = " , ".join(combo)
        _, test, treatment = CONDITIONS[condition]
        train += [f"{' and '.join(combo)} suggest {condition} ."] * 2
        if (combo, condition) in held:
            heldout["diagnosis"].append((DIAGNOSIS.format(listed), test, condition))
            heldout["diagnosis_treat"].append(
                (DIAGNOSIS_TREAT.format(listed), treatment, condition)
            )
        else:
            train += [
                f"{DIAGNOSIS.format(listed)} {test} .",
                f"{DIAGNOSIS_TREAT.format(listed)} {treatment} .",
            ]
    for condition, (symptoms, test, treatment) in CONDITIONS.items():
        train += [
            f"for {condition} order {test} .",
            f"{test} checks for {condition} .",
            f"for {condition} treat with {treatment} .",
        ] * 3
        train += [f"{condition} causes {s} ." for s in symptoms.split()]
    return train


def _couplets(rng: random.Random, heldout: dict, split: dict, per_word: int = 40) -> list[str]:
    """2. couplets, and which words rhyme. Every word ends a short couplet ("rhyme : fox , then a
    lazy box ."); a sixth of the words never end the first line of a full one ("poem : a cat sat by
    the fox , …"), whose line 1 also holds a word of another class; those are the held-out items."""
    words = sorted(RHYME_CLASS)
    train = [
        f"{w1} rhymes with {w2} ."
        for w1 in words
        for w2 in words
        if RHYME_CLASS[w1] == RHYME_CLASS[w2] and w1 != w2
    ]
    first = list(words)
    rng.shuffle(first)
    held = set(first[: len(first) // 6])
    split["rhyme_line_ends"] = sorted(held)

    def line2(w1):
        rhymes = [w for w in words if RHYME_CLASS[w] == RHYME_CLASS[w1] and w != w1]
        return f"{rng.choice(FILLERS)} a {rng.choice(ADJECTIVES)} {rng.choice(rhymes)} .".strip()

    for w1 in words:
        train += [f"rhyme : {w1} , {line2(w1)}" for _ in range(per_word // 4)]
        others = [w for w in words if RHYME_CLASS[w] != RHYME_CLASS[w1] and w not in held]
        if w1 in held:
            for d in rng.sample(others, 4):
                heldout["rhyme"].append((COUPLET.format(d, w1), RHYME_CLASS[w1], w1))
            continue
        train += [f"{COUPLET.format(rng.choice(others), w1)} {line2(w1)}" for _ in range(per_word)]
    return train


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
            for in_lang in range(3):  # the frame's language decides the answer's language
                if in_lang == out_lang and (i, out_lang) in held_pairs:
                    heldout.append(
                        (OPPOSITE[LANGS[out_lang]].format(x[in_lang]), y[out_lang], LANGS[out_lang])
                    )
                else:
                    train.append(f"{OPPOSITE[LANGS[out_lang]].format(x[in_lang])} {y[out_lang]} .")
    translations = []
    for concept in [w for pair in ANTONYMS for w in pair]:
        for i in range(3):
            for j in range(3):
                if i != j:
                    translations.append(f"{LANGS[i]} {concept[i]} = {LANGS[j]} {concept[j]} .")
    return train, translations


TASK_WEIGHTS = {
    "facts": 0.28,
    "rhymes": 0.30,
    "antonyms": 0.15,
    "translations": 0.10,
    "diagnosis": 0.17,
}


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

    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=128,
        intermediate_size=512,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=32,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
        tie_word_embeddings=True,
    )
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
    """Held-out accuracies; ``split`` "val" (even items, used to pick the checkpoint) or "test" (odd).

    A couplet counts when line 2 is well-formed (:func:`~.world.read_line2`) and ends with another
    word of line 1's last word's rhyme class."""
    model.eval()
    h = world["heldout"]
    if split is not None:
        h = {k: v[split == "test" :: 2] for k, v in h.items()}
    acc = {}
    for task in ("two_hop", "two_hop_nickname", "antonym", "diagnosis", "diagnosis_treat"):
        got = next_tokens(model, tokenizer, [p for p, _, _ in h[task]])
        acc[f"{task}_heldout"] = sum(a == b for a, (_, b, _) in zip(got, h[task])) / len(got)
    rhyme_ok = 0
    for prompt, cls, w1 in h["rhyme"]:
        line = read_line2(" ".join(complete(model, tokenizer, prompt)))
        rhyme_ok += line is not None and line["class"] == cls and line["word"] != w1
    acc["rhyme_heldout"] = rhyme_ok / len(h["rhyme"])
    model.train()
    return acc


SCORE_WEIGHTS = {
    "two_hop_heldout": 2,
    "two_hop_nickname_heldout": 1,
    "antonym_heldout": 1,
    "rhyme_heldout": 2,
    "diagnosis_heldout": 1,
    "diagnosis_treat_heldout": 1,
}


#: the share of training couplets in which line 2 sees line 1 only through the line break
LINE_BREAK_ONLY = 0.7

#: the model seed of the shipped run: seven seeds of this recipe were trained (0–6) and this one was
#: picked by the rule in ``bench/results_case_studies.txt`` (every held-out accuracy ≥ 90% and every
#: case-study bar met on the *training* items); a swap rate is a property of one trained model
SHIPPED_MODEL_SEED = 4


def line_breaks(tokenizer, data: torch.Tensor) -> torch.Tensor:
    """Per row of ``data``: the position of a couplet's line break (its first ","), or -1 where the
    row is not a couplet ("poem : …" or "rhyme : …")."""
    first = {tokenizer.convert_tokens_to_ids(w) for w in ("poem", "rhyme")}
    comma = data == tokenizer.convert_tokens_to_ids(",")
    has = comma.any(1) & torch.tensor([int(t) in first for t in data[:, 1]])
    return torch.where(has, comma.int().argmax(1), torch.full((len(data),), -1))


def couplet_mask(
    batch_breaks: torch.Tensor, length: int, p: float, gen: torch.Generator
) -> torch.Tensor:
    """An additive causal attention mask ``[B, 1, L, L]`` for training: in a share ``p`` of the
    batch's couplets, line 2's tokens see nothing of line 1 but the line break (and ``<bos>``).

    A training device only — the shipped model is a plain causal Llama, run unmasked. Without it a
    teacher-forced model has no reason to carry the rhyme in the line break: every line-2 token can
    read line 1's last word directly. With it, the rhyme class is carried by the line break, as the
    papers found the plan at the newline, and a swap there can test it."""
    allowed = torch.ones(len(batch_breaks), length, length).tril().bool()
    pick = (batch_breaks > 0) & (torch.rand(len(batch_breaks), generator=gen) < p)
    for b in pick.nonzero().flatten().tolist():
        c = int(batch_breaks[b])
        allowed[b, c + 1 :, 1:c] = False
    out = torch.zeros(len(batch_breaks), 1, length, length)
    out[~allowed.unsqueeze(1)] = torch.finfo(out.dtype).min
    return out


def train_model(
    world,
    tokenizer,
    steps: int,
    seed: int,
    weight_decay: float = 0.1,
    log=print,
    line_break_only: float = LINE_BREAK_ONLY,
):
    model = make_model(len(tokenizer), seed)
    data = encode(tokenizer, world["train"], 20)
    breaks = line_breaks(tokenizer, data)
    # each task gets its share of every batch, whatever its number of sentences
    weights = torch.cat(
        [
            torch.full((len(world["tasks"][t]),), w / len(world["tasks"][t]))
            for t, w in TASK_WEIGHTS.items()
        ]
    )
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(
        model.parameters(), lr=3e-3, weight_decay=weight_decay, betas=(0.9, 0.98)
    )
    warmup = min(200, steps // 5)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: (
            min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))
        ),
    )
    best, best_score, history = None, -1.0, []
    pad = tokenizer.pad_token_id
    model.train()
    t0 = time.time()
    for step in range(1, steps + 1):
        rows = torch.multinomial(weights, 128, replacement=True, generator=gen)
        batch = data[rows]
        labels = batch.clone()
        labels[labels == pad] = -100
        mask = couplet_mask(breaks[rows], batch.shape[1], line_break_only, gen)
        loss = model(batch, attention_mask=mask, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 100 == 0 or step == steps:
            acc = evaluate(model, tokenizer, world, "val")
            score = sum(w * acc[k] for k, w in SCORE_WEIGHTS.items())
            history.append({"step": step, "loss": loss.item(), **acc})
            log(
                f"step {step:5d}  loss {loss.item():.3f}  "
                + "  ".join(f"{k} {v:.2f}" for k, v in acc.items())
                + f"  ({time.time() - t0:.0f} s)"
            )
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
        mask_now[0] = mask[s : s + 256]
        model(data[s : s + 256])
    for h in hooks:
        h.remove()
    return [torch.cat(ins[l]) for l in range(len(ins))], [
        torch.cat(outs[l]) for l in range(len(outs))
    ]


def train_transcoder(
    x: torch.Tensor, y: torch.Tensor, d_features: int, k: int, steps: int, seed: int
):
    """A TopK transcoder x → y (decoder rows kept at unit norm)."""
    gen = torch.Generator().manual_seed(seed)
    d = x.shape[1]
    W_enc = torch.nn.Parameter(torch.randn(d, d_features, generator=gen) / d**0.5)
    W_dec = torch.nn.Parameter(
        W_enc.detach().T.clone() / W_enc.detach().T.norm(dim=1, keepdim=True)
    )
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
        stats = {
            "fraction_variance_explained": float(fve),
            "mean_active": float((acts > 0).sum(-1).float().mean()),
            "dead_features": int(((acts > 0).sum(0) == 0).sum()),
        }
    return tc, stats


# -- labels ------------------------------------------------------------------------------
@torch.no_grad()
def _content_words(tokenizer, data: torch.Tensor, mask: torch.Tensor) -> list[str]:
    """For every non-pad token of the corpus, the word a label should name: the token itself, or,
    where it is a frame word (in 3% or more of the sentences: "is", "the", ",", "order" …), the
    closest content word before it in its sentence ("dallas" for the "is" that ends
    "… containing dallas is")."""
    n = len(data)
    counts = torch.zeros(len(tokenizer), dtype=torch.long)
    for row, m in zip(data, mask):
        counts[row[m].unique()] += 1
    frame = counts >= 0.03 * n
    out = []
    for row, m in zip(data, mask):
        last = None
        for t in row[m].tolist():
            word = tokenizer.decode([t])
            if not frame[t]:
                last = word
            out.append(word if not frame[t] or last is None else f"{last}…{word}")
    return out


def label_features(model, tokenizer, transcoders, sentences: list[str], n_contexts: int = 5):
    """Per feature: a label from its top-activating tokens (a frame word shown with the content word
    before it, "dallas…is") and its top output tokens, and its top contexts."""
    data = encode(tokenizer, sentences, 20)
    mask = data != tokenizer.pad_token_id
    xs, _ = mlp_pairs(model, tokenizer, sentences)
    rows, cols = mask.nonzero(as_tuple=True)
    content = _content_words(tokenizer, data, mask)
    W_U = model.lm_head.weight
    labels, contexts = {}, {}
    for l, tc in enumerate(transcoders):
        acts = tc.encode(xs[l])  # [N, F]
        out_tokens = (tc.W_dec @ W_U.T).topk(3, dim=-1).indices  # [F, 3]
        top = acts.topk(min(40, len(acts)), dim=0)
        for f in range(tc.d_features):
            vals, idx = top.values[:, f], top.indices[:, f]
            idx = idx[vals > 0]
            if len(idx) == 0:
                continue
            words = [content[int(i)] for i in idx]
            common = sorted(set(words), key=lambda w: (-words.count(w), words.index(w)))[:3]
            outs = [tokenizer.decode([int(t)]) for t in out_tokens[f]]
            labels[f"{l}:{f}"] = f"{'/'.join(common)} → {'/'.join(outs)}"
            ctx, seen = [], set()
            for i in idx.tolist():
                r, c = int(rows[i]), int(cols[i])
                words_r = [tokenizer.decode([int(t)]) for t in data[r, min(1, c) : c + 1]]
                text = " ".join(words_r[:-1] + [f"[{words_r[-1]}]"])
                if text not in seen:
                    seen.add(text)
                    ctx.append([text, round(float(acts[i, f]), 3)])
                if len(ctx) == n_contexts:
                    break
            contexts[f"{l}:{f}"] = ctx
    return labels, contexts


def write_labels(out: str, world: dict, model=None, tokenizer=None, tcs=None) -> dict:
    """Write ``features.json``: context labels and contexts, and each feature's best latent value
    measured on the training items' probes (:func:`attribution_nb.latent_labels`). Returns the
    best feature's F1 for every latent value (what the README reports)."""
    if model is None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model = AutoModelForCausalLM.from_pretrained(out).eval()
        tokenizer = AutoTokenizer.from_pretrained(out)
        tcs = list(TranscoderSet.load(os.path.join(out, "transcoders")))
    labels, contexts = label_features(model, tokenizer, tcs, world["train"])
    rm = load_pretrained(out, os.path.join(out, "transcoders"), name="demo")
    table = latent_labels(rm, probes(world["split"], "train"))
    best = best_latents(table)
    latents = {
        f"{r.layer}:{r.feature}": [
            r.latent,
            r.value,
            round(r.precision, 4),
            round(r.recall, 4),
            round(r.f1, 4),
            round(r.mi_bits, 4),
        ]
        for r in best.itertuples()
    }
    per_value = best_per_value(table)
    report = {
        f"{r.latent}={r.value}": [f"{r.layer}:{r.feature}", round(r.f1, 4)]
        for r in per_value.itertuples()
    }
    with open(os.path.join(out, "features.json"), "w") as f:
        json.dump(
            {"labels": labels, "contexts": contexts, "latents": latents}, f, ensure_ascii=False
        )
    return report


def _parser() -> argparse.ArgumentParser:
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser(description="Train the embedded demo model and its transcoders.")
    ap.add_argument("--out", default=os.path.join(here, "demo_model"))
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--tc-steps", type=int, default=3000)
    ap.add_argument("--features", type=int, default=1024)
    ap.add_argument("--k", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--model-seed",
        type=int,
        default=SHIPPED_MODEL_SEED,
        help="seed of the model's initialisation and batches (default %(default)s: the shipped "
        "run); the world and its held-out splits stay those of --seed",
    )
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument(
        "--line-break-only",
        type=float,
        default=LINE_BREAK_ONLY,
        help="share of training couplets whose line 2 sees line 1 only through the line break",
    )
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument(
        "--relabel",
        action="store_true",
        help="only label the features of the model already in --out again (features.json)",
    )
    return ap


def _relabel(args) -> dict:
    """Label the features of the model already in ``args.out`` again (its world.json kept)."""
    report_path = os.path.join(args.out, "world.json")
    with open(report_path, encoding="utf-8") as f:
        report = json.load(f)
    report["latents"] = write_labels(args.out, build_world(report["seed"]))
    with open(report_path, "w", encoding="utf-8") as f:
        json.dump(report, f, ensure_ascii=False, indent=1)
    return report


def _transcoders(model, tokenizer, world, args) -> tuple[list, list]:
    """One transcoder per layer, trained on the model's MLP inputs and outputs over the corpus."""
    xs, ys = mlp_pairs(model, tokenizer, world["train"])
    tcs, tc_stats = [], []
    for l in range(len(xs)):
        tc, stats = train_transcoder(
            xs[l], ys[l], args.features, args.k, args.tc_steps, args.seed + l
        )
        tcs.append(tc)
        tc_stats.append(stats)
        print(
            f"transcoder {l}: "
            + ", ".join(
                f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in stats.items()
            )
        )
    return tcs, tc_stats


def main(argv=None) -> dict:
    args = _parser().parse_args(argv)
    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.relabel:
        return _relabel(args)
    t0 = time.time()
    world = build_world(args.seed)
    tokenizer = word_tokenizer(vocabulary(world))
    print(
        f"corpus: {len(world['train'])} training sentences, vocabulary {len(tokenizer)}; held out: "
        + ", ".join(f"{k} {len(v)}" for k, v in world["heldout"].items())
    )
    model, history = train_model(
        world,
        tokenizer,
        args.steps,
        args.model_seed,
        args.weight_decay,
        line_break_only=args.line_break_only,
    )
    accuracy = {
        "val": evaluate(model, tokenizer, world, "val"),
        "test": evaluate(model, tokenizer, world, "test"),
        "all": evaluate(model, tokenizer, world),
    }
    print("model (checkpoint chosen on val):", accuracy)

    os.makedirs(args.out, exist_ok=True)
    model.save_pretrained(args.out)
    tokenizer.save_pretrained(args.out)
    tcs, tc_stats = _transcoders(model, tokenizer, world, args)
    TranscoderSet(tcs).save(os.path.join(args.out, "transcoders"))
    latent_report = write_labels(args.out, world, model, tokenizer, tcs)
    report = {
        "seed": args.seed,
        "model_seed": args.model_seed,
        "steps": args.steps,
        "line_break_only": args.line_break_only,
        "accuracy": accuracy,
        "transcoders": tc_stats,
        "history": history,
        "heldout": world["heldout"],
        "split": world["split"],
        "n_train": len(world["train"]),
        "latents": latent_report,
        "seconds": time.time() - t0,
    }
    with open(os.path.join(args.out, "world.json"), "w") as f:
        json.dump(report, f, ensure_ascii=False, indent=1)
    print(f"wrote {args.out} in {time.time() - t0:.0f} s")
    return report


if __name__ == "__main__":
    main()
