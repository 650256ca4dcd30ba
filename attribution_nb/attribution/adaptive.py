"""The adaptive stop: compute only the feature rows the pruned graph needs, and prove it.

**The bound.**  Influence is a walk on ``Â`` = |A| with rows normalised to sum to one
(:func:`~attribution_nb.graph.maths.compute_influence`): the logits send their weights
down, and every node passes all it receives to its sources.  Suppose the rows of a set
``U`` of features are not computed (those features stay in the graph as sources, with no
incoming edges).  Let ``e`` be the influence in that partial graph and ``x`` the influence
with every row.  Cutting each path at its first node in ``U`` gives, for every node ``j``::

    0 ≤ x_j − e_j = Σ_{u ∈ U, u ≠ j} e_u · P(u → j) ≤ δ_j := Σ_{u ∈ U above j} e_u

where ``P(u → j)`` ≤ 1 is the chance that the walk from ``u`` passes ``j`` and "above"
means a higher layer at the same or a later position (only those reach ``j``).  The walk
from ``u`` meets at most ``layer(u)`` feature or error nodes, so the total deficit is
``Σ_j (x_j − e_j) ≤ E := Σ_{u ∈ U} e_u · layer(u)``.

**The proof that the pruned graph is the same** (:func:`certify`), from ``e``, ``δ``, ``E``:

1. *Nodes.*  Pruning keeps the fewest features and errors holding ``node_threshold`` of
   the total.  The node kept under ``e`` with the smallest influence stays kept for every
   ``x`` within the bounds if the most mass that can rank above it is still short of the
   threshold; the dropped node with the largest upper bound stays dropped if the mass that
   surely ranks above it already holds the threshold.  Every feature in ``U`` must be
   surely dropped (it has no incoming edges in the partial graph).
2. *Edges.*  An edge's score is ``(x_target + w_target) × its share of the target's input``;
   the rows in ``U`` add at most ``Σ_U (e_u + δ_u)``, capped by ``S + E``, of edge mass.
   Each edge among kept nodes is surely kept, surely dropped, or undecided.
3. *Clean-up.*  Pruning then keeps the largest set in which every feature has an incoming
   and an outgoing edge.  That set only grows with the edges, so if it is the same with the
   surely kept edges as with all edges not surely dropped, it is the same in both graphs.

:func:`attribute` (``rows="adaptive"``) visits features top layer first, defers those whose
influence so far is small, and visits deferred ones, largest first, until :func:`certify`
holds; in the worst case it computes every row.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ..graph.maths import InfluenceWalk, _fewest_holding, clean_up, edge_scores


def layered_influence(m: sp.csr_array, w: np.ndarray, row_layer: np.ndarray) -> np.ndarray:
    """``compute_influence`` in one pass (:meth:`InfluenceWalk.layered`): every edge goes to a
    lower layer (``row_layer``: each node's layer, −1 for tokens)."""
    return InfluenceWalk(m).layered(w, row_layer)


@dataclass
class Certificate:
    ok: bool
    reason: str
    deficit: float  # E: the most the missing rows can add to all influences together


def certify(
    m: sp.csr_array,
    w: np.ndarray,
    kinds: np.ndarray,
    layer: np.ndarray,
    position: np.ndarray,
    unvisited: np.ndarray,
    node_threshold: float,
    edge_threshold: float,
    influence: np.ndarray | None = None,
) -> Certificate:
    """Whether pruning the partial graph ``m`` (rows of ``unvisited`` features missing) at
    these thresholds keeps the same nodes as pruning the graph with every row would (see
    the module docstring for the argument)."""
    e = layered_influence(m, w, layer) if influence is None else influence
    L = int(layer.max()) if len(layer) else 0
    U = np.flatnonzero(unvisited)
    eu = e[U]
    deficit = float((eu * layer[U]).sum())
    delta = _cone_sums(eu, layer[U], position[U], layer, position, L)
    ranked = np.isin(kinds, ("feature", "error"))
    kept = np.zeros(len(e), dtype=bool)
    kept[ranked] = _fewest_holding(e[ranked], node_threshold)
    why = _nodes_decided(e, delta, deficit, ranked, kept, node_threshold)
    if why:
        return Certificate(False, why, deficit)
    if kept[U].any():
        return Certificate(
            False, f"{int(kept[U].sum())} feature(s) without rows pass the node threshold", deficit
        )
    always = np.isin(kinds, ("token", "logit"))
    node_mask = kept | always
    missing_mass = float(eu.sum()) + min(
        deficit, float(delta[U].sum())
    )  # what U's own rows would hold
    sure, possible = _edges_decided(m, e, delta, w, missing_mass, edge_threshold)
    a, b = (
        clean_up(m, sure, node_mask.copy(), kinds),
        clean_up(m, possible, node_mask.copy(), kinds),
    )
    if not np.array_equal(a, b):
        return Certificate(
            False, f"{int((a != b).sum())} node(s) hang on edges near the edge threshold", deficit
        )
    return Certificate(True, "", deficit)


def _cone_sums(eu, lu, pu, layer, position, L) -> np.ndarray:
    """For each node: the summed influence of the unvisited features at a higher layer and
    the same or a later position (tokens at layer −1 are below everything)."""
    T = int(position.max()) + 1 if len(position) else 1
    grid = np.zeros((L + 2, T))
    np.add.at(grid, (lu + 1, pu), eu)
    # cone[l, p] = Σ over layers > l and positions ≥ p
    above = np.cumsum(grid[::-1], axis=0)[::-1]  # layers ≥ l
    above = np.vstack([above[1:], np.zeros((1, T))])  # layers > l
    cone = np.cumsum(above[:, ::-1], axis=1)[:, ::-1]  # positions ≥ p
    li = np.clip(layer + 1, 0, L + 1)
    return cone[li, np.clip(position, 0, T - 1)]


def _nodes_decided(e, delta, deficit, ranked, kept, t) -> str:
    """'' if every ranked node's keep/drop decision holds for all influences within the bounds."""
    lo, d = e[ranked], delta[ranked]
    hi = lo + d
    k = kept[ranked]
    total_lo, total_hi = lo.sum(), lo.sum() + deficit
    if k.any():
        # for each kept node: the most mass that can rank above it (nodes whose upper bound
        # reaches its lower bound), each at most its upper bound and all within the deficit
        order = np.argsort(-hi, kind="stable")
        n_above = np.searchsorted(-hi[order], -lo[k], side="right")  # #{hi ≥ lo_j}, itself included
        cum_lo = np.concatenate([[0.0], np.cumsum(lo[order])])[n_above] - lo[k]
        cum_d = np.concatenate([[0.0], np.cumsum(d[order])])[n_above] - d[k]
        most = cum_lo + np.minimum(deficit, cum_d)
        if (most >= t * total_lo).any():
            return "a node near the node threshold could be outranked"
    if (~k).any():  # the strongest dropped node: the mass that surely ranks above it
        j = np.flatnonzero(~k)[np.argmax(hi[~k])]
        if lo[lo > hi[j]].sum() < t * total_hi:
            return "a node just under the node threshold could rise above it"
    return ""


def _edges_decided(m, e, delta, w, extra_mass, t) -> tuple[np.ndarray, np.ndarray]:
    """Per stored edge of ``m``: surely kept, and possibly kept, by the edge threshold for
    every influence within the bounds (``extra_mass``: the most edge mass the rows not in
    ``m`` can hold)."""
    lo = edge_scores(m, e, w)
    hi = edge_scores(m, e + delta, w)
    total_lo, total_hi_rows = float(lo.sum(dtype=np.float64)), float(hi.sum(dtype=np.float64))
    # surely kept: the edges that might outrank it (each at its upper bound) plus the missing
    # rows' mass stay short of the threshold of the least total there can be
    room = t * total_lo - extra_mass
    if room <= 0:
        sure = np.zeros(len(lo), dtype=bool)
    elif room >= total_hi_rows:
        sure = lo > 0
    else:
        crossing = _fewest_holding(hi, room / total_hi_rows)
        sure = lo > hi[crossing].min()
    # surely dropped: the edges surely above it already hold the threshold of the most total
    need = t * (total_hi_rows + extra_mass)
    if need >= total_lo:
        possible = np.ones(len(lo), dtype=bool)
    else:
        floor = lo[_fewest_holding(lo, need / total_lo)].min()
        possible = hi >= floor
    return sure, possible


#: a (bucket, layer) group may defer features whose summed ``influence × layer`` stays under
#: this share of the current node-threshold influence, split over the groups
DEFER_SHARE = 0.25


class Sweep:
    """Feature rows for the whole graph, longest prefix bucket first, then top layer first
    (so each feature's influence so far is final for the rows visited when its turn comes).

    With ``adaptive``, features with no influence so far are deferred, and so are the
    weakest while their summed ``influence × layer`` fits a small budget; :meth:`finish`
    visits deferred ones until :func:`certify` holds.  ``compute(indices)`` computes the rows
    of those active features into ``store``.
    """

    def __init__(
        self,
        store,
        compute,
        active,
        engine,
        goals_w: np.ndarray,
        goal_pos: np.ndarray,
        adaptive: bool,
        thresholds: tuple[float, float],
    ):
        self.store, self.compute, self.engine = store, compute, engine
        self.adaptive, self.thresholds = adaptive, thresholds
        self.n_active, self.n_logits = len(active), len(goals_w)
        L = engine.L
        self.w = np.concatenate([np.zeros(engine.n_sources), goals_w])
        self.layer = np.concatenate([engine.src_layer.numpy(), np.full(self.n_logits, L)])
        self.position = np.concatenate([engine.src_pos.numpy(), goal_pos])
        self.kinds = engine.layout.kinds(self.n_logits)
        self.ranked = np.flatnonzero(np.isin(self.kinds, ("feature", "error")))
        self.received = np.zeros(len(self.w))
        self.visited = np.zeros(self.n_active, dtype=bool)
        self.certificate: Certificate | None = None
        self._spread([("logit", i) for i in range(self.n_logits)], goals_w)

    def _spread(self, keys, mass: np.ndarray) -> None:
        """Pass the mass of these (just computed) rows to their sources."""
        m = self.store.csr(keys, len(self.w), dtype=np.float64)
        self.received += InfluenceWalk(m).step(mass)

    def run(self) -> None:
        eng = self.engine
        layer, pos = self.layer[: self.n_active], self.position[: self.n_active]
        bucket = eng.bucket(pos)  # the prefix length each row runs on
        groups = sorted(
            {(int(b), int(la)) for b, la in zip(bucket, layer)}, key=lambda g: (-g[0], -g[1])
        )
        members = [np.flatnonzero((bucket == b) & (layer == la)) for b, la in groups]
        if not self.adaptive:  # every row, in one call (one request for a remote model)
            every = np.concatenate(members) if members else np.zeros(0, dtype=np.int64)
            self.compute(every)
            self.visited[every] = True
            return
        self.budget_max = self._budget(len(groups))
        computed = np.zeros(self.n_active, dtype=bool)
        for g, ((b, la), idx) in enumerate(zip(groups, members)):
            take = self._choose(idx, la, len(groups))
            todo = take[~computed[take]]
            if len(todo):
                # fill the last backward pass with rows of this bucket's lower layers that no
                # budget can defer (influence only grows as rows are added)
                room = -len(todo) % eng.batch_for(b)
                later = [m for (b2, _), m in zip(groups[g + 1 :], members[g + 1 :]) if b2 == b]
                pool = np.concatenate(later) if later and room else np.zeros(0, dtype=np.int64)
                sure = pool[~computed[pool] & (self.received[pool] * layer[pool] > self.budget_max)]
                todo = np.concatenate([todo, sure[:room]])
                self.compute(todo)
                computed[todo] = True
            self.visited[take] = True
            self._spread(take.tolist(), self.received[take])

    def _budget(self, n_groups: int) -> float:
        """What one group may defer: a share of the node threshold's influence so far."""
        r = self.received[self.ranked]
        kept = _fewest_holding(r, self.thresholds[0])
        return DEFER_SHARE * (r[kept].min() if kept.any() else 0.0) / n_groups

    def _choose(self, idx: np.ndarray, layer: int, n_groups: int) -> np.ndarray:
        """The features of one group to visit now (the rest are deferred)."""
        e = self.received[idx]
        budget = min(self._budget(n_groups), self.budget_max)
        order = np.argsort(e, kind="stable")
        cost = np.cumsum(e[order] * layer)
        defer = (e[order] == 0) | (cost <= budget)
        return np.sort(idx[order[~defer]])

    def finish(self) -> None:
        """Visit deferred features until the certificate holds."""
        e = self.received  # after the sweep, the influence in the partial graph (see run)
        while True:
            unvisited = np.zeros(len(self.w), dtype=bool)
            unvisited[: self.n_active] = ~self.visited
            if not e[unvisited].any():
                self.certificate = Certificate(
                    True, "exact: every feature without a row has no influence", 0.0
                )
                return
            m = self.matrix()
            e = layered_influence(m, self.w, self.layer)
            self.certificate = certify(
                m,
                self.w,
                self.kinds,
                self.layer,
                self.position,
                unvisited,
                *self.thresholds,
                influence=e,
            )
            if self.certificate.ok:
                return
            more = np.flatnonzero(unvisited[: self.n_active] & (e[: self.n_active] > 0))
            self.compute(more)
            self.visited[more] = True
            e = layered_influence(self.matrix(), self.w, self.layer)

    def matrix(self) -> sp.csr_array:
        """|A| of the rows so far, in source numbering with the targets after them (the
        certificate reads magnitudes only), float32 as the graph's edges are: edge scores
        then work in float32 as ``prune`` does on the graph, at half the memory (80 M edges
        at 64 tokens: the certificate held 2.7 GB above the sweep in float64)."""
        keys: list = [i if v else None for i, v in enumerate(self.visited.tolist())]
        keys += [None] * (len(self.w) - self.n_active - self.n_logits) + [
            ("logit", i) for i in range(self.n_logits)
        ]
        m = self.store.csr(keys, len(self.w), dtype=np.float32)
        np.abs(m.data, out=m.data)
        return m
