"""Feature pages a local viewer can show: one JSON per feature, in the form circuit-tracer's
frontend reads for a scan whose name starts with ``./`` (``{scan}/{cantor(layer, feature)}.json``).

Each page holds the feature's top-activating contexts (the model's ``feature_contexts``: the
demo model's shipped ones, or those :func:`attribution_nb.feature_contexts` measured), run
through the model again so that every token of a shown context has its own activation (a
context whose text is cut inside a character, or on which the feature no longer fires at the
marked token once the text before it is cut, is left out); the
tokens its decoder promotes and suppresses most; and ``act_min`` / ``act_max`` for the colour
scale.  What is not measured (an activation histogram, quantiles, firing frequency) is left
out, and the viewer then leaves those parts out too.
"""

from __future__ import annotations

import math
from collections import defaultdict

import torch

from ..contexts import _activations
from ..tokens import piece_bytes


def cantor(x: int, y: int) -> int:
    """circuit-tracer's and Neuronpedia's one-number feature index for ``(layer, feature)``."""
    return (x + y) * (x + y + 1) // 2 + y


def cantor_unpair(z: int) -> tuple[int, int]:
    """The inverse of :func:`cantor`: ``(layer, feature)``."""
    w = (math.isqrt(8 * z + 1) - 1) // 2
    y = z - w * (w + 1) // 2
    return w - y, y


def _plain(context: str) -> str | None:
    """A context ``"… containing dallas [is]"`` as the text it marks: ``"… containing dallas is"``; None
    where the marked token is only part of a character (its text is lost), and a leading broken
    character (a window cut inside one) dropped."""
    i = context.rfind("[")
    if i < 0 or not context.endswith("]"):
        return context.lstrip("\ufffd") or None
    text = context[:i].lstrip("\ufffd") + context[i + 1 : -1]
    return text if text and "\ufffd" not in text else None


def feature_pages(graph, model, *, scan: str, n_contexts: int = 4) -> dict[int, dict]:
    """``{cantor index: page}`` for every feature of ``graph`` (see the module's docstring)."""
    feats = graph.nodes[graph.nodes.kind == "feature"]
    first = feats.drop_duplicates(["layer", "feature"])
    tokens = _token_effects(
        model, list(zip(first.layer.astype(int), first.feature.astype(int))), k=8
    )
    wanted = []  # (layer, feature, context text, token ids)
    for layer, f in zip(first.layer.astype(int), first.feature.astype(int)):
        texts = [
            t
            for t in (_plain(str(text)) for text, _ in model.feature_contexts.get((layer, f), []))
            if t
        ]
        for text in texts[:n_contexts]:
            wanted.append((layer, f, model.tokenize(text).cpu()))
    by_feature: dict[tuple[int, int], list] = defaultdict(list)
    for (lay, feat, ids), a in zip(wanted, _context_activations(model, wanted)):
        by_feature[(lay, feat)].append((ids, a))
    pages = {}
    for nid, layer, f in zip(first.node_id, first.layer.astype(int), first.feature.astype(int)):
        examples: list[dict] = []
        top = 0.0
        for ids, a in by_feature[(layer, f)]:
            if a[-1] > 0:
                strings = _pieces(model, ids.tolist())
                examples.append(
                    {
                        "tokens": strings,
                        "tokens_acts_list": [round(float(x), 4) for x in a],
                        "train_token_ind": len(strings) - 1,
                        "is_repeated_datapoint": False,
                    }
                )
                top = max(top, *a)
        promotes, suppresses = tokens[(layer, f)]
        pages[cantor(layer, f)] = {
            "transcoder_id": scan,
            "index": cantor(layer, f),
            "layer": layer,
            "feature": f,
            "label": str(graph.node(nid).label or ""),
            "latent": model.feature_latents.get((layer, f), ""),
            "examples_quantiles": [{"quantile_name": "Top activations", "examples": examples}]
            if examples
            else [],
            "top_logits": promotes,
            "bottom_logits": suppresses,
            "act_min": 0.0,
            "act_max": float(top) if top > 0 else 1.0,
        }
    return pages


def _token_effects(model, features: list[tuple[int, int]], k: int) -> dict:
    """``{(layer, feature): (promoted tokens, suppressed tokens)}`` through the demeaned unembedding."""
    by_layer: dict[int, list[int]] = defaultdict(list)
    for layer, f in features:
        by_layer[layer].append(f)
    out = {}
    for layer, fs in by_layer.items():
        _, top, _, bottom = model.token_effects(layer, fs, k)
        for r, f in enumerate(fs):
            out[(layer, f)] = (
                model.token_strings(top[r].tolist()),
                model.token_strings(bottom[r].tolist()),
            )
    return out


def _context_activations(model, wanted: list) -> list[list[float]]:
    """Each wanted context's activations of its feature at every token (contexts of one length run together)."""
    out: list = [None] * len(wanted)
    by_len: dict[int, list[int]] = defaultdict(list)
    for i, (_, _, ids) in enumerate(wanted):
        by_len[len(ids)].append(i)
    for idx in by_len.values():
        for s in range(0, len(idx), 32):
            chunk = idx[s : s + 32]
            layers = _activations(model, torch.stack([wanted[i][2] for i in chunk]))
            for row, i in enumerate(chunk):
                layer, f, _ = wanted[i]
                out[i] = layers[layer][row, :, f].tolist()
    return out


def _pieces(model, ids: list[int]) -> list[str]:
    """Each token as the text it adds to the decoded sequence (its leading space included), so the
    viewer, which sets tokens side by side, shows the text as written; a token that is only part of
    a character is written as its bytes, ``\\xe5\\xb0``, which the viewer joins back into the character."""
    readable = model.prompt_strings(ids)
    out, before = [], ""
    skip = set(getattr(model.tokenizer, "all_special_ids", []) or [])
    for i, tid in enumerate(ids):
        if tid in skip:
            out.append(readable[i])
            continue
        text = model.tokenizer.decode([t for t in ids[: i + 1] if t not in skip])
        raw = piece_bytes(model.tokenizer, tid)
        if text.startswith(before) and "\ufffd" not in text:
            out.append(text[len(before) :])
        elif raw is not None:
            out.append("".join(f"\\x{b:02x}" for b in raw))
        else:
            out.append(readable[i])
        before = text
    return out
