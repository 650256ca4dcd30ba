"""The look both views share (the notebook widget and the standalone page): colours and
symbols by node kind, edge colours by sign and widths by weight, the axes."""

from __future__ import annotations

import html

KIND_STYLE = {   # colour, marker symbol
    "feature": ("#4c78a8", "circle"),
    "error": ("#9d9da1", "square-open"),
    "token": ("#54a24b", "diamond"),
    "logit": ("#f58518", "star"),
    "supernode": ("#b279a2", "hexagon"),
}
EDGE_COLOURS = {1: "rgba(31, 119, 180, 0.55)", -1: "rgba(214, 39, 40, 0.55)"}
EDGE_BINS = ((0.3, 3.2), (0.08, 1.6), (0.0, 0.6))    # (relative weight ≥, line width)
HIGHLIGHT_LINE = {"color": "rgba(20, 20, 20, 0.9)", "width": 2.5}
#: token and logit markers have a fixed size; others grow with influence
FIXED_SIZE, MIN_SIZE, SIZE_RANGE = 13.0, 6.0, 20.0
#: nodes sharing a (layer, position) cell spread across this share of a column
CELL_WIDTH = 0.8


def plotly_text(value) -> str:
    """``value`` as text in plotly's titles, ticks and hover labels, which read a little HTML:
    ``&``, ``<`` and ``>`` escaped (quotes are shown as they are)."""
    return html.escape(str(value), quote=False)


def axes(tokens: list[str], n_layers: int) -> dict:
    """Plotly axis settings: x = prompt position (ticks: the tokens), y = layer (tokens below, logits above).
    Tick texts are escaped (plotly reads tick text as a little HTML)."""
    return {
        "xaxis": {"tickvals": list(range(len(tokens))), "ticktext": [plotly_text(t) for t in tokens],
                  "tickangle": -45, "showgrid": True, "gridcolor": "#eeeeee", "zeroline": False,
                  "range": [-0.6, len(tokens) - 0.4]},
        "yaxis": {"tickvals": list(range(-1, n_layers + 1)),
                  "ticktext": ["tokens"] + [f"L{layer}" for layer in range(n_layers)] + ["logits"],
                  "showgrid": True, "gridcolor": "#eeeeee", "zeroline": False, "range": [-1.6, n_layers + 0.6]},
    }


def for_page() -> dict:
    """The same settings as JSON for the standalone page's script."""
    return {"kinds": {k: list(v) for k, v in KIND_STYLE.items()}, "bins": [list(b) for b in EDGE_BINS],
            "colours": {str(k): v for k, v in EDGE_COLOURS.items()}, "highlight": HIGHLIGHT_LINE,
            "sizes": [FIXED_SIZE, MIN_SIZE, SIZE_RANGE], "cell_width": CELL_WIDTH}
