"""The node panel of the widget: what the graph (and the model, if any) say about one node,
as HTML."""

from __future__ import annotations

import html

import pandas as pd

from ..graph import AttributionGraph

EMPTY = "<i>Click a node to see its edges.</i>"


def table_html(df: pd.DataFrame, title: str) -> str:
    if df.empty:
        return f"<div class='anb-table'><b>{title}</b><br><i>none</i></div>"
    return (f"<div class='anb-table'><b>{title}</b>"
            + df.to_html(index=False, border=0, float_format=lambda v: f"{v:.3g}", escape=True) + "</div>")


def edge_tables(graph: AttributionGraph, node_id: str, k: int = 5) -> dict[str, pd.DataFrame]:
    """Strongest incoming and outgoing edges of a node in the full graph, by sign."""
    incoming, outgoing = graph.edges_of(node_id)
    out = {}
    for name, df in (("incoming", incoming), ("outgoing", outgoing)):
        out[f"{name} +"] = df[df.weight > 0].nlargest(k, "weight").reset_index(drop=True)
        out[f"{name} −"] = df[df.weight < 0].nsmallest(k, "weight").reset_index(drop=True)
    return out


def panel_html(graph: AttributionGraph, model, node_id: str | None) -> str:
    """The panel of ``node_id`` (None: the hint; ``"s:<name>"``: a drawn supernode)."""
    if node_id is None:
        return EMPTY
    if node_id.startswith("s:"):
        name = node_id[2:]
        members = graph.supernodes.get(name, [])
        return (f"<h4>supernode {html.escape(name)}</h4><div>{len(members)} nodes: "
                + ", ".join(html.escape(m) for m in members) + "</div>")
    n = graph.node(node_id)
    parts = [f"<h4 class='anb-node-title'>{html.escape(node_id)}</h4>",
             f"<div><b>{n.kind}</b> · layer {n.layer} · position {n.position} "
             f"(token {html.escape(repr(n.token))})<br>activation {n.activation:.4g} · "
             f"influence {n.influence:.4g}"
             + (f"<br>label: <i>{html.escape(str(n.label))}</i>" if n.label else "") + "</div>"]
    tables = edge_tables(graph, node_id)
    parts.append("<div class='anb-tables'>" + "".join(table_html(df, name) for name, df in tables.items()) + "</div>")
    if n.kind == "feature" and model is not None:
        top = model.feature_top_tokens(int(n.layer), int(n.feature), k=6)
        parts.append(table_html(top, "promotes (decoder · unembedding)"))
        contexts = model.feature_contexts.get((int(n.layer), int(n.feature)), [])[:5]
        if contexts:
            parts.append(table_html(pd.DataFrame(contexts, columns=["top-activating context", "activation"]),
                                    "where it fires most"))
    return "".join(parts)
