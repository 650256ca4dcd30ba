"""The notebook view of an attribution graph: a plotly ``FigureWidget`` inside ipywidgets.

``GraphWidget(graph, model)`` draws tokens at the bottom, one row per layer, logits on
top, and one column per prompt position.  Sliders re-prune the graph in place; clicking
a node opens its panel (label, activation, influence, strongest incoming and outgoing
edges, the tokens a feature promotes); with a model attached, buttons clamp the selected
feature and re-run the model.  Nodes can be grouped into named supernodes and drawn
collapsed; labels and supernodes are written into the graph (``graph.set_label``,
``graph.add_supernode``), so ``graph.save`` keeps them.

What is drawn comes from :mod:`.drawing` (pure functions), the panel from :mod:`.panel`, the
look from :mod:`.style` (shared with the standalone page), the CSS from ``static/widget.css``.
plotly and ipywidgets (the ``notebook`` extra) are imported when a widget is built.
"""

from __future__ import annotations

import html
import os
import time

import numpy as np
import pandas as pd

from ..graph import AttributionGraph
from . import style
from .drawing import _segments, draw_data, edge_segments, hover_texts
from .intervening import InterventionControls
from .panel import EMPTY, edge_tables, panel_html

N_EDGE_TRACES = 2 * len(style.EDGE_BINS)
HIGHLIGHT_TRACE = N_EDGE_TRACES          # edges of the selected node
NODE_TRACE = N_EDGE_TRACES + 1
_CSS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static", "widget.css")


def _figure(graph: AttributionGraph, height: int):
    import plotly.graph_objects as go
    traces = [go.Scattergl(x=[], y=[], mode="lines", hoverinfo="skip", showlegend=False,
                           line=dict(color=style.EDGE_COLOURS[sign], width=width))
              for sign in (1, -1) for _, width in style.EDGE_BINS]
    traces.append(go.Scattergl(x=[], y=[], mode="lines", hoverinfo="skip", showlegend=False,
                               line=style.HIGHLIGHT_LINE))
    traces.append(go.Scattergl(x=[], y=[], mode="markers", hoverinfo="text", showlegend=False,
                               marker=dict(line=dict(width=1, color="white"))))
    return go.FigureWidget(data=traces, layout=go.Layout(
        height=height, margin=dict(l=60, r=20, t=40, b=90), plot_bgcolor="white", dragmode="pan",
        title=dict(text=style.plotly_text(graph.prompt), font=dict(size=13)), hovermode="closest",
        **style.axes(graph.tokens, graph.n_layers)))


class GraphWidget(InterventionControls):
    """An interactive attribution graph for a notebook; show it by leaving it last in a cell.

    Args:
        graph: an :class:`AttributionGraph` (the full one: the sliders prune it).
        model: the :class:`ReplacementModel` it came from, to enable the clamp buttons and
            the top output tokens of features.
        node_threshold, edge_threshold: initial slider values.
    """

    def __init__(self, graph: AttributionGraph, model=None, *, node_threshold: float = 0.8,
                 edge_threshold: float = 0.98, height: int = 560):
        import ipywidgets as w
        if not isinstance(graph, AttributionGraph):
            raise TypeError(f"GraphWidget needs an AttributionGraph, got {type(graph).__name__}")
        self.graph, self.model = graph, model
        self._selected: str | None = None
        self._picked: list[str] = []
        self._interventions: dict = {}
        self._data: dict = {}
        self._hold = False
        self.timings: dict = {}
        self.last_result: pd.DataFrame | None = None
        self.last_generation: dict | None = None
        t0 = time.perf_counter()
        self.figure = _figure(graph, height)
        self.figure.data[NODE_TRACE].on_click(self._on_click)
        controls = self._controls(w, node_threshold, edge_threshold)
        side = w.VBox(self._intervention_box(w) + self._panel_box(w),
                      layout=w.Layout(width="440px", max_height=f"{height + 40}px", overflow_y="auto",
                                      padding="0 0 0 10px"))
        side.add_class("anb-side")
        with open(_CSS, encoding="utf-8") as f:
            css = w.HTML(f"<style>{f.read()}</style>")
        self.root = w.VBox([css, controls, self.status, w.HBox([self.figure, side])])
        self.root.add_class("anb-graph-widget")
        self.timings["build_s"] = time.perf_counter() - t0
        self.redraw()
        self.timings["first_draw_s"] = self.timings.pop("redraw_s")
        self.timings["build_s"] += self.timings["first_draw_s"]

    def _controls(self, w, node_threshold: float, edge_threshold: float):
        slider = dict(min=0.0, max=1.0, step=0.01, continuous_update=False, readout_format=".2f",
                      style={"description_width": "110px"}, layout=w.Layout(width="340px"))
        self.node_slider = w.FloatSlider(value=node_threshold, description="node threshold", **slider)
        self.edge_slider = w.FloatSlider(value=edge_threshold, description="edge threshold", **slider)
        self.collapse_box = w.Checkbox(value=False, description="collapse supernodes", indent=False)
        for control in (self.node_slider, self.edge_slider, self.collapse_box):
            control.observe(lambda _: self.redraw(), "value")
        self.status = w.HTML()
        self.status.add_class("anb-status")
        return w.HBox([self.node_slider, self.edge_slider, self.collapse_box])

    def _panel_box(self, w) -> list:
        self.panel = w.HTML(EMPTY)
        self.panel.add_class("anb-panel")
        self.label_text = w.Text(placeholder="label for the selected node", layout=w.Layout(width="220px"))
        self.label_button = w.Button(description="save label", layout=w.Layout(width="100px"))
        self.label_button.on_click(lambda _: self.set_label(self._selected, self.label_text.value))
        self.pick_button = w.Button(description="pick", tooltip="add the selected node to the group",
                                    layout=w.Layout(width="60px"))
        self.pick_button.on_click(lambda _: self.pick(self._selected))
        self.group_text = w.Text(placeholder="supernode name", layout=w.Layout(width="160px"))
        self.group_button = w.Button(description="group picked", layout=w.Layout(width="110px"))
        self.group_button.on_click(lambda _: self.group(self.group_text.value))
        self.picked_html = w.HTML()
        return [self.panel, w.HBox([self.label_text, self.label_button]),
                w.HBox([self.pick_button, self.group_text, self.group_button]), self.picked_html]

    # -- display ---------------------------------------------------------------------
    def _ipython_display_(self):
        from IPython.display import display
        display(self.root)

    def _repr_mimebundle_(self, **kwargs):
        return self.root._repr_mimebundle_(**kwargs)

    # -- state -----------------------------------------------------------------------
    @property
    def state(self) -> dict:
        """Selected node, thresholds, collapse flag, picked nodes, supernodes, pending clamps."""
        return {"selected": self._selected, "node_threshold": float(self.node_slider.value),
                "edge_threshold": float(self.edge_slider.value), "collapse": bool(self.collapse_box.value),
                "picked": list(self._picked), "supernodes": {k: list(v) for k, v in self.graph.supernodes.items()},
                "interventions": dict(self._interventions)}

    @state.setter
    def state(self, new: dict) -> None:
        unknown = set(new) - {"selected", "node_threshold", "edge_threshold", "collapse", "picked", "supernodes",
                              "interventions"}
        if unknown:
            raise KeyError(f"unknown state keys {sorted(unknown)}")
        with self.figure.batch_update():
            if "supernodes" in new:
                self.graph.supernodes = {}
                for name, members in new["supernodes"].items():
                    self.graph.add_supernode(name, members)
            if "interventions" in new:
                self._interventions = {}
                for node_id, how in new["interventions"].items():
                    self.clamp(node_id, how)
            if "picked" in new:
                self._picked = [nid for nid in new["picked"] if self.graph.index(nid) is not None]
            self._hold = True
            try:
                for key, box in (("node_threshold", self.node_slider), ("edge_threshold", self.edge_slider),
                                 ("collapse", self.collapse_box)):
                    if key in new:
                        box.value = new[key]
            finally:
                self._hold = False
            self.redraw()
            if "selected" in new:
                self.select(new["selected"])

    def close(self) -> None:
        """Close the widget's views and drop its callbacks (a closed widget is not shown again)."""
        self.figure.data[NODE_TRACE].on_click(None, append=False)
        for control in (self.node_slider, self.edge_slider, self.collapse_box):
            control.unobserve_all()
        for child in _descendants(self.root):
            child.close()
        self.figure.data = ()
        self.figure.close()
        _forget_hot_reload(self.figure)

    @property
    def drawn(self) -> dict:
        """What is on screen: numbers of nodes and edges, and the node ids."""
        return {"nodes": self._data["n_nodes"], "edges": self._data["n_edges"], "ids": list(self._data["ids"])}

    # -- drawing -----------------------------------------------------------------------
    def redraw(self) -> None:
        """Re-prune at the sliders' thresholds and redraw in place."""
        if self._hold:
            return
        t0 = time.perf_counter()
        data = draw_data(self.graph, self.node_slider.value, self.edge_slider.value, self.collapse_box.value)
        self._data = data
        segments = edge_segments(data)
        colours = [style.KIND_STYLE[k][0] for k in data["kinds"]]
        symbols = [style.KIND_STYLE[k][1] for k in data["kinds"]]
        with self.figure.batch_update():
            for i, (x, y) in enumerate(segments):
                self.figure.data[i].x, self.figure.data[i].y = x, y
            nodes = self.figure.data[NODE_TRACE]
            nodes.x, nodes.y = data["x"], data["y"]
            nodes.marker.size = data["size"]
            nodes.marker.color = colours
            nodes.marker.symbol = symbols
            nodes.hovertext = hover_texts(self.graph, data)
            nodes.customdata = list(data["ids"])
            self._highlight()
        self.status.value = (f"<span class='anb-counts'>{data['n_nodes']} nodes, {data['n_edges']} edges drawn</span>"
                             f" · of {len(self.graph.nodes)} nodes, {self.graph.n_edges} edges · "
                             f"click a node for its panel")
        self.timings["redraw_s"] = time.perf_counter() - t0

    def _highlight(self) -> None:
        data, fig = self._data, self.figure
        sel = self._selected
        idx = np.flatnonzero(data["ids"] == sel) if sel is not None else np.array([], dtype=int)
        if len(idx):
            j = int(idx[0])
            which = (data["source"] == j) | (data["target"] == j)
            x, y = _segments(data, data["source"][which], data["target"][which])
        else:
            x, y = np.array([]), np.array([])
        fig.data[HIGHLIGHT_TRACE].x, fig.data[HIGHLIGHT_TRACE].y = x, y
        opacity = 0.25 if len(idx) else 1.0
        for i in range(N_EDGE_TRACES):
            fig.data[i].opacity = opacity
        line_widths = np.zeros(data["n_nodes"])
        if len(idx):
            line_widths[int(idx[0])] = 3
        fig.data[NODE_TRACE].marker.line.width = line_widths
        fig.data[NODE_TRACE].marker.line.color = ["#111111" if lw else "white" for lw in line_widths]

    # -- selection and the panel ------------------------------------------------------
    def _on_click(self, trace, points, selector) -> None:
        if points.point_inds:
            self.select(str(self._data["ids"][points.point_inds[0]]))

    def edge_tables(self, node_id: str, k: int = 5) -> dict[str, pd.DataFrame]:
        """Strongest incoming and outgoing edges of a node in the full graph, by sign."""
        return edge_tables(self.graph, node_id, k)

    def select(self, node_id: str | None) -> None:
        """Select a node (or a drawn supernode ``"s:<name>"``) and fill the panel; None clears."""
        if node_id is not None and not node_id.startswith("s:"):
            self.graph.index(node_id)   # raises for an unknown id
        self._selected = node_id
        with self.figure.batch_update():
            self._highlight()
        self.panel.value = panel_html(self.graph, self.model, node_id)
        if node_id is not None and not node_id.startswith("s:"):
            self.label_text.value = str(self.graph.node(node_id).label or "")

    # -- labels and supernodes -------------------------------------------------------------
    def set_label(self, node_id: str | None, label: str) -> None:
        if node_id is None or node_id.startswith("s:"):
            return
        self.graph.set_label(node_id, label)
        self.redraw()
        self.panel.value = panel_html(self.graph, self.model, node_id)

    def pick(self, node_id: str | None) -> None:
        if node_id is not None and not node_id.startswith("s:") and node_id not in self._picked:
            self._picked.append(node_id)
        self.picked_html.value = "picked: " + (", ".join(html.escape(p) for p in self._picked) or "<i>none</i>")

    def group(self, name: str) -> None:
        """Name the picked nodes as a supernode (kept in ``graph.supernodes``)."""
        if not self._picked:
            raise ValueError("pick some nodes first (select a node, press 'pick')")
        self.graph.add_supernode(name, self._picked)
        self._picked = []
        self.pick(None)
        self.redraw()


def _descendants(box) -> list:
    """Every widget inside ``box`` (itself last)."""
    out = []
    for child in getattr(box, "children", ()):
        out += _descendants(child)
    return out + [box]


def _forget_hot_reload(figure) -> None:
    """anywidget connects every widget to its class's front-end source file (psygnal's ``changed``
    signal, for hot reload) and never disconnects it, so a closed figure would stay alive: disconnect
    the callbacks that hold this figure.  (psygnal and anywidget internals; a no-op if they change.)"""
    for cls in type(figure).__mro__:
        for key in ("_esm", "_css"):
            changed = getattr(cls.__dict__.get(key), "changed", None)
            if changed is None:
                continue
            for slot in list(getattr(changed, "_slots", ())):
                fn = slot.dereference() if hasattr(slot, "dereference") else None
                if any(getattr(c, "cell_contents", None) is figure for c in getattr(fn, "__closure__", None) or ()):
                    changed.disconnect(fn)
