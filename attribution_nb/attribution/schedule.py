"""The greedy order of feature rows under ``max_feature_nodes`` (with every feature kept,
:class:`~attribution_nb.attribution.adaptive.Sweep` orders them).

With ``max_feature_nodes`` below the number of active features, features are visited by
their influence on the logits estimated from the rows computed so far.  The estimate is
refreshed after every batch while few rows are known (``WARMUP_BATCHES``), then each time
the visited rows grow by ``REFRESH_GROWTH``.  Between refreshes the ranking stands, so the
rows up to the next refresh are chosen (and, remotely, computed) together.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from ..graph.maths import InfluenceWalk

#: re-estimate influences after every batch while fewer than this many batches are visited
WARMUP_BATCHES = 4
#: afterwards, re-estimate each time the number of visited features grows by this factor
REFRESH_GROWTH = 1.25


def greedy_rounds(
    store, probs: np.ndarray, n_active: int, n_keep: int, n_sources: int, batch: int
) -> Iterator[np.ndarray]:
    """Rounds of features to visit next, most influential first; the caller computes each
    round's rows (into ``store``) before asking for the next."""
    visited = np.zeros(0, dtype=np.int64)
    score, refreshed = np.zeros(0), -1
    while len(visited) < n_keep:
        warm = len(visited) < WARMUP_BATCHES * batch
        if warm or len(visited) >= REFRESH_GROWTH * refreshed:
            score = feature_influence(store, probs, visited, n_active, n_sources)
            refreshed = len(visited)
        score[visited] = -1.0
        n_round = (
            batch
            if warm
            else batch * math.ceil((REFRESH_GROWTH * refreshed - len(visited)) / batch)
        )
        chosen = np.argsort(-score, kind="stable")[: min(n_round, n_keep - len(visited))]
        yield chosen
        visited = np.concatenate([visited, chosen])


def feature_influence(
    store, probs: np.ndarray, visited: np.ndarray, n_active: int, n_sources: int
) -> np.ndarray:
    """Influence of every active feature on the logits, from the rows computed so far: the walk
    (:class:`InfluenceWalk`) on the partial graph whose rows are the logits' and the visited
    features' (in source numbering, the logits after the sources)."""
    n_l = len(probs)
    keys: list = [None] * n_sources + [("logit", i) for i in range(n_l)]
    for i in visited.tolist():
        keys[i] = i
    m = store.csr(keys, n_sources + n_l, dtype=np.float64)
    w = np.concatenate([np.zeros(n_sources), probs])
    return InfluenceWalk(m).total(w)[:n_active]
