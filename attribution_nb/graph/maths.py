"""Graph maths as pure functions: numpy (and scipy sparse) in, numpy out.

The adjacency ``A`` is a scipy CSR array with ``A[target, source]`` = the direct effect of the
source on the target; every function works on it block by block, so memory grows with the
number of edges, never with the square of the number of nodes:

* ``normalize_rows``: |A| with each row summing to one (a node's input shares);
* ``InfluenceWalk`` / ``compute_influence``: ``w·(Â + Â² + …)`` for the logit-probability vector ``w``, i.e.
  how much each node matters to the logits through every path (``Â`` is nilpotent: the
  graph is acyclic, so the series ends after at most n_layers + 2 terms);
* ``prune_masks``: the fewest nodes holding ``node_threshold`` of the influence, then the
  fewest edges holding ``edge_threshold`` of the influence-weighted edge mass, then drop
  features left without an incoming or an outgoing edge; tokens and logits always stay;
* ``replacement_score`` and ``completeness_score``.

Dense inputs (numpy arrays, or anything with ``.detach()`` such as a torch tensor) are accepted
and converted once.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ..checks import as_float


def _as_numpy(x) -> np.ndarray:
    """``x`` (numpy, a list, or a torch tensor) as a float64 numpy array."""
    return np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x, dtype=np.float64)


def as_csr(adjacency, square: bool = True) -> sp.csr_array:
    """``adjacency`` (scipy sparse, torch or numpy, square) as a canonical CSR array of
    float32 or float64 with explicit zeros removed.  A CSR input is shared, not copied."""
    if sp.issparse(adjacency):
        m = adjacency if isinstance(adjacency, sp.csr_array) else sp.csr_array(adjacency)
    else:
        dense = (
            adjacency.detach().cpu().numpy()
            if hasattr(adjacency, "detach")
            else np.asarray(adjacency)
        )
        m = sp.csr_array(dense)
    if m.ndim != 2 or (square and m.shape[0] != m.shape[1]):
        raise ValueError(f"an adjacency must be square, got shape {m.shape}")
    if m.dtype not in (np.float32, np.float64):
        m = m.astype(np.float32)
    if not m.has_canonical_format:
        m.sum_duplicates()
    if m.nnz and not m.data.all():
        m.eliminate_zeros()
    return m


def _work_dtype(m: sp.csr_array):
    """float64 for per-edge arithmetic, unless the graph is so large that float32 halves its memory."""
    return np.float64 if m.dtype == np.float64 or m.nnz <= (1 << 25) else np.float32


def entry_rows(m: sp.csr_array, start: int = 0, stop: int | None = None) -> np.ndarray:
    """Row (target) of each stored entry of rows ``start:stop`` (default: all of them)."""
    stop = m.shape[0] if stop is None else stop
    return np.repeat(np.arange(start, stop, dtype=np.int32), np.diff(m.indptr[start : stop + 1]))


def _row_blocks(m: sp.csr_array, entries: int = 1 << 22):
    """Row ranges of about ``entries`` stored entries each, so per-entry work stays small."""
    n, start = m.shape[0], 0
    while start < n:
        stop = int(np.searchsorted(m.indptr, m.indptr[start] + entries, side="right"))
        stop = min(max(stop - 1, start + 1), n)
        yield start, stop, int(m.indptr[start]), int(m.indptr[stop])
        start = stop


def normalize_rows(adjacency) -> sp.csr_array:
    """|A| with every non-empty row scaled to sum to one (sparse)."""
    m = as_csr(adjacency, square=False)
    sums = _abs_row_sums(m)
    scale = np.divide(1.0, sums, out=np.zeros_like(sums), where=sums > 0)
    return sp.csr_array(
        (np.abs(m.data) * np.repeat(scale.astype(m.dtype), np.diff(m.indptr)), m.indices, m.indptr),
        shape=m.shape,
    )


def _row_sums(m: sp.csr_array, values) -> np.ndarray:
    """Per-row float64 sums of ``values(a, b)``, the values of stored entries ``a:b``."""
    sums = np.zeros(m.shape[0])
    for start, stop, a, b in _row_blocks(m):
        starts = m.indptr[start:stop]
        nonempty = np.diff(m.indptr[start : stop + 1]) > 0
        if a < b:
            sums[start:stop][nonempty] = np.add.reduceat(
                values(a, b).astype(np.float64), starts[nonempty] - a
            )
    return sums


def _abs_row_sums(m: sp.csr_array) -> np.ndarray:
    """Row sums of |A| in float64."""
    return _row_sums(m, lambda a, b: np.abs(m.data[a:b]))


def _check_finite(m: sp.csr_array, w: np.ndarray) -> None:
    """Refuse NaN or infinite weights at once, naming the first bad entry (else they look like a cycle)."""
    if not np.isfinite(w).all():
        raise ValueError(
            f"logit weights are not finite (index {int(np.flatnonzero(~np.isfinite(w))[0])})"
        )
    bad = np.flatnonzero(~np.isfinite(m.data))
    if len(bad):
        row = int(np.searchsorted(m.indptr, bad[0], side="right") - 1)
        raise ValueError(
            f"the adjacency has {len(bad)} non-finite edge weight(s), the first {m.data[bad[0]]} "
            f"at [target {row}, source {int(m.indices[bad[0]])}]"
        )


class InfluenceWalk:
    """The influence walk, one implementation: each row (a target) passes the mass it holds to
    its sources in proportion to |edge|, i.e. ``x ↦ Âᵀ·x`` with ``Â = normalize_rows(A)``,
    computed as ``|A|ᵀ·(x / Σ|row|)`` without forming ``Â``.

    Used whole (:func:`compute_influence`: the series ``w·(Â + Â² + …)``), one layer at a time
    (:meth:`layered`: every edge runs to a lower layer, so one pass suffices), row by row as rows
    arrive (the adaptive sweep's :meth:`step` on the rows just computed) and on a partial graph
    (the greedy schedule).  ``adjacency`` may have more columns than rows (rows are targets,
    columns sources); the row sums are float64, the products run in ``dtype`` (default: float64
    unless the graph is so large that float32 halves its memory) and return float64."""

    def __init__(self, adjacency, dtype=None):
        m = as_csr(adjacency, square=False)
        self.shape = m.shape
        self.dtype = _work_dtype(m) if dtype is None else dtype
        self.abs = sp.csr_array(
            (np.abs(m.data).astype(self.dtype, copy=False), m.indices, m.indptr), shape=m.shape
        )
        sums = _abs_row_sums(m)
        self.inv = np.divide(1.0, sums, out=np.zeros_like(sums), where=sums > 0)

    def step(self, mass: np.ndarray, rows=None) -> np.ndarray:
        """What ``rows`` (default: all), holding ``mass``, pass to their sources (per column)."""
        if rows is None:
            m, inv = self.abs, self.inv
        else:
            m, inv = self.abs[rows], self.inv[rows]
        return np.asarray(m.T @ (mass * inv).astype(self.dtype), dtype=np.float64)

    def total(self, w: np.ndarray, max_iter: int | None = None) -> np.ndarray:
        """``w·(Â + Â² + …)`` over a square graph; a cycle (no convergence) is refused."""
        x = np.asarray(w, dtype=np.float64)
        total = np.zeros_like(x)
        for _ in range(max_iter or self.shape[0] + 1):
            x = self.step(x)
            if not x.any():
                return total
            total += x
        raise ValueError(
            "the adjacency has a cycle: influence does not converge (an attribution graph is acyclic)"
        )

    def layered(self, w: np.ndarray, row_layer: np.ndarray) -> np.ndarray:
        """:meth:`total` in one pass, for a graph whose every edge goes to a lower layer: rows
        taken top layer first have their final mass when their turn comes (``row_layer``: each
        node's layer, −1 for tokens)."""
        infl = np.zeros(self.shape[1])
        received = np.asarray(w, dtype=np.float64).copy()
        order = np.argsort(-row_layer, kind="stable")
        bounds = np.flatnonzero(np.diff(row_layer[order])) + 1
        for block in np.split(order, bounds):
            if not received[block].any():
                continue
            contrib = self.step(received[block], block)
            infl += contrib
            received += contrib
        return infl


def compute_influence(adjacency, logit_weights, max_iter: int | None = None) -> np.ndarray:
    """Influence of every node on the logits: ``w·(Â + Â² + …)`` with ``Â = normalize_rows(A)``
    (:class:`InfluenceWalk`)."""
    m = as_csr(adjacency)
    w = _as_numpy(logit_weights)
    if w.shape != (m.shape[0],):
        raise ValueError(f"logit_weights has shape {w.shape}, expected ({m.shape[0]},)")
    _check_finite(m, w)
    return InfluenceWalk(m).total(w, max_iter)


def _check_threshold(name: str, value: float) -> float:
    return as_float(name, value, 0.0, 1.0)


#: up to this many scores, ``_fewest_holding`` sorts them all (above it: binned search)
SORT_BELOW = 1 << 20


def _fewest_holding(
    scores: np.ndarray, threshold: float, sort_below: int | None = None
) -> np.ndarray:
    """Mask of the fewest entries (largest first, earlier index first among equals) whose
    sum holds ``threshold`` of the total.  ``scores`` must be non-negative.

    Up to ``sort_below`` entries this sorts them all.  Above that it never sorts: scores
    are binned by the top 16 bits of their float32 pattern (monotone in the value, about
    1/128 of an octave per bin), the bin where the running sum crosses the target is found
    from per-bin sums, and only that bin's entries are sorted.
    """
    scores = np.asarray(scores)
    mask = np.zeros(len(scores), dtype=bool)
    if threshold == 0.0 or len(scores) == 0:
        return mask
    total = float(scores.sum(dtype=np.float64))
    if total <= 0:
        mask[:] = True
        return mask
    if threshold >= 1.0:  # all of it: every entry that holds anything
        return scores > 0
    target = threshold * total
    if len(scores) <= (SORT_BELOW if sort_below is None else sort_below):
        order = np.argsort(-scores, kind="stable")
        cum = np.cumsum(scores[order], dtype=np.float64)
        k = min(int((cum < target).sum()) + 1, len(order))
        mask[order[:k]] = True
        return mask
    bits = scores.astype(np.float32, copy=False).view(np.uint32)
    n_bins = 1 << 16
    mass, count = np.zeros(n_bins), np.zeros(n_bins, dtype=np.int64)
    step = 1 << 22
    for a in range(0, len(bits), step):
        b = (bits[a : a + step] >> 16).astype(np.int64)
        mass += np.bincount(b, weights=scores[a : a + step], minlength=n_bins)
        count += np.bincount(b, minlength=n_bins)
    above = np.cumsum(mass[::-1])[::-1]  # mass in this bin and all higher ones
    crossing = int(np.nonzero(above >= target)[0].max()) if (above >= target).any() else 0
    held = above[crossing] - mass[crossing]  # mass strictly above the crossing bin
    for a in range(0, len(bits), step):
        mask[a : a + step] = (bits[a : a + step] >> 16) > crossing
    in_bin = np.concatenate(
        [
            a + np.flatnonzero((bits[a : a + step] >> 16) == crossing)
            for a in range(0, len(bits), step)
        ]
    )
    order = in_bin[np.argsort(-scores[in_bin], kind="stable")]
    cum = held + np.cumsum(scores[order], dtype=np.float64)
    k = min(int((cum < target).sum()) + 1, len(order))
    mask[order[:k]] = True
    return mask


def edge_scores(adjacency, influence, logit_weights) -> np.ndarray:
    """Per stored edge: its share of the target's input × (target's influence + logit weight)."""
    m = as_csr(adjacency)
    w = _as_numpy(logit_weights)
    sums = _abs_row_sums(m)
    factor = np.divide(
        np.asarray(influence, dtype=np.float64) + w, sums, out=np.zeros(m.shape[0]), where=sums > 0
    )
    dtype = _work_dtype(m)
    scores = np.empty(m.nnz, dtype=dtype)
    for start, stop, a, b in _row_blocks(m):
        scores[a:b] = np.abs(m.data[a:b]).astype(dtype) * factor[entry_rows(m, start, stop)].astype(
            dtype
        )
    return scores


def mass_before(scores: np.ndarray) -> np.ndarray:
    """For each entry, the share of the total held by the entries ranked before it (largest
    first, earlier index first among equals): ``_fewest_holding(scores, t)`` keeps exactly the
    entries with ``mass_before < t`` (for 0 < t < 1 and a positive total)."""
    scores = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-scores, kind="stable")
    cum = np.cumsum(scores[order])
    total = cum[-1] if len(cum) else 0.0
    out = np.empty(len(scores))
    out[order] = np.concatenate([[-np.inf], cum[:-1] / total]) if total > 0 else -np.inf
    return out


def prune_masks(
    adjacency,
    logit_weights,
    kinds: np.ndarray,
    node_threshold: float = 0.8,
    edge_threshold: float = 0.98,
    influence=None,
) -> tuple[np.ndarray, np.ndarray]:
    """Node and edge masks of the pruned graph (see the module docstring).

    Returns ``node_mask`` (bool, one per node) and ``edge_mask`` (bool, one per stored
    entry of ``as_csr(adjacency)``, in its order).  Both shrink monotonically as either
    threshold drops, because edge scores are ranked once on the whole graph and the final
    clean-up keeps the largest set in which every feature has an incoming and an outgoing
    edge.  Memory beyond the matrix: a few bytes per edge.
    """
    node_threshold = _check_threshold("node_threshold", node_threshold)
    edge_threshold = _check_threshold("edge_threshold", edge_threshold)
    m = as_csr(adjacency)
    kinds = np.asarray(kinds)
    w = _as_numpy(logit_weights)
    if influence is None:
        influence = compute_influence(m, w)
    influence = np.asarray(influence, dtype=np.float64)
    always = np.isin(kinds, ("token", "logit"))
    node_mask = always.copy()
    node_mask[~always] = _fewest_holding(influence[~always], node_threshold)

    scores = edge_scores(m, influence, w)
    edge_mask = _fewest_holding(scores, edge_threshold)
    del scores

    return clean_up(m, edge_mask, node_mask, kinds), edge_mask


def clean_up(
    m: sp.csr_array, edge_mask: np.ndarray, node_mask: np.ndarray, kinds: np.ndarray
) -> np.ndarray:
    """Pruning's last step: the largest part of ``node_mask`` in which every feature has an
    incoming and an outgoing kept edge and every error node an outgoing one (tokens and logits
    always stay).  ``edge_mask`` (one per stored entry) is narrowed in place to the kept nodes."""
    n = m.shape[0]
    always = np.isin(kinds, ("token", "logit"))
    is_feature, is_error = kinds == "feature", kinds == "error"
    while True:
        _mask_entries(m, edge_mask, node_mask)
        has_in = _row_sums(m, lambda a, b: edge_mask[a:b]) > 0
        has_out = np.zeros(n, dtype=bool)
        for _, _, a, b in _row_blocks(m):
            has_out[m.indices[a:b][edge_mask[a:b]]] = True
        keep = always | (is_feature & has_in & has_out) | (is_error & has_out)
        new_mask = node_mask & keep
        if np.array_equal(new_mask, node_mask):
            return node_mask
        node_mask = new_mask


def _mask_entries(m: sp.csr_array, entry_mask: np.ndarray, node_mask: np.ndarray) -> None:
    """``entry_mask &= (row kept) & (column kept)``, in place, block by block."""
    for start, stop, a, b in _row_blocks(m):
        block = entry_mask[a:b]
        block &= np.repeat(node_mask[start:stop], np.diff(m.indptr[start : stop + 1]))
        block &= node_mask[m.indices[a:b]]


def restrict(m: sp.csr_array, node_mask, edge_mask=None) -> tuple[np.ndarray, sp.csr_array]:
    """The rows and columns of ``m`` in ``node_mask``, keeping only the stored entries in
    ``edge_mask`` (one per stored entry; default all): the kept node indices and the smaller
    matrix."""
    node_mask = np.asarray(node_mask, dtype=bool)
    if node_mask.shape != (m.shape[0],):
        raise ValueError(f"node_mask has shape {node_mask.shape}, expected ({m.shape[0]},)")
    keep = np.flatnonzero(node_mask)
    entries = np.ones(m.nnz, dtype=bool) if edge_mask is None else np.array(edge_mask, dtype=bool)
    if entries.shape != (m.nnz,):
        raise ValueError(
            f"edge_mask has shape {entries.shape}, expected ({m.nnz},): one per stored edge"
        )
    _mask_entries(m, entries, node_mask)
    new_col = np.full(m.shape[0], -1, dtype=np.int64)
    new_col[keep] = np.arange(len(keep))
    per_row = _row_sums(m, lambda a, b: entries[a:b]).astype(np.int64)[keep]
    indptr = np.concatenate([[0], np.cumsum(per_row)]).astype(np.int32)
    sub = sp.csr_array(
        (m.data[entries], new_col[m.indices[entries]].astype(np.int32), indptr),
        shape=(len(keep), len(keep)),
    )
    return keep, sub


def replacement_score(adjacency, logit_weights, kinds: np.ndarray, influence=None) -> float:
    """Share of the logits' influence that reaches token nodes rather than error nodes."""
    influence = (
        compute_influence(adjacency, logit_weights) if influence is None else np.asarray(influence)
    )
    kinds = np.asarray(kinds)
    tok = float(influence[kinds == "token"].sum())
    err = float(influence[kinds == "error"].sum())
    return tok / (tok + err) if tok + err > 0 else float("nan")


def completeness_score(adjacency, logit_weights, kinds: np.ndarray, influence=None) -> float:
    """Influence-weighted share of nodes' (absolute) inputs that do not come from error nodes."""
    m = as_csr(adjacency)
    kinds = np.asarray(kinds)
    incoming = _abs_row_sums(m)
    errors = np.flatnonzero(kinds == "error")
    from_errors = (
        np.asarray(abs(m[:, errors]).sum(1)).ravel().astype(np.float64)
        if len(errors)
        else np.zeros(len(incoming))
    )
    influence = compute_influence(m, logit_weights) if influence is None else np.asarray(influence)
    weight = influence + _as_numpy(logit_weights)
    has_input = incoming > 0
    if not has_input.any():
        return float("nan")
    share = 1.0 - from_errors[has_input] / incoming[has_input]
    w = weight[has_input]
    return float((w * share).sum() / w.sum()) if w.sum() > 0 else float(share.mean())
