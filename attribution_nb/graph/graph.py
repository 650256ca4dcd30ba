"""``AttributionGraph``: one prompt's attribution graph as tidy tables and a sparse adjacency.

It keeps its nodes in one order (features, error nodes, token nodes, logit nodes) and a
sparse adjacency ``A`` (scipy CSR) with ``A[target, source]`` = the direct effect of the
source on the target.  The maths is in :mod:`.maths` (pure functions), the file format in
:mod:`.files`, the Neuronpedia export in :mod:`.neuronpedia`. The standalone page is written by
:mod:`attribution_nb.views.page`, which registers itself in :data:`PAGE_WRITERS` (the graph
sits below the views in the data flow and never imports them).
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from ..checks import as_int
from ..ids import EXAMPLES, KINDS
from ..io import encodable
from .files import NODE_COLUMNS, read_graph, save_graph, sniff
from .from_json import read_graph_json
from .maths import (
    as_csr,
    completeness_score,
    compute_influence,
    entry_rows,
    prune_masks,
    replacement_score,
    restrict,
)
from .neuronpedia import graph_json, write_graph_files
from .supernodes import summary_edges, summary_figure, supernodes_by_edges, supernodes_from_latents


def _text(value, what: str) -> str:
    """``value`` if it is a string UTF-8 can encode and holds no NUL (exports and images would drop it)."""
    if not isinstance(value, str):
        raise ValueError(f"{what} is a string, got {value!r}")
    if "\0" in value:
        raise ValueError(f"{what} cannot hold a NUL character, got {value!r}")
    return encodable(value, what)


def _needs_every_edge(info: dict) -> None:
    if info.get("edges_complete") is False:
        raise ValueError(
            f"this graph was read from {info.get('file', 'a graph JSON')}, which holds only the edges its "
            f"writer kept (pruned at node threshold {info.get('node_threshold')}); pruning needs the full "
            f"edge set: attribute the prompt again to prune at other thresholds"
        )


#: page writers by format, registered by the views (``"html"``: :func:`attribution_nb.views.page.graph_to_html`)
PAGE_WRITERS: dict = {}


def rows_note(info: dict, node_threshold: float, edge_threshold: float) -> str:
    """See :meth:`AttributionGraph.rows_note` (``info``: the graph's)."""
    missing = int(info.get("features_without_rows", 0) or 0)
    proved = info.get("prune_thresholds")
    if (
        not missing
        or proved is None
        or np.allclose([node_threshold, edge_threshold], proved, rtol=0, atol=1e-9)
    ):
        return ""
    return (
        f"{missing} features of this graph have no rows (adaptive rows, proved for pruning at "
        f"({proved[0]:g}, {proved[1]:g})); at ({node_threshold:g}, {edge_threshold:g}) the pruned graph may "
        f"differ from the one with every row: build it with attribute(..., rows='all') or "
        f"prune_thresholds=({node_threshold:g}, {edge_threshold:g})"
    )


def node_edges(m, ids: np.ndarray, i: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Node ``i``'s incoming (``source``, ``weight``) and outgoing (``target``, ``weight``) edges in ``m``."""
    a, b = m.indptr[i], m.indptr[i + 1]
    incoming = pd.DataFrame(
        {"source": ids[m.indices[a:b]], "weight": m.data[a:b].astype(np.float64)}
    )
    col = m[:, [i]].tocoo()
    outgoing = pd.DataFrame({"target": ids[col.coords[0]], "weight": col.data.astype(np.float64)})
    return incoming, outgoing


class _Groups:
    """Labels and supernodes: the names a person gives a graph's nodes (kept by ``save``)."""

    nodes: pd.DataFrame
    supernodes: dict

    def index(self, node_id: str) -> int:  # (AttributionGraph's)
        raise NotImplementedError

    def set_label(self, node_id: str, label: str) -> None:
        """Give ``node_id`` a label (kept by :meth:`save`)."""
        self.nodes.loc[self.index(node_id), "label"] = _text(label, "a label")

    def add_supernode(self, name: str, members) -> None:
        """Name a group of nodes (a supernode, kept by :meth:`save`); replaces a group of that name."""
        name = (name or "").strip() if isinstance(name, str) else name
        if not isinstance(name, str) or not _text(name, "a supernode's name"):
            raise ValueError(f"a supernode needs a non-empty name, got {name!r}")
        members = list(members)
        if not members:
            raise ValueError(f"supernode {name!r} has no members; give node ids")
        for nid in members:
            self.index(nid)  # raises for an unknown id
        self.supernodes[name] = members

    def supernodes_from_latents(
        self,
        table,
        latent: str | None = None,
        *,
        min_f1: float = 0.5,
        positions=None,
        add: bool = True,
    ) -> dict[str, list[str]]:
        """Group features by the latent value each detects best (F1 ≥ ``min_f1``; ``table`` from
        :func:`attribution_nb.latent_labels`); see :mod:`.supernodes`."""
        return supernodes_from_latents(
            self, table, latent, min_f1=min_f1, positions=positions, add=add
        )

    def supernodes_by_edges(
        self, n_features: int = 40, min_similarity: float = 0.5, **kwargs
    ) -> dict:
        """Group the top features by shared edges (and co-activation); see :mod:`.supernodes`."""
        return supernodes_by_edges(self, n_features, min_similarity, **kwargs)

    def summary_edges(self, min_weight: float = 0.0) -> pd.DataFrame:
        """Direct effects summed between supernodes, tokens and logits (the summary diagram's edges)."""
        return summary_edges(self, min_weight)

    def summary_figure(self, **kwargs):
        """The papers' summary diagram as a plotly figure: supernodes joined by summed edges."""
        return summary_figure(self, **kwargs)


class _Files:
    """The writers of a graph: its own file, Neuronpedia's graph JSON, a standalone page."""

    def to_neuronpedia(self, folder: str | os.PathLike | None = None, **kwargs):
        """The pruned graph as Neuronpedia / circuit-tracer graph JSON (a dict), or written to ``folder``
        (its path returned; ``features=True, model=model`` adds feature pages for a local viewer).
        Keywords: ``slug``, ``scan``, ``node_threshold``, ``edge_threshold``, ``prune``."""
        return (
            graph_json(self, **kwargs)
            if folder is None
            else write_graph_files(self, folder, **kwargs)
        )

    def to_html(self, path: str | os.PathLike, **kwargs) -> str:
        """Write a standalone HTML page (plotly bundled, no Python needed) whose sliders prune
        this graph exactly as :meth:`prune` does; see :func:`attribution_nb.views.page.graph_to_html`."""
        if "html" not in PAGE_WRITERS:
            raise RuntimeError(
                "the standalone page is written by attribution_nb.views.page: import attribution_nb"
            )
        return PAGE_WRITERS["html"](self, path, **kwargs)

    def save(self, path: str | os.PathLike) -> None:
        """Write the graph to one safetensors file (tensors) with its tables as JSON metadata."""
        save_graph(self, path)


class AttributionGraph(_Groups, _Files):
    """An attribution graph for one prompt: ``nodes``, ``edges`` and ``logits`` tables.

    Build one with :func:`attribution_nb.attribute`; load one with :meth:`load`.
    ``sparse_adjacency`` (a scipy CSR array) holds the direct effect of node ``j`` on node
    ``i`` at ``[i, j]`` (rows: targets); memory grows with the number of edges.
    ``adjacency`` is the same as a dense torch tensor, for small graphs.
    """

    #: ``adjacency`` refuses to build a dense matrix larger than this (bytes)
    max_dense_bytes = 1 << 30

    def __init__(
        self,
        *,
        prompt: str,
        tokens: list[str],
        token_ids: list[int],
        nodes: pd.DataFrame,
        adjacency: sp.sparray | np.ndarray | torch.Tensor,
        logits: pd.DataFrame,
        n_layers: int,
        model_name: str = "",
        info: dict | None = None,
        supernodes: dict | None = None,
    ):
        if list(nodes.columns[: len(NODE_COLUMNS)]) != NODE_COLUMNS:
            raise ValueError(f"nodes must have columns {NODE_COLUMNS}, got {list(nodes.columns)}")
        n = len(nodes)
        if tuple(adjacency.shape) != (n, n):
            raise ValueError(
                f"adjacency has shape {tuple(adjacency.shape)}, expected ({n}, {n}) for {n} nodes"
            )
        self.sparse_adjacency = as_csr(adjacency)
        self.prompt = prompt
        self.tokens = list(tokens)
        self.token_ids = [int(t) for t in token_ids]
        self.nodes = nodes.reset_index(drop=True)
        self.logits = logits.reset_index(drop=True)
        if "node_id" not in self.logits:  # (the logit nodes, in node order, are the logits' rows)
            self.logits["node_id"] = self.nodes["node_id"][self.nodes["kind"] == "logit"].to_numpy()
        self.n_layers = int(n_layers)
        self.model_name = model_name
        self.info = dict(info or {})
        self.supernodes = dict(supernodes or {})
        self._index = {nid: i for i, nid in enumerate(self.nodes["node_id"])}
        self._edges: pd.DataFrame | None = None
        self._influence: np.ndarray | None = None

    # -- lookups -----------------------------------------------------------------
    def __repr__(self) -> str:
        counts = self.nodes["kind"].value_counts()
        parts = ", ".join(f"{counts.get(k, 0)} {k}s" for k in KINDS)
        return (
            f"AttributionGraph({self.prompt!r}: {parts}, {self.n_edges} edges; "
            f"top prediction {self.logits['token'].iloc[0]!r})"
        )

    @property
    def n_edges(self) -> int:
        return int(self.sparse_adjacency.nnz)

    @property
    def adjacency(self) -> torch.Tensor:
        """The adjacency as a dense ``[target, source]`` torch tensor (small graphs only)."""
        n = self.sparse_adjacency.shape[0]
        size = n * n * self.sparse_adjacency.dtype.itemsize
        if size > self.max_dense_bytes:
            raise MemoryError(
                f"this graph has {n} nodes: a dense adjacency would take {size / 2**30:.1f} GiB; "
                f"use graph.sparse_adjacency (scipy CSR) or graph.edges"
            )
        return torch.from_numpy(self.sparse_adjacency.toarray())

    @property
    def kinds(self) -> np.ndarray:
        return self.nodes["kind"].to_numpy()

    @property
    def logit_weights(self) -> np.ndarray:
        """Probability of each logit node (zeros elsewhere), in node order."""
        w = np.zeros(len(self.nodes))
        w[self.kinds == "logit"] = self.logits["probability"].to_numpy(dtype=np.float64)
        return w

    def index(self, node_id: str) -> int:
        """Row/column of ``node_id`` in the adjacency."""
        try:
            return self._index[node_id]
        except KeyError:
            raise KeyError(
                f"unknown node id {node_id!r}; ids look like {EXAMPLES} (see graph.nodes.node_id)"
            ) from None

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
            self._edges = pd.DataFrame(
                {"source": ids[m.indices], "target": ids[tgt], "weight": m.data.astype(np.float64)}
            )
        return self._edges

    def logit_node(self, token: str) -> str:
        """The id of the logit node whose token reads ``token`` (e.g. ``"austin"``)."""
        ok = isinstance(token, str) and encodable(token, "the token") is token
        found = self.logits.node_id[self.logits.token == token].tolist() if ok else []
        if len(found) != 1:
            raise KeyError(
                f"{len(found)} logit nodes read {token!r}; the logits are {self.logits.token.tolist()} "
                f"(their ids: graph.logits.node_id)"
            )
        return found[0]

    def edges_of(self, node_id: str) -> tuple[pd.DataFrame, pd.DataFrame]:
        """A node's edges in the full graph: incoming (``source``, ``weight``) and outgoing
        (``target``, ``weight``)."""
        return node_edges(
            self.sparse_adjacency, self.nodes["node_id"].to_numpy(), self.index(node_id)
        )

    def top_features(self, n: int = 10) -> pd.DataFrame:
        """The ``n`` feature nodes with the largest influence on the logits."""
        n = as_int("n", n, minimum=0)
        feats = self.nodes[self.nodes["kind"] == "feature"]
        return feats.sort_values("influence", ascending=False).head(n).reset_index(drop=True)

    # -- analysis ----------------------------------------------------------------
    def influence(self) -> np.ndarray:
        """Each node's influence on the logits (computed once per graph)."""
        if self._influence is None:
            self._influence = compute_influence(self.sparse_adjacency, self.logit_weights)
        return self._influence

    def prune_masks(self, node_threshold: float = 0.8, edge_threshold: float = 0.98):
        """``(node_mask, edge_mask)`` of :meth:`prune`; ``edge_mask`` follows ``sparse_adjacency.data``."""
        _needs_every_edge(self.info)
        return prune_masks(
            self.sparse_adjacency,
            self.logit_weights,
            self.kinds,
            node_threshold,
            edge_threshold,
            influence=self.influence(),
        )

    def prune(self, node_threshold: float = 0.8, edge_threshold: float = 0.98) -> AttributionGraph:
        """A new graph with the nodes and edges that carry most of the influence on the logits.
        Warns where a graph built with adaptive rows is not proved exact (:meth:`rows_note`)."""
        node_mask, edge_mask = self.prune_masks(
            node_threshold, edge_threshold
        )  # (checks the thresholds)
        note = self.rows_note(node_threshold, edge_threshold)
        if note:
            warnings.warn(note, stacklevel=2)
        return self.subgraph(
            node_mask,
            edge_mask,
            info=dict(self.info, node_threshold=node_threshold, edge_threshold=edge_threshold),
        )

    def rows_note(self, node_threshold: float, edge_threshold: float) -> str:
        """Why pruning at these thresholds may differ from pruning the graph with every row
        (``""`` where it cannot): :func:`~attribution_nb.attribute`'s adaptive rows are proved
        to give the same pruned nodes at its ``prune_thresholds`` only."""
        return rows_note(self.info, node_threshold, edge_threshold)

    def subgraph(
        self, node_mask: np.ndarray, edge_mask: np.ndarray | None = None, info: dict | None = None
    ):
        """The graph restricted to ``node_mask`` (and to the stored entries in ``edge_mask``)."""
        keep, sub = restrict(self.sparse_adjacency, node_mask, edge_mask)
        keep_ids = set(self.nodes["node_id"].to_numpy()[keep])
        supernodes = {
            name: [n for n in ids if n in keep_ids] for name, ids in self.supernodes.items()
        }
        return AttributionGraph(
            prompt=self.prompt,
            tokens=self.tokens,
            token_ids=self.token_ids,
            nodes=self.nodes.iloc[keep],
            adjacency=sub,
            logits=self.logits,
            n_layers=self.n_layers,
            model_name=self.model_name,
            info=self.info if info is None else info,
            supernodes=supernodes,
        )

    def scores(self) -> dict[str, float]:
        """Replacement score and completeness score (both in [0, 1]; higher is fewer errors)."""
        infl = self.influence()
        return {
            "replacement": replacement_score(
                self.sparse_adjacency, self.logit_weights, self.kinds, infl
            ),
            "completeness": completeness_score(
                self.sparse_adjacency, self.logit_weights, self.kinds, infl
            ),
        }

    # -- files (and the writers in _Files) ---------------------------------------
    @classmethod
    def load(cls, path: str | os.PathLike) -> AttributionGraph:
        """Read a graph written by :meth:`save` (nothing is unpickled), or a graph JSON (:meth:`from_neuronpedia`)."""
        return cls.from_neuronpedia(path) if sniff(path) == "json" else cls(**read_graph(path))

    @classmethod
    def from_neuronpedia(cls, source) -> AttributionGraph:
        """A graph from a graph JSON (path or dict) of circuit-tracer, Neuronpedia or :meth:`to_neuronpedia`;
        what a pruned file lacks is in ``info['absent']`` (see :mod:`attribution_nb.graph.from_json`)."""
        g = cls(**read_graph_json(source))
        g.nodes["influence"] = g.influence()
        return g
