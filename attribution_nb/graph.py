"""Attribution graphs as data: tidy tables, influence, pruning and scores.

An ``AttributionGraph`` keeps its nodes in one order (features, error nodes, token nodes,
logit nodes) and a sparse adjacency ``A`` (scipy CSR) with ``A[target, source]`` = the
direct effect of the source on the target; its memory grows with the number of edges,
never with the square of the number of nodes.  The maths lives in pure functions that
take the sparse matrix (or a dense tensor) and work on it block by block:

* ``normalize_rows``: |A| with each row summing to one (a node's input shares);
* ``compute_influence``: ``w·(Â + Â² + …)`` for the logit-probability vector ``w``, i.e.
  how much each node matters to the logits through every path (``Â`` is nilpotent: the
  graph is acyclic, so the series ends after at most n_layers + 2 terms);
* ``prune_masks``: the fewest nodes holding ``node_threshold`` of the influence, then the
  fewest edges holding ``edge_threshold`` of the influence-weighted edge mass, then drop
  features left without an incoming or an outgoing edge; tokens and logits always stay;
* ``replacement_score`` and ``completeness_score``.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from safetensors.torch import save_file

from .transcoders import read_safetensors_numpy

KINDS = ("feature", "error", "token", "logit")
FORMAT = "attribution_nb.graph"
FORMAT_VERSION = 2


# -- pure functions -------------------------------------------------------------------
def as_csr(adjacency, square: bool = True) -> sp.csr_array:
    """``adjacency`` (scipy sparse, torch or numpy, square) as a canonical CSR array of
    float32 or float64 with explicit zeros removed.  A CSR input is shared, not copied."""
    if sp.issparse(adjacency):
        m = adjacency if isinstance(adjacency, sp.csr_array) else sp.csr_array(adjacency)
    else:
        dense = adjacency.detach().cpu().numpy() if isinstance(adjacency, torch.Tensor) else np.asarray(adjacency)
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
    return np.repeat(np.arange(start, stop, dtype=np.int32), np.diff(m.indptr[start:stop + 1]))


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
    return sp.csr_array((np.abs(m.data) * np.repeat(scale.astype(m.dtype), np.diff(m.indptr)), m.indices, m.indptr),
                        shape=m.shape)


def _row_sums(m: sp.csr_array, values) -> np.ndarray:
    """Per-row float64 sums of ``values(a, b)``, the values of stored entries ``a:b``."""
    sums = np.zeros(m.shape[0])
    for start, stop, a, b in _row_blocks(m):
        starts = m.indptr[start:stop]
        nonempty = np.diff(m.indptr[start:stop + 1]) > 0
        if a < b:
            sums[start:stop][nonempty] = np.add.reduceat(values(a, b).astype(np.float64), starts[nonempty] - a)
    return sums


def _abs_row_sums(m: sp.csr_array) -> np.ndarray:
    """Row sums of |A| in float64."""
    return _row_sums(m, lambda a, b: np.abs(m.data[a:b]))


def compute_influence(adjacency, logit_weights, max_iter: int | None = None) -> torch.Tensor:
    """Influence of every node on the logits: ``w·(Â + Â² + …)`` with ``Â = normalize_rows(A)``.

    Works on the sparse matrix without forming ``Â``: ``x·Â = (x / rowsums)·|A|``.
    Each step is one sparse product in the matrix's dtype; the sum is kept in float64.
    """
    m = as_csr(adjacency)
    w = np.asarray(logit_weights.detach().cpu() if isinstance(logit_weights, torch.Tensor) else logit_weights,
                   dtype=np.float64)
    if w.shape != (m.shape[0],):
        raise ValueError(f"logit_weights has shape {w.shape}, expected ({m.shape[0]},)")
    dtype = _work_dtype(m)
    abs_t = sp.csr_array((np.abs(m.data).astype(dtype, copy=False), m.indices, m.indptr), shape=m.shape).T
    sums = _abs_row_sums(m)
    inv = np.divide(1.0, sums, out=np.zeros_like(sums), where=sums > 0)
    x = w
    total = np.zeros_like(w)
    for _ in range(max_iter or m.shape[0] + 1):
        x = np.asarray(abs_t @ (x * inv).astype(dtype), dtype=np.float64)
        if not x.any():
            return torch.from_numpy(total)
        total += x
    raise ValueError("the adjacency has a cycle: influence does not converge (an attribution graph is acyclic)")


def _check_threshold(name: str, value: float) -> float:
    if not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    return float(value)


#: up to this many scores, ``_fewest_holding`` sorts them all (above it: binned search)
SORT_BELOW = 1 << 20


def _fewest_holding(scores: np.ndarray, threshold: float, sort_below: int | None = None) -> np.ndarray:
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
    if threshold >= 1.0:            # all of it: every entry that holds anything
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
        b = (bits[a:a + step] >> 16).astype(np.int64)
        mass += np.bincount(b, weights=scores[a:a + step], minlength=n_bins)
        count += np.bincount(b, minlength=n_bins)
    above = np.cumsum(mass[::-1])[::-1]            # mass in this bin and all higher ones
    crossing = int(np.nonzero(above >= target)[0].max()) if (above >= target).any() else 0
    held = above[crossing] - mass[crossing]        # mass strictly above the crossing bin
    for a in range(0, len(bits), step):
        mask[a:a + step] = (bits[a:a + step] >> 16) > crossing
    in_bin = np.concatenate([a + np.flatnonzero((bits[a:a + step] >> 16) == crossing)
                             for a in range(0, len(bits), step)])
    order = in_bin[np.argsort(-scores[in_bin], kind="stable")]
    cum = held + np.cumsum(scores[order], dtype=np.float64)
    k = min(int((cum < target).sum()) + 1, len(order))
    mask[order[:k]] = True
    return mask


def edge_scores(adjacency, influence, logit_weights) -> np.ndarray:
    """Per stored edge: its share of the target's input × (target's influence + logit weight)."""
    m = as_csr(adjacency)
    w = np.asarray(logit_weights, dtype=np.float64)
    sums = _abs_row_sums(m)
    factor = np.divide(np.asarray(influence, dtype=np.float64) + w, sums, out=np.zeros(m.shape[0]), where=sums > 0)
    dtype = _work_dtype(m)
    scores = np.empty(m.nnz, dtype=dtype)
    for start, stop, a, b in _row_blocks(m):
        scores[a:b] = np.abs(m.data[a:b]).astype(dtype) * factor[entry_rows(m, start, stop)].astype(dtype)
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


def prune_masks(adjacency, logit_weights, kinds: np.ndarray, node_threshold: float = 0.8,
                edge_threshold: float = 0.98, influence=None) -> tuple[torch.Tensor, torch.Tensor]:
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
    n = m.shape[0]
    kinds = np.asarray(kinds)
    w = np.asarray(logit_weights, dtype=np.float64)
    if influence is None:
        influence = compute_influence(m, w)
    influence = np.asarray(influence, dtype=np.float64)
    always = np.isin(kinds, ("token", "logit"))
    node_mask = always.copy()
    node_mask[~always] = _fewest_holding(influence[~always], node_threshold)

    scores = edge_scores(m, influence, w)
    edge_mask = _fewest_holding(scores, edge_threshold)
    del scores

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
            return torch.from_numpy(node_mask), torch.from_numpy(edge_mask)
        node_mask = new_mask


def _mask_entries(m: sp.csr_array, entry_mask: np.ndarray, node_mask: np.ndarray) -> None:
    """``entry_mask &= (row kept) & (column kept)``, in place, block by block."""
    for start, stop, a, b in _row_blocks(m):
        block = entry_mask[a:b]
        block &= np.repeat(node_mask[start:stop], np.diff(m.indptr[start:stop + 1]))
        block &= node_mask[m.indices[a:b]]


def replacement_score(adjacency, logit_weights, kinds: np.ndarray, influence=None) -> float:
    """Share of the logits' influence that reaches token nodes rather than error nodes."""
    influence = compute_influence(adjacency, logit_weights).numpy() if influence is None else np.asarray(influence)
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
    from_errors = np.asarray(abs(m[:, errors]).sum(1)).ravel().astype(np.float64) if len(errors) else np.zeros(len(incoming))
    influence = compute_influence(m, logit_weights).numpy() if influence is None else np.asarray(influence)
    weight = influence + np.asarray(logit_weights, dtype=np.float64)
    has_input = incoming > 0
    if not has_input.any():
        return float("nan")
    share = 1.0 - from_errors[has_input] / incoming[has_input]
    w = weight[has_input]
    return float((w * share).sum() / w.sum()) if w.sum() > 0 else float(share.mean())


# -- the graph --------------------------------------------------------------------------
NODE_COLUMNS = ["node_id", "kind", "layer", "position", "token", "feature", "activation", "influence", "label"]
LOGIT_COLUMNS = ["token", "token_id", "probability", "logit"]


class AttributionGraph:
    """An attribution graph for one prompt: ``nodes``, ``edges`` and ``logits`` tables.

    Build one with :func:`attribution_nb.attribute`; load one with :meth:`load`.
    ``sparse_adjacency`` (a scipy CSR array) holds the direct effect of node ``j`` on node
    ``i`` at ``[i, j]`` (rows: targets); memory grows with the number of edges.
    ``adjacency`` is the same as a dense torch tensor, for small graphs.
    """

    #: ``adjacency`` refuses to build a dense matrix larger than this (bytes)
    max_dense_bytes = 1 << 30

    def __init__(self, *, prompt: str, tokens: list[str], token_ids: list[int], nodes: pd.DataFrame,
                 adjacency: torch.Tensor, logits: pd.DataFrame, n_layers: int, model_name: str = "",
                 info: dict | None = None, supernodes: dict | None = None):
        if list(nodes.columns[: len(NODE_COLUMNS)]) != NODE_COLUMNS:
            raise ValueError(f"nodes must have columns {NODE_COLUMNS}, got {list(nodes.columns)}")
        n = len(nodes)
        if tuple(adjacency.shape) != (n, n):
            raise ValueError(f"adjacency has shape {tuple(adjacency.shape)}, expected ({n}, {n}) for {n} nodes")
        self.sparse_adjacency = as_csr(adjacency)
        self.prompt = prompt
        self.tokens = list(tokens)
        self.token_ids = [int(t) for t in token_ids]
        self.nodes = nodes.reset_index(drop=True)
        self.logits = logits.reset_index(drop=True)
        self.n_layers = int(n_layers)
        self.model_name = model_name
        self.info = dict(info or {})
        self.supernodes = dict(supernodes or {})
        self._index = {nid: i for i, nid in enumerate(self.nodes["node_id"])}
        self._edges = None
        self._influence = None

    # -- lookups -----------------------------------------------------------------
    def __repr__(self) -> str:
        counts = self.nodes["kind"].value_counts()
        parts = ", ".join(f"{counts.get(k, 0)} {k}s" for k in KINDS)
        return (f"AttributionGraph({self.prompt!r}: {parts}, {self.n_edges} edges; "
                f"top prediction {self.logits['token'].iloc[0]!r})")

    @property
    def n_edges(self) -> int:
        return int(self.sparse_adjacency.nnz)

    @property
    def adjacency(self) -> torch.Tensor:
        """The adjacency as a dense ``[target, source]`` torch tensor (small graphs only)."""
        n = self.sparse_adjacency.shape[0]
        size = n * n * self.sparse_adjacency.dtype.itemsize
        if size > self.max_dense_bytes:
            raise MemoryError(f"this graph has {n} nodes: a dense adjacency would take {size / 2**30:.1f} GiB; "
                              f"use graph.sparse_adjacency (scipy CSR) or graph.edges")
        return torch.from_numpy(self.sparse_adjacency.toarray())

    @property
    def kinds(self) -> np.ndarray:
        return self.nodes["kind"].to_numpy()

    @property
    def logit_weights(self) -> torch.Tensor:
        """Probability of each logit node (zeros elsewhere), in node order."""
        w = torch.zeros(len(self.nodes), dtype=torch.float64)
        w[torch.from_numpy(self.kinds == "logit")] = torch.tensor(self.logits["probability"].to_numpy(), dtype=torch.float64)
        return w

    def index(self, node_id: str) -> int:
        """Row/column of ``node_id`` in the adjacency."""
        try:
            return self._index[node_id]
        except KeyError:
            raise KeyError(f"unknown node id {node_id!r}; ids look like 'f:L1:P3:42', 'e:L1:P3', 't:P3', "
                           f"'l:<token>' (see graph.nodes.node_id)") from None

    def node(self, node_id: str) -> pd.Series:
        return self.nodes.iloc[self.index(node_id)]

    def edge(self, source: str, target: str) -> float:
        """The direct effect of ``source`` on ``target``."""
        return float(self.sparse_adjacency[self.index(target), self.index(source)])

    @property
    def edges(self) -> pd.DataFrame:
        """One row per non-zero edge: ``source``, ``target``, ``weight`` (signed direct effect)."""
        if self._edges is None:
            m = self.sparse_adjacency
            tgt = entry_rows(m)
            ids = self.nodes["node_id"].to_numpy()
            self._edges = pd.DataFrame({"source": ids[m.indices], "target": ids[tgt],
                                        "weight": m.data.astype(np.float64)})
        return self._edges

    def top_features(self, n: int = 10) -> pd.DataFrame:
        """The ``n`` feature nodes with the largest influence on the logits."""
        feats = self.nodes[self.nodes["kind"] == "feature"]
        return feats.sort_values("influence", ascending=False).head(n).reset_index(drop=True)

    # -- analysis ----------------------------------------------------------------
    def influence(self) -> torch.Tensor:
        """Each node's influence on the logits (computed once per graph)."""
        if self._influence is None:
            self._influence = compute_influence(self.sparse_adjacency, self.logit_weights)
        return self._influence

    def prune_masks(self, node_threshold: float = 0.8, edge_threshold: float = 0.98):
        """``(node_mask, edge_mask)`` of :meth:`prune`; ``edge_mask`` follows ``sparse_adjacency.data``."""
        return prune_masks(self.sparse_adjacency, self.logit_weights, self.kinds, node_threshold, edge_threshold,
                           influence=self.influence())

    def prune(self, node_threshold: float = 0.8, edge_threshold: float = 0.98) -> "AttributionGraph":
        """A new graph with the nodes and edges that carry most of the influence on the logits."""
        node_mask, edge_mask = self.prune_masks(node_threshold, edge_threshold)
        return self.subgraph(node_mask.numpy(), edge_mask.numpy(),
                             info=dict(self.info, node_threshold=node_threshold, edge_threshold=edge_threshold))

    def subgraph(self, node_mask: np.ndarray, edge_mask: np.ndarray | None = None, info: dict | None = None):
        """The graph restricted to ``node_mask`` (and to the stored entries in ``edge_mask``)."""
        m = self.sparse_adjacency
        node_mask = np.asarray(node_mask, dtype=bool)
        if node_mask.shape != (m.shape[0],):
            raise ValueError(f"node_mask has shape {node_mask.shape}, expected ({m.shape[0]},)")
        keep = np.flatnonzero(node_mask)
        entries = np.ones(m.nnz, dtype=bool) if edge_mask is None else np.array(edge_mask, dtype=bool)
        if entries.shape != (m.nnz,):
            raise ValueError(f"edge_mask has shape {entries.shape}, expected ({m.nnz},): one per stored edge")
        _mask_entries(m, entries, node_mask)
        new_col = np.full(m.shape[0], -1, dtype=np.int64)
        new_col[keep] = np.arange(len(keep))
        per_row = _row_sums(m, lambda a, b: entries[a:b]).astype(np.int64)[keep]
        sub = sp.csr_array((m.data[entries], new_col[m.indices[entries]].astype(np.int32),
                            np.concatenate([[0], np.cumsum(per_row)]).astype(np.int32)), shape=(len(keep), len(keep)))
        keep_ids = set(self.nodes["node_id"].to_numpy()[keep])
        supernodes = {name: [n for n in ids if n in keep_ids] for name, ids in self.supernodes.items()}
        return AttributionGraph(prompt=self.prompt, tokens=self.tokens, token_ids=self.token_ids,
                                nodes=self.nodes.iloc[keep], adjacency=sub, logits=self.logits,
                                n_layers=self.n_layers, model_name=self.model_name,
                                info=self.info if info is None else info, supernodes=supernodes)

    def scores(self) -> dict[str, float]:
        """Replacement score and completeness score (both in [0, 1]; higher is fewer errors)."""
        infl = self.influence().numpy()
        return {"replacement": replacement_score(self.sparse_adjacency, self.logit_weights, self.kinds, infl),
                "completeness": completeness_score(self.sparse_adjacency, self.logit_weights, self.kinds, infl)}

    # -- files -------------------------------------------------------------------
    def to_neuronpedia(self, folder: str | os.PathLike | None = None, **kwargs):
        """The pruned graph in Neuronpedia's / circuit-tracer's graph JSON (a dict); with
        ``folder``, also write ``{slug}.json`` and ``graph-metadata.json`` there and return the
        file's path.  Keywords: ``slug``, ``scan``, ``node_threshold``, ``edge_threshold``."""
        from .export import graph_json, write_graph_files
        return graph_json(self, **kwargs) if folder is None else write_graph_files(self, folder, **kwargs)

    def to_html(self, path: str | os.PathLike, **kwargs) -> str:
        """Write a standalone HTML page (plotly bundled, no Python needed) whose sliders prune
        this graph exactly as :meth:`prune` does; see :func:`attribution_nb.html_export.graph_to_html`."""
        from .html_export import graph_to_html
        return graph_to_html(self, path, **kwargs)

    def save(self, path: str | os.PathLike) -> None:
        """Write the graph to one safetensors file (tensors) with its tables as JSON metadata."""
        m = self.sparse_adjacency
        tensors = {
            "indptr": torch.from_numpy(m.indptr.astype(np.int64)),
            "indices": torch.from_numpy(m.indices.astype(np.int32)),
            "data": torch.from_numpy(np.ascontiguousarray(m.data)),
            "activation": torch.tensor(self.nodes["activation"].to_numpy(dtype=np.float64)),
            "influence": torch.tensor(self.nodes["influence"].to_numpy(dtype=np.float64)),
            "probability": torch.tensor(self.logits["probability"].to_numpy(dtype=np.float64)),
            "logit": torch.tensor(self.logits["logit"].to_numpy(dtype=np.float64)),
        }
        nodes = self.nodes[["node_id", "kind", "layer", "position", "token", "feature", "label"]]
        meta = {
            "format": FORMAT, "version": FORMAT_VERSION, "prompt": self.prompt, "tokens": self.tokens,
            "token_ids": self.token_ids, "n_layers": self.n_layers, "model_name": self.model_name,
            "n_nodes": len(self.nodes), "adjacency_dtype": str(m.dtype),
            "nodes": {col: [None if pd.isna(v) else v for v in nodes[col].tolist()] for col in nodes.columns},
            "logits": {"token": self.logits["token"].tolist(), "token_id": self.logits["token_id"].tolist()},
            "info": self.info, "supernodes": self.supernodes,
        }
        tmp = os.fspath(path) + ".tmp"
        save_file(tensors, tmp, metadata={FORMAT: json.dumps(meta)})
        os.replace(tmp, path)  # never leave a half-written graph behind

    @classmethod
    def load(cls, path: str | os.PathLike) -> "AttributionGraph":
        """Read a graph written by :meth:`save` (safetensors + JSON; nothing is unpickled)."""
        tensors, header = read_safetensors_numpy(path)
        if FORMAT not in header:
            raise ValueError(f"{os.fspath(path)} is a safetensors file but not an attribution_nb graph")
        meta = json.loads(header[FORMAT])
        if meta.get("version") != FORMAT_VERSION:
            raise ValueError(f"{os.fspath(path)} has graph format version {meta.get('version')!r}; "
                             f"this attribution_nb reads version {FORMAT_VERSION}")
        n = meta["n_nodes"]
        nodes = pd.DataFrame(meta["nodes"])
        nodes["feature"] = nodes["feature"].astype("Int64")
        nodes.insert(6, "activation", tensors["activation"])
        nodes.insert(7, "influence", tensors["influence"])
        for key in ("indptr", "indices", "data"):
            if key not in tensors:
                raise ValueError(f"{os.fspath(path)} has no {key!r} tensor; it is not a complete graph file")
        indptr, indices = tensors["indptr"], tensors["indices"]
        if len(indptr) != n + 1 or indptr[0] != 0 or indptr[-1] != len(indices) or np.any(np.diff(indptr) < 0) \
                or (len(indices) and (indices.min() < 0 or indices.max() >= n)):
            raise ValueError(f"{os.fspath(path)} has an inconsistent sparse adjacency for {n} nodes")
        if len(tensors["data"]) != len(indices):
            raise ValueError(f"{os.fspath(path)} has an inconsistent sparse adjacency for {n} nodes")
        if indptr[-1] < 2**31:
            indptr = indptr.astype(np.int32)
        adjacency = sp.csr_array((tensors["data"], indices, indptr), shape=(n, n))
        logits = pd.DataFrame({"token": meta["logits"]["token"], "token_id": meta["logits"]["token_id"],
                               "probability": tensors["probability"], "logit": tensors["logit"]})
        return cls(prompt=meta["prompt"], tokens=meta["tokens"], token_ids=meta["token_ids"], nodes=nodes,
                   adjacency=adjacency, logits=logits, n_layers=meta["n_layers"], model_name=meta["model_name"],
                   info=meta["info"], supernodes=meta["supernodes"])
