"""What the widget draws, as pure functions of the graph and the thresholds: node places,
sizes, hover texts and edge segments (the tests check them against
:func:`~attribution_nb.graph.prune_masks`)."""

from __future__ import annotations


import numpy as np
import pandas as pd

from ..graph import AttributionGraph, entry_rows
from .style import CELL_WIDTH, EDGE_BINS, FIXED_SIZE, MIN_SIZE, SIZE_RANGE, plotly_text


def cell_positions(layers: np.ndarray, positions: np.ndarray, order_key: np.ndarray,
                   width: float = CELL_WIDTH) -> np.ndarray:
    """x of each node: its prompt position, spread across ``width`` among the nodes sharing
    its (layer, position) cell, in ``order_key`` order (largest first)."""
    x = positions.astype(np.float64).copy()
    df = pd.DataFrame({"l": layers, "p": positions, "k": -np.asarray(order_key, dtype=np.float64)})
    df = df.sort_values(["l", "p", "k"], kind="stable")
    for _, idx in df.groupby(["l", "p"], sort=False).groups.items():
        k = len(idx)
        if k > 1:
            x[np.asarray(idx)] += np.linspace(-width / 2, width / 2, k)
    return x


def draw_data(graph: AttributionGraph, node_threshold: float, edge_threshold: float,
              collapse: bool = False) -> dict:
    """What the widget draws at these thresholds: node ids, kinds, positions, sizes, hover
    texts, and the edges as (source, target, weight) with coordinates."""
    node_mask, edge_mask = graph.prune_masks(node_threshold, edge_threshold)
    keep = np.flatnonzero(node_mask)
    nodes = graph.nodes.iloc[keep]
    m = graph.sparse_adjacency
    rows = entry_rows(m)[edge_mask]
    cols = m.indices[edge_mask]
    weights = m.data[edge_mask].astype(np.float64)
    influence = nodes["influence"].to_numpy(dtype=np.float64)
    layer = nodes["layer"].to_numpy()
    kinds = nodes["kind"].to_numpy().astype(object)
    # error nodes sit at the right end of their cell, after the features
    key = np.where(kinds == "error", -1.0, influence)
    xs = cell_positions(layer, nodes["position"].to_numpy(), key)
    ys = layer.astype(np.float64)
    ids = nodes["node_id"].to_numpy().astype(object)
    labels = nodes["label"].fillna("").to_numpy().astype(object)
    drawn_index = np.full(len(node_mask), -1, dtype=np.int64)
    drawn_index[keep] = np.arange(len(keep))
    src, tgt = drawn_index[cols], drawn_index[rows]

    if collapse and graph.supernodes:
        ids, kinds, xs, ys, influence, labels, src, tgt, weights = _collapse(
            graph, ids, kinds, xs, ys, influence, labels, src, tgt, weights)

    top = max(float(influence.max()) if len(influence) else 0.0, 1e-12)
    sizes = np.where(np.isin(kinds, ("token", "logit")), FIXED_SIZE,
                     MIN_SIZE + SIZE_RANGE * np.sqrt(np.clip(influence, 0, None) / top))
    return {"ids": ids, "kinds": kinds, "x": xs, "y": ys, "size": sizes, "influence": influence, "labels": labels,
            "source": src, "target": tgt, "weight": weights, "n_nodes": len(ids), "n_edges": len(weights)}


def _collapse(graph, ids, kinds, xs, ys, influence, labels, src, tgt, weights):
    """Each drawn supernode's members replaced by one node (mean place, summed influence), its
    edges summed (edges inside a supernode dropped)."""
    group = np.arange(len(ids))
    extra = []
    member_of = {nid: name for name, members in graph.supernodes.items() for nid in members}
    names = [name for name, members in graph.supernodes.items() if any(n in set(ids) for n in members)]
    for g, name in enumerate(names):
        members = [j for j, nid in enumerate(ids) if member_of.get(nid) == name]
        group[members] = len(ids) + g
        extra.append((name, members))
    new_index = {}
    outs: tuple[list, ...] = ([], [], [], [], [], [])
    out_ids, out_kinds, out_x, out_y, out_infl, out_labels = outs
    for j in range(len(ids)):
        if group[j] == j:
            new_index[j] = len(out_ids)
            for out, value in zip(outs, (ids[j], kinds[j], xs[j], ys[j], influence[j], labels[j])):
                out.append(value)
    for name, members in extra:
        k = len(out_ids)
        for j in members:
            new_index[j] = k
        for out, value in zip(outs, (f"s:{name}", "supernode", float(np.mean(xs[members])),
                                     float(np.mean(ys[members])), float(influence[members].sum()),
                                     f"{name} ({len(members)} nodes)")):
            out.append(value)
    s2 = np.array([new_index[j] for j in src], dtype=np.int64)
    t2 = np.array([new_index[j] for j in tgt], dtype=np.int64)
    agg = pd.DataFrame({"s": s2, "t": t2, "w": weights})
    agg = agg[agg.s != agg.t].groupby(["s", "t"], as_index=False)["w"].sum()
    src, tgt, weights = agg.s.to_numpy(), agg.t.to_numpy(), agg.w.to_numpy()
    ids, kinds = np.array(out_ids, dtype=object), np.array(out_kinds, dtype=object)
    xs, ys, influence = np.array(out_x), np.array(out_y), np.array(out_infl)
    labels = np.array(out_labels, dtype=object)
    return ids, kinds, xs, ys, influence, labels, src, tgt, weights


def edge_segments(data: dict, which: np.ndarray | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """x/y arrays (NaN-separated segments) for each edge trace: sign × weight bin."""
    src, tgt, w = data["source"], data["target"], data["weight"]
    if which is not None:
        src, tgt, w = src[which], tgt[which], w[which]
    rel = np.abs(w) / max(float(np.abs(w).max()) if len(w) else 0.0, 1e-30)
    out = []
    for sign in (1, -1):
        lower = np.inf
        for floor, _ in EDGE_BINS:
            sel = ((w > 0) if sign == 1 else (w < 0)) & (rel >= floor) & (rel < lower)
            lower = floor
            out.append(_segments(data, src[sel], tgt[sel]))
    return out


def _segments(data, src, tgt):
    n = len(src)
    x = np.full(3 * n, np.nan)
    y = np.full(3 * n, np.nan)
    x[0::3], x[1::3] = data["x"][src], data["x"][tgt]
    y[0::3], y[1::3] = data["y"][src], data["y"][tgt]
    return x, y


def hover_texts(graph: AttributionGraph, data: dict) -> list[str]:
    out = []
    for nid, kind, label, infl in zip(data["ids"], data["kinds"], data["labels"], data["influence"]):
        head = f"<b>{plotly_text(nid)}</b> ({kind})"
        if kind != "supernode":
            n = graph.node(nid)
            head += f"<br>token {plotly_text(repr(n.token))} · activation {n.activation:.3g}"
        head += f"<br>influence {infl:.3g}"
        if label:
            head += f"<br>{plotly_text(label)}"
        out.append(head)
    return out


