"""What the browser receives to draw a graph, for the notebook widget and the standalone page
alike: nodes and edges with their ranked shares, display names, the tokens, and (with a model)
what each feature promotes, suppresses and where it fires most.

Pruning in the browser gives the same nodes and edges as :meth:`AttributionGraph.prune`: each
node and edge comes with the share of influence (or edge score) held by those ranked before it,
computed here, so a threshold ``t`` keeps exactly the ones whose share is below ``t`` (a threshold
of 1 keeps every one that holds anything); then the same clean-up runs in the browser (features
need an incoming and an outgoing edge, errors an outgoing one).  Only the nodes and edges some
slider position can show are sent: all of them up to :data:`MAX_EDGES` edges, else the
strongest, and the sliders stop where the sent ones end.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..graph.maths import edge_scores, entry_rows, mass_before
from . import style

#: at most this many edges (the strongest by edge score) are sent to the browser
MAX_EDGES = 150_000
#: features whose promoted tokens and contexts are sent up front (the most influential)
MAX_DETAILS = 400
NEVER = 2.0  # the share of an entry that holds nothing: no threshold keeps it


def shares(scores: np.ndarray) -> np.ndarray:
    """``mass_before`` of each score, with :data:`NEVER` for the ones that hold nothing."""
    scores = np.asarray(scores, dtype=np.float64)
    out = mass_before(scores)
    if scores.sum() > 0:
        out[scores <= 0] = NEVER
    return out


def _cap(mb: np.ndarray, limit: int) -> float:
    """The largest threshold (a multiple of 0.01, at most 1) keeping at most ``limit`` entries."""
    if int((mb < NEVER).sum()) <= limit:
        return 1.0
    cut = float(np.sort(mb)[limit])  # the first entry left out
    return max(0.0, math.floor(cut * 100) / 100)


def _finite(values) -> list[float]:
    return [float(v) if np.isfinite(v) else -1.0 for v in np.asarray(values, dtype=np.float64)]


def display_name(
    kind: str,
    token: str,
    layer: int,
    feature,
    label: str,
    probability: float | None,
    value: float | None = None,
) -> str:
    """How a node is named on the plot and in the panel (a custom target: its name and value)."""
    if label:
        return label
    if kind == "logit" and value is not None:
        return f"{token} = {value:.2f}"
    if kind == "feature":
        return f"L{layer} #{feature}"
    if kind == "error":
        return f"error L{layer}"
    if kind == "logit":
        return f"{axis_token(token)} p={probability:.2f}"
    return axis_token(token)


def axis_token(token: str) -> str:
    """A token as the x axis shows it: punctuation and spaces quoted and visible."""
    text = str(token)
    if not text.strip():
        return "“" + text.replace(" ", "␣").replace("\n", "⏎").replace("\t", "⇥") + "”"
    if not any(ch.isalnum() for ch in text):
        return f"“{text.strip()}”"
    return text.strip() if len(text.strip()) else text


def graph_payload(graph, model=None, *, details_for: int | None = None) -> dict:
    """The JSON the browser draws (see the module docstring); details (promoted and suppressed
    tokens, contexts) for the ``details_for`` most influential features (default
    :data:`MAX_DETAILS`)."""
    details_for = MAX_DETAILS if details_for is None else details_for
    kinds = graph.kinds
    influence = graph.influence()
    always = np.isin(kinds, ("token", "logit"))
    node_mb = np.full(len(kinds), -1.0)
    node_mb[~always] = shares(influence[~always])
    m = graph.sparse_adjacency
    edge_mb = shares(edge_scores(m, influence, graph.logit_weights))
    rows = entry_rows(m)
    max_edge = _cap(edge_mb, MAX_EDGES)
    keep_e = (edge_mb < max_edge) if max_edge < 1.0 else (edge_mb < NEVER)
    embedded = always | np.isin(
        np.arange(len(kinds)), np.concatenate([m.indices[keep_e], rows[keep_e]])
    )
    new_index = np.full(len(kinds), -1)
    new_index[embedded] = np.arange(int(embedded.sum()))
    nodes = graph.nodes[embedded]
    probability = dict(zip(graph.logits.node_id, graph.logits.probability.astype(float)))
    labels = [x if isinstance(x, str) else "" for x in nodes.label]
    names = _display_names(graph, nodes, labels, probability)
    return {
        "prompt": graph.prompt,
        "n_layers": int(graph.n_layers),
        "tokens": [axis_token(t) for t in graph.tokens],
        "max_node_threshold": 1.0,
        "max_edge_threshold": max_edge,
        "nodes": {
            "id": nodes.node_id.tolist(),
            "kind": nodes.kind.tolist(),
            "layer": nodes.layer.astype(int).tolist(),
            "position": nodes.position.astype(int).tolist(),
            "token": [str(t) for t in nodes.token],
            "feature": [-1 if pd.isna(f) else int(f) for f in nodes.feature],
            "label": labels,
            "name": names,  # the browser shows these as text, never as markup
            "activation": _finite(nodes.activation),
            "influence": _finite(influence[embedded]),
            "probability": [float(probability.get(i, -1.0)) for i in nodes.node_id],
            "mb": _finite(node_mb[embedded]),
        },
        "edges": {
            "s": new_index[m.indices[keep_e]].tolist(),
            "t": new_index[rows[keep_e]].tolist(),
            "w": [float(x) for x in m.data[keep_e]],
            "mb": _finite(edge_mb[keep_e]),
        },
        "details": feature_details(graph, model, graph.top_features(details_for).node_id)
        if model is not None
        else {},
        "supernodes": {k: list(v) for k, v in graph.supernodes.items()},
        "style": style.for_page(),
    }


def _display_names(graph, nodes: pd.DataFrame, labels: list, probability: dict) -> list[str]:
    """What the plot and the panel call each node (see :func:`display_name`)."""
    is_custom = graph.logits.token_id.isna()
    custom = dict(zip(graph.logits.node_id[is_custom], graph.logits.logit[is_custom]))
    return [
        display_name(k, t, int(la), f, lab, probability.get(i), custom.get(i))
        for k, t, la, f, lab, i in zip(
            nodes.kind, nodes.token, nodes.layer, nodes.feature, labels, nodes.node_id
        )
    ]


def feature_details(graph, model, node_ids, k: int = 6) -> dict:
    """For each feature node: the tokens its decoder direction promotes and suppresses most
    through the (demeaned) unembedding, its top-activating contexts, if the model has them, and the
    latent value it detects best (:func:`attribution_nb.attach_latent_labels`), if measured."""
    out: dict = {}
    by_layer: dict[int, list] = {}
    for nid in node_ids:
        n = graph.node(nid)
        if n.kind == "feature":
            by_layer.setdefault(int(n.layer), []).append((nid, int(n.feature)))
    for layer, items in by_layer.items():
        if not 0 <= layer < model.n_layers:
            continue
        tv, ti, bv, bi = model.token_effects(layer, [f for _, f in items], k)
        for r, (nid, feature) in enumerate(items):
            contexts = model.feature_contexts.get((layer, feature), [])[:4]
            out[nid] = {
                "promotes": _tokens(model, ti[r], tv[r]),
                "suppresses": _tokens(model, bi[r], bv[r]),
                "contexts": [[str(text), float(act)] for text, act in contexts],
                "latent": model.feature_latents.get((layer, feature), ""),
            }
    return out


def _tokens(model, ids, values) -> list:
    return [
        [axis_token(t), round(float(v), 4)]
        for t, v in zip(model.token_strings(ids.tolist()), values)
    ]
