"""The look both views share (the notebook widget and the standalone page): colours and
symbols by node kind, edge colours by sign and widths by weight, sizes and spacing."""

from __future__ import annotations

import html

KIND_STYLE = {  # colour, marker symbol
    "feature": ("#4c78a8", "circle"),
    "error": ("#8c8c8c", "square-open"),
    "token": ("#54a24b", "diamond"),
    "logit": ("#f58518", "star"),
    "supernode": ("#b279a2", "hexagon"),
}
EDGE_COLOURS = {1: "rgba(31, 119, 180, 0.45)", -1: "rgba(214, 39, 40, 0.45)"}
#: highlighted edges (a hovered or selected node's) and the legend
STRONG_COLOURS = {1: "rgba(31, 119, 180, 0.95)", -1: "rgba(214, 39, 40, 0.95)"}
#: (|weight| / the largest drawn ≥, line width), strongest first; drawn weakest first
EDGE_BINS = ((0.5, 3.6), (0.2, 2.2), (0.05, 1.2), (0.0, 0.5))
#: token and logit markers have a fixed size; others grow with influence (diameters in px)
FIXED_SIZE, MIN_SIZE, SIZE_RANGE = 13.0, 7.0, 13.0
#: a (layer, position) cell holds at most this many nodes side by side; more go to sub-rows
CELL_CAP = 6
#: logits sit this many units apart (their labels are long); columns are this far apart
LOGIT_SPACING, COLUMN_GAP = 2.0, 0.8
#: the spread of a dense cell's sub-rows within its layer (in layers)
SUB_ROW = 0.5
#: up to this many drawn nodes / edges, plotly draws them as SVG; above, with WebGL
SVG_NODES, SVG_EDGES = 1500, 2000


def plotly_text(value) -> str:
    """``value`` as text in plotly's titles, ticks and hover labels, which read a little HTML:
    ``&``, ``<`` and ``>`` escaped (quotes are shown as they are)."""
    return html.escape(str(value), quote=False)


def for_page() -> dict:
    """The settings as JSON for the browser's script (``static/js/``)."""
    return {
        "kinds": {k: list(v) for k, v in KIND_STYLE.items()},
        "bins": [list(b) for b in EDGE_BINS],
        "colours": {str(k): v for k, v in EDGE_COLOURS.items()},
        "strong": {str(k): v for k, v in STRONG_COLOURS.items()},
        "sizes": [FIXED_SIZE, MIN_SIZE, SIZE_RANGE],
        "cell_cap": CELL_CAP,
        "logit_spacing": LOGIT_SPACING,
        "column_gap": COLUMN_GAP,
        "sub_row": SUB_ROW,
        "svg_nodes": SVG_NODES,
        "svg_edges": SVG_EDGES,
    }
