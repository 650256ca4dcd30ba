"""Top-activating contexts: where each feature fires most in a corpus, for any model.

``feature_contexts(model, texts)`` streams the corpus through the model in batches of
equal-length windows (no padding, so every activation is exact), encodes every layer's MLP input
with its transcoder, and keeps for each feature its ``candidates`` strongest activations so far
(a running top-k per feature: memory is layers × features × candidates, whatever the corpus
size).  At the end each candidate becomes a short text — the tokens before it and the token
itself in brackets, ``"… containing dallas [is]"`` — and the first ``n_contexts`` distinct texts
are kept.  The result is what :attr:`ReplacementModel.feature_contexts` holds and the widget's
panel shows: ``{(layer, feature): [[text, activation], …]}``.
"""

from __future__ import annotations

from collections import defaultdict

import nnsight
import torch
from tqdm.auto import tqdm

from .architectures import get_module
from .checks import as_int
from .replacement import ReplacementCore
from .tracing import transcoder_reads


def feature_contexts(
    model: ReplacementCore,
    texts,
    *,
    n_contexts: int = 5,
    candidates: int = 40,
    window: int | None = None,
    before: int = 12,
    batch_size: int = 16,
    progress: bool | None = None,
) -> dict[tuple[int, int], list]:
    """Each active feature's ``n_contexts`` strongest distinct contexts in ``texts`` (strings).

    Texts longer than ``window`` tokens (default: 64, or the model's context if shorter) are cut
    into windows of that length; ``before`` tokens
    precede the marked token in a context; ``candidates`` activations per feature are kept
    while streaming (distinct contexts are chosen among them).
    """
    if n_contexts < 1 or candidates < n_contexts:
        raise ValueError(
            f"need 1 ≤ n_contexts ≤ candidates, got n_contexts={n_contexts}, candidates={candidates}"
        )
    windows = _windows(model, texts, window)
    best = _TopK(model, candidates)
    groups = defaultdict(list)
    for i, w in enumerate(windows):
        groups[len(w)].append(i)
    jobs = [
        idx[s : s + batch_size] for idx in groups.values() for s in range(0, len(idx), batch_size)
    ]
    bar = tqdm(
        jobs,
        desc="feature contexts",
        leave=False,
        disable=not (progress if progress is not None else len(jobs) > 8),
    )
    for idx in bar:
        tokens = torch.stack([windows[i] for i in idx])
        for layer, acts in enumerate(_activations(model, tokens)):
            best.add(layer, acts, torch.tensor(idx))
    return best.contexts(model.tokenizer, windows, n_contexts, before)


def _windows(model: ReplacementCore, texts, window: int | None) -> list[torch.Tensor]:
    if isinstance(texts, str):
        raise ValueError("texts must be a list of strings, not one string")
    if window is None:
        window = min(64, model.max_length or 64)
    window = as_int("window", window, minimum=1)
    if model.max_length is not None and window > model.max_length:
        raise ValueError(
            f"window is {window} tokens, longer than the model's context of {model.max_length}: "
            f"pass window={model.max_length} or less"
        )
    out = []
    for text in texts:
        if not isinstance(text, str):
            raise ValueError(f"texts must be strings, got {type(text).__name__}: {text!r}")
        if text.strip():
            ids = torch.tensor(model.tokenizer(text)["input_ids"], dtype=torch.long)
            out += [ids[s : s + window] for s in range(0, len(ids), window)]
    if not out:
        raise ValueError("texts holds no text")
    return out


@torch.no_grad()
def _activations(model: ReplacementCore, tokens: torch.Tensor) -> list[torch.Tensor]:
    """Every layer's transcoder activations [B, T, F] on a batch of equal-length windows."""
    arch, envoy = model.architecture, model.nn
    layers = get_module(envoy, arch.layers)
    with model.trace(tokens.to(model.device)):
        ins = nnsight.save([get_module(layer, arch.mlp_in).input for layer in layers])
    hf_layers = get_module(model.hf_model, arch.layers)
    return [
        model.transcoders[l]
        .encode(transcoder_reads(arch, get_module(hf_layers[l], arch.mlp_in), x))
        .float()
        .cpu()
        for l, x in enumerate(ins)
    ]


class _TopK:
    """The running ``k`` strongest (activation, window, position) of every feature of every layer."""

    def __init__(self, model: ReplacementCore, k: int):
        self.k = k
        F = [tc.d_features for tc in model.transcoders]
        self.values = [torch.zeros(f, 0) for f in F]
        self.where = [torch.zeros(f, 0, 2, dtype=torch.long) for f in F]

    def add(self, layer: int, acts: torch.Tensor, window_ids: torch.Tensor) -> None:
        B, T, F = acts.shape
        flat = acts.reshape(B * T, F).T  # [F, B·T]
        k = min(self.k, B * T)
        top = flat.topk(k, dim=1)
        where = torch.stack([window_ids[top.indices // T], top.indices % T], -1)
        values = torch.cat([self.values[layer], top.values], 1)
        places = torch.cat([self.where[layer], where], 1)
        keep = values.topk(min(self.k, values.shape[1]), dim=1)
        self.values[layer] = keep.values
        self.where[layer] = torch.gather(places, 1, keep.indices[..., None].expand(-1, -1, 2))

    def contexts(self, tokenizer, windows, n: int, before: int) -> dict[tuple[int, int], list]:
        out = {}
        for layer, (values, where) in enumerate(zip(self.values, self.where)):
            for f in torch.nonzero(values[:, 0] > 0).flatten().tolist():
                found: list[list] = []
                seen: set[str] = set()
                for value, (w, p) in zip(values[f].tolist(), where[f].tolist()):
                    if value <= 0 or len(found) == n:
                        break
                    text = _context_text(tokenizer, windows[w], p, before)
                    if text not in seen:
                        seen.add(text)
                        found.append([text, round(value, 3)])
                out[(layer, f)] = found
        return out


def _context_text(tokenizer, ids: torch.Tensor, position: int, before: int) -> str:
    """The ``before`` tokens up to ``position`` (a leading BOS left out) with the token there in brackets."""
    start = max(0, position - before)
    if start == 0 and position > 0 and ids[0].item() == getattr(tokenizer, "bos_token_id", None):
        start = 1
    prefix = tokenizer.decode(ids[start:position].tolist())
    full = tokenizer.decode(ids[start : position + 1].tolist())
    token = (
        full[len(prefix) :] if full.startswith(prefix) else tokenizer.decode([int(ids[position])])
    )
    lead = token[: len(token) - len(token.lstrip())]
    return f"{prefix}{lead}[{token.strip()}]"
