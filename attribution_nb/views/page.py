"""A graph as one standalone HTML page: plotly's offline bundle, the graph as JSON, and the
script ``static/graph.js`` that prunes it live when the sliders move (``static/page.html`` and
``static/page.css`` are the page around it; colours and axes come from :mod:`.style`, as in the
widget).

Pruning in the page gives the same nodes and edges as :meth:`AttributionGraph.prune`: the
page receives, for every node and edge, the share of influence (or edge score) held by
those ranked before it, computed here in Python, so a threshold ``t`` keeps exactly the
ones with a share below ``t``; then the same clean-up (features need an incoming and an
outgoing edge, errors an outgoing one) runs in the page.  Only nodes and edges that some
slider position can show are written (``max_node_threshold``, ``max_edge_threshold``).
"""

from __future__ import annotations

import html
import json
import os
from string import Template

import numpy as np

from ..graph.maths import edge_scores, entry_rows, mass_before
from ..io import write_text
from . import style

STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")


def script_json(data) -> str:
    """``data`` as JSON that is safe inside a ``<script>`` element: no ``<``, ``>`` or ``&`` at all
    (written as ``\\u003c`` …), so no string in it can close the script or open a comment."""
    return json.dumps(data).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _static(name: str) -> str:
    with open(os.path.join(STATIC, name), encoding="utf-8") as f:
        return f.read()


def page_data(graph, max_node_threshold: float = 0.95, max_edge_threshold: float = 0.99) -> dict:
    """The JSON the page prunes: nodes and edges with their ranked shares (see module docstring)."""
    for name, v in (("max_node_threshold", max_node_threshold), ("max_edge_threshold", max_edge_threshold)):
        if not 0.0 < float(v) < 1.0:
            raise ValueError(f"{name} must be in (0, 1), got {v!r}")
    kinds = graph.kinds
    influence = graph.influence()
    always = np.isin(kinds, ("token", "logit"))
    node_mb = np.full(len(kinds), -1.0)
    node_mb[~always] = mass_before(influence[~always])
    embedded = always | (node_mb < max_node_threshold)
    m = graph.sparse_adjacency
    edge_mb = mass_before(edge_scores(m, influence, graph.logit_weights))
    rows = entry_rows(m)
    keep_e = (edge_mb < max_edge_threshold) & embedded[rows] & embedded[m.indices]
    new_index = np.full(len(kinds), -1)
    new_index[embedded] = np.arange(int(embedded.sum()))
    nodes = graph.nodes[embedded]
    fin = lambda a: [float(v) if np.isfinite(v) else -1.0 for v in a]   # noqa: E731  (JSON has no inf)
    return {
        "nodes": {"id": nodes.node_id.tolist(), "kind": nodes.kind.tolist(), "layer": nodes.layer.astype(int).tolist(),
                  "position": nodes.position.astype(int).tolist(), "token": nodes.token.tolist(),
                  "label": [x if isinstance(x, str) else "" for x in nodes.label],     # the page shows it as text
                  "activation": fin(nodes.activation.to_numpy(dtype=float)),
                  "influence": fin(influence[embedded]), "mb": fin(node_mb[embedded])},
        "edges": {"s": new_index[m.indices[keep_e]].tolist(), "t": new_index[rows[keep_e]].tolist(),
                  "w": [float(x) for x in m.data[keep_e]], "mb": fin(edge_mb[keep_e])},
    }


def graph_to_html(graph, path: str | os.PathLike, *, node_threshold: float = 0.8,
                  edge_threshold: float = 0.98, max_node_threshold: float = 0.95, max_edge_threshold: float = 0.99,
                  title: str | None = None) -> str:
    """Write ``graph`` as a standalone HTML page with working sliders; returns the path."""
    from plotly.offline import get_plotlyjs

    for name, v, top in (("node_threshold", node_threshold, max_node_threshold),
                         ("edge_threshold", edge_threshold, max_edge_threshold)):
        if not isinstance(v, (int, float)) or not 0.0 <= v <= top:
            raise ValueError(f"{name} must be in [0, {top}], got {v!r}")
    data = page_data(graph, max_node_threshold, max_edge_threshold)
    data["layout"] = {"margin": {"l": 60, "r": 20, "t": 20, "b": 90}, "plot_bgcolor": "white", "hovermode": "closest",
                      "dragmode": "pan", **style.axes(graph.tokens, graph.n_layers)}
    data["style"] = style.for_page()
    text = Template(_static("page.html")).substitute(
        title=html.escape(title or f"Attribution graph: {graph.prompt}"), plotly=get_plotlyjs(), css=_static("page.css"),
        node=node_threshold, edge=edge_threshold, max_node=max_node_threshold, max_edge=max_edge_threshold,
        footer=html.escape(f"{graph.model_name} · {len(graph.nodes)} nodes, {graph.n_edges} edges in the full graph · "
                           f"made with attribution_nb"),
        data=script_json(data), js=_static("graph.js"))
    write_text(path, text)
    return os.fspath(path)
