"""Attribution targets: which logits a graph explains."""

from __future__ import annotations

import torch

from ..checks import as_int


def logit_targets(model, logits: torch.Tensor, targets, max_n_logits: int, desired_logit_prob: float) -> list[int]:
    """Token ids of the logit nodes: ``targets`` (token strings or ids) when given, else the top
    logits until their cumulative probability reaches ``desired_logit_prob``, at most ``max_n_logits``."""
    if targets is not None:
        return _given_targets(model, logits.shape[-1], targets)
    if max_n_logits < 1:
        raise ValueError(f"max_n_logits must be at least 1, got {max_n_logits}")
    probs = torch.softmax(logits.double(), -1)
    top = probs.topk(min(max_n_logits, len(probs)))
    n = int((top.values.cumsum(0) < desired_logit_prob).sum()) + 1
    return top.indices[: min(n, max_n_logits)].tolist()


def _given_targets(model, vocab: int, targets) -> list[int]:
    if isinstance(targets, str) or not hasattr(targets, "__iter__"):
        targets = [targets]
    ids = []
    for t in targets:
        tid = model.token_id(t) if isinstance(t, str) else as_int("a target (a token string or id)", t)
        if not 0 <= tid < vocab:
            raise ValueError(f"target token id {tid} is outside the vocabulary [0, {vocab})")
        ids.append(tid)
    if not ids:
        raise ValueError("targets is empty; give at least one token, or None for the top logits")
    return list(dict.fromkeys(ids))
