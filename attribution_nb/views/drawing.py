"""What the views draw, as a pure function of the graph and the thresholds: the kept nodes
(supernodes collapsed or not) and the edges between them.  The browser computes the same from
the payload (``static/js/prune.js``); this is the kernel's account of it (``GraphWidget.drawn``),
which the browser tests compare with what the page shows."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..graph import AttributionGraph, entry_rows


def draw_data(
    graph: AttributionGraph, node_threshold: float, edge_threshold: float, collapse: bool = False
) -> dict:
    """The drawn nodes (ids, kinds, influence, labels) and edges (source, target, weight as
    indices into the drawn nodes) at these thresholds."""
    node_mask, edge_mask = graph.prune_masks(node_threshold, edge_threshold)
    keep = np.flatnonzero(node_mask)
    nodes = graph.nodes.iloc[keep]
    m = graph.sparse_adjacency
    rows = entry_rows(m)[edge_mask]
    cols = m.indices[edge_mask]
    weights = m.data[edge_mask].astype(np.float64)
    influence = nodes["influence"].to_numpy(dtype=np.float64)
    kinds = nodes["kind"].to_numpy().astype(object)
    ids = nodes["node_id"].to_numpy().astype(object)
    labels = nodes["label"].fillna("").to_numpy().astype(object)
    drawn_index = np.full(len(node_mask), -1, dtype=np.int64)
    drawn_index[keep] = np.arange(len(keep))
    src, tgt = drawn_index[cols], drawn_index[rows]
    if collapse and graph.supernodes:
        ids, kinds, influence, labels, src, tgt, weights = _collapse(
            graph, ids, kinds, influence, labels, src, tgt, weights
        )
    return {
        "ids": ids,
        "kinds": kinds,
        "influence": influence,
        "labels": labels,
        "source": src,
        "target": tgt,
        "weight": weights,
        "n_nodes": len(ids),
        "n_edges": len(weights),
    }


def _collapse(graph, ids, kinds, influence, labels, src, tgt, weights):
    """Each drawn supernode's members replaced by one node (summed influence), its edges summed
    (edges inside a supernode dropped).  A supernode comes where its first drawn member was."""
    member_of = {nid: name for name, members in graph.supernodes.items() for nid in members}
    new_index = np.empty(len(ids), dtype=np.int64)
    out: list[list] = []
    slot: dict[str, int] = {}
    for j, nid in enumerate(ids):
        name = member_of.get(nid)
        if name is None:
            new_index[j] = len(out)
            out.append([ids[j], kinds[j], float(influence[j]), labels[j]])
            continue
        if name not in slot:
            slot[name] = len(out)
            out.append([f"s:{name}", "supernode", 0.0, name])
        new_index[j] = slot[name]
        out[slot[name]][2] += max(float(influence[j]), 0.0)
    agg = pd.DataFrame({"s": new_index[src], "t": new_index[tgt], "w": weights})
    agg = agg[agg.s != agg.t].groupby(["s", "t"], as_index=False, sort=False)["w"].sum()
    cols = list(zip(*out)) if out else [(), (), (), ()]
    return (
        np.array(cols[0], dtype=object),
        np.array(cols[1], dtype=object),
        np.array(cols[2], dtype=np.float64),
        np.array(cols[3], dtype=object),
        agg.s.to_numpy(),
        agg.t.to_numpy(),
        agg.w.to_numpy(),
    )
