"""What the panel lists about one node, as tables (the browser draws its own from the payload;
these are the kernel's: ``GraphWidget.edge_tables``)."""

from __future__ import annotations

import pandas as pd

from ..graph import AttributionGraph


def edge_tables(graph: AttributionGraph, node_id: str, k: int = 5) -> dict[str, pd.DataFrame]:
    """Strongest incoming and outgoing edges of a node in the full graph, by sign."""
    incoming, outgoing = graph.edges_of(node_id)
    out = {}
    for name, df in (("incoming", incoming), ("outgoing", outgoing)):
        out[f"{name} +"] = df[df.weight > 0].nlargest(k, "weight").reset_index(drop=True)
        out[f"{name} −"] = df[df.weight < 0].nsmallest(k, "weight").reset_index(drop=True)
    return out
