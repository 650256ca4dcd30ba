"""Supernodes found, not typed: grouping a graph's features by a known latent, or by shared edges
and co-activation where none is known, and the papers' summary diagram (supernodes joined by
their summed edges).

* :func:`supernodes_from_latents` groups the graph's feature nodes by the latent value each
  feature detects best (a table from :func:`attribution_nb.latent_labels`), keeping those of
  F1 ≥ ``min_f1``: "state=texas", "rhyme=ake".
* :func:`supernodes_by_edges` groups the most influential features whose edge profiles (what
  they read, what they write) are alike, optionally together with how alike their activations
  are over a corpus (co-activation), by average-linkage clustering.
* :func:`summary_edges` sums the graph's direct effects between groups (tokens by position,
  supernodes, logits, everything else as "other"): the summary diagram's edges.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..checks import as_float, as_int
from ..latents import best_latents
from .maths import entry_rows


def supernodes_from_latents(
    graph,
    table: pd.DataFrame,
    latent: str | None = None,
    *,
    min_f1: float = 0.5,
    positions=None,
    add: bool = True,
) -> dict[str, list[str]]:
    """``{"<latent>=<value>": [feature node ids]}``: the graph's features grouped by the latent value
    each detects best (F1 ≥ ``min_f1``), at ``positions`` (default all; negative counts from the
    end). With ``add`` the groups become the graph's supernodes (replacing groups of those names)."""
    min_f1 = as_float("min_f1", min_f1, 0.0, 1.0)
    missing = {"layer", "feature", "latent", "value", "f1"} - set(table.columns)
    if missing:
        raise ValueError(
            f"table lacks columns {sorted(missing)}: give the table latent_labels returns"
        )
    if latent is not None and latent not in set(table.latent):
        raise ValueError(
            f"latent {latent!r} is not in the table; it has {sorted(set(table.latent))}"
        )
    best = best_latents(table, latent)
    best = best[best.f1 >= min_f1]
    name_of = {(int(r.layer), int(r.feature)): f"{r.latent}={r.value}" for r in best.itertuples()}
    feats = graph.nodes[graph.nodes.kind == "feature"]
    if positions is not None:
        T = len(graph.tokens)
        keep = {p % T for p in ([positions] if isinstance(positions, int) else positions)}
        feats = feats[feats.position.isin(keep)]
    groups: dict[str, list[str]] = {}
    for nid, layer, feature in zip(feats.node_id, feats.layer, feats.feature):
        name = name_of.get((int(layer), int(feature)))
        if name is not None:
            groups.setdefault(name, []).append(nid)
    if add:
        for name, members in groups.items():
            graph.add_supernode(name, members)
    return groups


def supernodes_by_edges(
    graph,
    n_features: int = 40,
    min_similarity: float = 0.5,
    *,
    coactivation=None,
    min_size: int = 2,
    add: bool = True,
    prefix: str = "group",
) -> dict[str, list[str]]:
    """Group the ``n_features`` most influential features by how alike their edges are: the cosine
    similarity of their incoming-and-outgoing weight vectors (and, where ``coactivation`` — a
    ``[features, samples]`` array of their activations, rows in the order of
    ``graph.top_features(n_features)`` — is given, the mean of that and the correlation of
    activations). Average-linkage clusters whose members are at least ``min_similarity`` alike
    on average, of ``min_size`` or more, become ``group 1``, ``group 2`` …"""
    from scipy.cluster.hierarchy import fcluster, linkage

    n_features = as_int("n_features", n_features, minimum=2)
    min_similarity = as_float("min_similarity", min_similarity, -1.0, 1.0)
    top = graph.top_features(n_features)
    if len(top) < 2:
        return {}
    idx = np.array([graph.index(n) for n in top.node_id])
    m = graph.sparse_adjacency
    prof = np.hstack([m[idx, :].toarray(), m[:, idx].toarray().T]).astype(np.float64)
    norm = np.linalg.norm(prof, axis=1, keepdims=True)
    prof = prof / np.where(norm > 0, norm, 1.0)
    sim = prof @ prof.T
    if coactivation is not None:
        c = np.asarray(coactivation, dtype=np.float64)
        if c.shape[0] != len(top):
            raise ValueError(
                f"coactivation has {c.shape[0]} rows; it needs one per top feature ({len(top)})"
            )
        sim = (sim + np.nan_to_num(np.corrcoef(c))) / 2
    dist = np.clip(1 - sim, 0, 2)
    condensed = dist[np.triu_indices(len(top), 1)]
    labels = fcluster(linkage(condensed, "average"), t=1 - min_similarity, criterion="distance")
    groups: dict[str, list[str]] = {}
    order = sorted(set(labels), key=lambda g: -top.influence[labels == g].sum())
    for g in order:
        members = top.node_id[labels == g].tolist()
        if len(members) >= min_size:
            groups[f"{prefix} {len(groups) + 1}"] = members
    if add:
        for name, members in groups.items():
            graph.add_supernode(name, members)
    return groups


def node_groups(graph) -> np.ndarray:
    """Each node's group in the summary diagram: its supernode, ``token <pos>: <token>``, its logit
    node's token, or ``other``."""
    groups = np.full(len(graph.nodes), "other", dtype=object)
    n = graph.nodes
    tok = (n.kind == "token").to_numpy()
    groups[tok] = [f"token {p}: {t}" for p, t in zip(n.position[tok], n.token[tok])]
    log = (n.kind == "logit").to_numpy()
    groups[log] = [f"logit {t}" for t in n.token[log]]
    for name, members in graph.supernodes.items():
        for nid in members:
            groups[graph.index(nid)] = name
    return groups


def summary_edges(graph, min_weight: float = 0.0) -> pd.DataFrame:
    """The summary diagram's edges: direct effects summed between groups (:func:`node_groups`),
    edges inside a group left out; ``source, target, weight`` sorted by |weight|."""
    groups = node_groups(graph)
    m = graph.sparse_adjacency
    df = pd.DataFrame(
        {
            "source": groups[m.indices],
            "target": groups[entry_rows(m)],
            "weight": m.data.astype(np.float64),
        }
    )
    df = df[df.source != df.target].groupby(["source", "target"], as_index=False)["weight"].sum()
    df = df[df.weight.abs() > min_weight]
    return df.sort_values("weight", key=abs, ascending=False).reset_index(drop=True)


def summary_figure(
    graph, min_weight: float = 0.0, include_other: bool = False, title: str | None = None
):
    """A plotly figure of the summary diagram: tokens at the bottom, logits at the top, each
    supernode at its members' mean layer and position; arrows' widths follow |summed edge|,
    blue for positive, red for negative."""
    import plotly.graph_objects as go

    edges = summary_edges(graph, min_weight)
    if not include_other:
        edges = edges[(edges.source != "other") & (edges.target != "other")]
    groups = node_groups(graph)
    n = graph.nodes
    place = {}
    for name in set(edges.source) | set(edges.target):
        rows = n[groups == name]
        place[name] = (float(rows.position.mean()), float(rows.layer.mean()))
    fig = go.Figure()
    wmax = max(edges.weight.abs().max(), 1e-12) if len(edges) else 1.0
    for e in edges.itertuples():
        (x0, y0), (x1, y1) = place[e.source], place[e.target]
        fig.add_annotation(
            x=x1,
            y=y1,
            ax=x0,
            ay=y0,
            xref="x",
            yref="y",
            axref="x",
            ayref="y",
            showarrow=True,
            arrowhead=2,
            arrowwidth=0.5 + 5 * abs(e.weight) / wmax,
            arrowcolor="#2166ac" if e.weight > 0 else "#b2182b",
            opacity=0.7,
        )
    names = list(place)
    fig.add_trace(
        go.Scatter(
            x=[place[k][0] for k in names],
            y=[place[k][1] for k in names],
            mode="markers+text",
            text=names,
            textposition="middle right",
            marker=dict(size=14, color="#f4a582"),
            hovertext=[f"{k}" for k in names],
            hoverinfo="text",
        )
    )
    fig.update_layout(
        title=title or f"summary: {graph.prompt}",
        xaxis_title="position",
        yaxis_title="layer",
        showlegend=False,
        height=420,
        margin=dict(l=40, r=160, t=50, b=40),
    )
    return fig
