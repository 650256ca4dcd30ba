"""The notebook view of an attribution graph: a plotly ``FigureWidget`` inside ipywidgets.

``GraphWidget(graph, model)`` draws tokens at the bottom, one row per layer, logits on
top, and one column per prompt position.  Sliders re-prune the graph in place; clicking
a node opens its panel (label, activation, influence, strongest incoming and outgoing
edges, the tokens a feature promotes); with a model attached, buttons clamp the selected
feature and re-run the model.  Nodes can be grouped into named supernodes and drawn
collapsed; labels and supernodes are written into the graph, so ``graph.save`` keeps them.

The drawing is computed by :func:`draw_data`, a pure function of the graph and the
thresholds, which the tests check against :func:`~attribution_nb.graph.prune_masks`.
"""

from __future__ import annotations

import html
import time

import numpy as np
import pandas as pd

from .graph import AttributionGraph, entry_rows

KIND_STYLE = {   # colour, marker symbol
    "feature": ("#4c78a8", "circle"),
    "error": ("#9d9da1", "square-open"),
    "token": ("#54a24b", "diamond"),
    "logit": ("#f58518", "star"),
    "supernode": ("#b279a2", "hexagon"),
}
EDGE_COLOURS = {1: "rgba(31, 119, 180, 0.55)", -1: "rgba(214, 39, 40, 0.55)"}
EDGE_BINS = ((0.3, 3.2), (0.08, 1.6), (0.0, 0.6))    # (relative weight ≥, line width)
N_EDGE_TRACES = 2 * len(EDGE_BINS)
HIGHLIGHT_TRACE = N_EDGE_TRACES          # edges of the selected node
NODE_TRACE = N_EDGE_TRACES + 1


def cell_positions(layers: np.ndarray, positions: np.ndarray, order_key: np.ndarray, width: float = 0.8) -> np.ndarray:
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
    node_mask, edge_mask = node_mask.numpy(), edge_mask.numpy()
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
        group = np.arange(len(ids))
        extra = []
        member_of = {nid: name for name, members in graph.supernodes.items() for nid in members}
        names = [name for name, members in graph.supernodes.items() if any(n in set(ids) for n in members)]
        for g, name in enumerate(names):
            members = [j for j, nid in enumerate(ids) if member_of.get(nid) == name]
            group[members] = len(ids) + g
            extra.append((name, members))
        new_index = {}
        out_ids, out_kinds, out_x, out_y, out_infl, out_labels = [], [], [], [], [], []
        for j in range(len(ids)):
            if group[j] == j:
                new_index[j] = len(out_ids)
                out_ids.append(ids[j]); out_kinds.append(kinds[j]); out_x.append(xs[j]); out_y.append(ys[j])
                out_infl.append(influence[j]); out_labels.append(labels[j])
        for name, members in extra:
            k = len(out_ids)
            for j in members:
                new_index[j] = k
            out_ids.append(f"s:{name}"); out_kinds.append("supernode"); out_x.append(float(np.mean(xs[members])))
            out_y.append(float(np.mean(ys[members]))); out_infl.append(float(influence[members].sum()))
            out_labels.append(f"{name} ({len(members)} nodes)")
        s2 = np.array([new_index[j] for j in src], dtype=np.int64)
        t2 = np.array([new_index[j] for j in tgt], dtype=np.int64)
        agg = pd.DataFrame({"s": s2, "t": t2, "w": weights})
        agg = agg[agg.s != agg.t].groupby(["s", "t"], as_index=False)["w"].sum()
        src, tgt, weights = agg.s.to_numpy(), agg.t.to_numpy(), agg.w.to_numpy()
        ids, kinds = np.array(out_ids, dtype=object), np.array(out_kinds, dtype=object)
        xs, ys, influence = np.array(out_x), np.array(out_y), np.array(out_infl)
        labels = np.array(out_labels, dtype=object)

    top = max(float(influence.max()) if len(influence) else 0.0, 1e-12)
    sizes = np.where(np.isin(kinds, ("token", "logit")), 13.0, 6.0 + 20.0 * np.sqrt(np.clip(influence, 0, None) / top))
    return {"ids": ids, "kinds": kinds, "x": xs, "y": ys, "size": sizes, "influence": influence, "labels": labels,
            "source": src, "target": tgt, "weight": weights, "n_nodes": len(ids), "n_edges": len(weights)}


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
        head = f"<b>{html.escape(str(nid))}</b> ({kind})"
        if kind != "supernode":
            n = graph.node(nid)
            head += f"<br>token {html.escape(repr(n.token))} · activation {n.activation:.3g}"
        head += f"<br>influence {infl:.3g}"
        if label:
            head += f"<br>{html.escape(str(label))}"
        out.append(head)
    return out


def _table_html(df: pd.DataFrame, title: str) -> str:
    if df.empty:
        return f"<div class='anb-table'><b>{title}</b><br><i>none</i></div>"
    return (f"<div class='anb-table'><b>{title}</b>"
            + df.to_html(index=False, border=0, float_format=lambda v: f"{v:.3g}", escape=True) + "</div>")


_CSS = """<style>
.anb-graph-widget .anb-tables { display: grid; grid-template-columns: 1fr 1fr; gap: 2px 10px; }
.anb-graph-widget .anb-table, .anb-graph-widget .anb-run { font-size: 11.5px; line-height: 1.25; }
.anb-graph-widget .anb-table table, .anb-graph-widget .anb-run table { border-collapse: collapse; }
.anb-graph-widget .anb-table td, .anb-graph-widget .anb-table th,
.anb-graph-widget .anb-run td, .anb-graph-widget .anb-run th { padding: 0 6px 0 0; text-align: left; }
.anb-graph-widget .anb-node-title { margin: 4px 0; }
.anb-graph-widget .anb-side > * { flex-shrink: 0; }
.anb-graph-widget .anb-pending ul { margin: 2px 0; padding-left: 18px; }
</style>"""


class GraphWidget:
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
        import plotly.graph_objects as go

        if not isinstance(graph, AttributionGraph):
            raise TypeError(f"GraphWidget needs an AttributionGraph, got {type(graph).__name__}")
        self.graph, self.model = graph, model
        self._selected: str | None = None
        self._picked: list[str] = []
        self._interventions: dict = {}
        self._data: dict = {}
        self.timings: dict = {}
        self.last_result: pd.DataFrame | None = None
        self.last_generation: dict | None = None

        t0 = time.perf_counter()
        traces = []
        for sign in (1, -1):
            for _, width in EDGE_BINS:
                traces.append(go.Scattergl(x=[], y=[], mode="lines", hoverinfo="skip", showlegend=False,
                                           line=dict(color=EDGE_COLOURS[sign], width=width)))
        traces.append(go.Scattergl(x=[], y=[], mode="lines", hoverinfo="skip", showlegend=False,
                                   line=dict(color="rgba(20, 20, 20, 0.9)", width=2.5)))
        traces.append(go.Scattergl(x=[], y=[], mode="markers", hoverinfo="text", showlegend=False,
                                   marker=dict(line=dict(width=1, color="white"))))
        tick_vals = list(range(len(graph.tokens)))
        self.figure = go.FigureWidget(data=traces, layout=go.Layout(
            height=height, margin=dict(l=60, r=20, t=40, b=90), plot_bgcolor="white", dragmode="pan",
            title=dict(text=html.escape(graph.prompt), font=dict(size=13)), hovermode="closest",
            xaxis=dict(tickvals=tick_vals, ticktext=[html.escape(t) for t in graph.tokens], tickangle=-45,
                       showgrid=True, gridcolor="#eeeeee", zeroline=False, range=[-0.6, len(graph.tokens) - 0.4]),
            yaxis=dict(tickvals=list(range(-1, graph.n_layers + 1)),
                       ticktext=["tokens"] + [f"L{l}" for l in range(graph.n_layers)] + ["logits"],
                       showgrid=True, gridcolor="#eeeeee", zeroline=False, range=[-1.6, graph.n_layers + 0.6])))
        self.figure.data[NODE_TRACE].on_click(self._on_click)

        slider = dict(min=0.0, max=1.0, step=0.01, continuous_update=False, readout_format=".2f",
                      style={"description_width": "110px"}, layout=w.Layout(width="340px"))
        self.node_slider = w.FloatSlider(value=node_threshold, description="node threshold", **slider)
        self.edge_slider = w.FloatSlider(value=edge_threshold, description="edge threshold", **slider)
        self.node_slider.observe(lambda _: self.redraw(), "value")
        self.edge_slider.observe(lambda _: self.redraw(), "value")
        self.collapse_box = w.Checkbox(value=False, description="collapse supernodes", indent=False)
        self.collapse_box.observe(lambda _: self.redraw(), "value")
        self.status = w.HTML()
        self.status.add_class("anb-status")

        # panel: the selected node
        self.panel = w.HTML("<i>Click a node to see its edges.</i>")
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

        # interventions first (short), then the node's panel (long), then labels and groups
        children = []
        if model is not None:
            b = dict(layout=w.Layout(width="70px"))
            self.ablate_button = w.Button(description="ablate", **b)
            self.inhibit_button = w.Button(description="−2×", **b)
            self.amplify_button = w.Button(description="2×", **b)
            self.value_slider = w.FloatSlider(value=0.0, min=-10.0, max=10.0, step=0.1, description="value",
                                              continuous_update=False, layout=w.Layout(width="260px"),
                                              style={"description_width": "45px"})
            self.set_button = w.Button(description="set", **b)
            self.mode = w.ToggleButtons(options=["free", "frozen"], value="free",
                                        tooltips=["a normal forward pass with the clamp",
                                                  "attention, norms and other features fixed: direct effects"],
                                        style={"button_width": "64px"})
            self.run_button = w.Button(description="run", button_style="primary", **b)
            self.reset_button = w.Button(description="reset", **b)
            self.result = w.HTML()
            self.result.add_class("anb-result")
            self.ablate_button.on_click(lambda _: self.clamp(self._selected, "ablate"))
            self.inhibit_button.on_click(lambda _: self.clamp(self._selected, "-2x"))
            self.amplify_button.on_click(lambda _: self.clamp(self._selected, "2x"))
            self.set_button.on_click(lambda _: self.clamp(self._selected, float(self.value_slider.value)))
            self.run_button.on_click(lambda _: self.run())
            self.reset_button.on_click(lambda _: self.reset())
            children += [w.HTML("<b>Intervene on the selected feature</b>"),
                         w.HBox([self.ablate_button, self.inhibit_button, self.amplify_button, self.set_button]),
                         self.value_slider, w.HBox([self.mode, self.run_button, self.reset_button]), self.result]
        children += [self.panel, w.HBox([self.label_text, self.label_button]),
                     w.HBox([self.pick_button, self.group_text, self.group_button]), self.picked_html]
        side = w.VBox(children, layout=w.Layout(width="440px", max_height=f"{height + 40}px", overflow_y="auto",
                                                padding="0 0 0 10px"))
        side.add_class("anb-side")
        controls = w.HBox([self.node_slider, self.edge_slider, self.collapse_box])
        self.root = w.VBox([w.HTML(_CSS), controls, self.status, w.HBox([self.figure, side])])
        self.root.add_class("anb-graph-widget")
        self.timings["build_s"] = time.perf_counter() - t0
        self.redraw()
        self.timings["first_draw_s"] = self.timings.pop("redraw_s")
        self.timings["build_s"] += self.timings["first_draw_s"]

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
        unknown = set(new) - {"selected", "node_threshold", "edge_threshold", "collapse", "picked", "supernodes"}
        if unknown:
            raise KeyError(f"unknown state keys {sorted(unknown)}")
        with self.figure.batch_update():
            if "supernodes" in new:
                for name, members in new["supernodes"].items():
                    for nid in members:
                        self.graph.index(nid)
                self.graph.supernodes = {k: list(v) for k, v in new["supernodes"].items()}
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

    @property
    def drawn(self) -> dict:
        """What is on screen: numbers of nodes and edges, and the node ids."""
        return {"nodes": self._data["n_nodes"], "edges": self._data["n_edges"], "ids": list(self._data["ids"])}

    # -- drawing -----------------------------------------------------------------------
    def redraw(self) -> None:
        """Re-prune at the sliders' thresholds and redraw in place."""
        if getattr(self, "_hold", False):
            return
        t0 = time.perf_counter()
        data = draw_data(self.graph, self.node_slider.value, self.edge_slider.value, self.collapse_box.value)
        self._data = data
        segments = edge_segments(data)
        colours = [KIND_STYLE[k][0] for k in data["kinds"]]
        symbols = [KIND_STYLE[k][1] for k in data["kinds"]]
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

    def select(self, node_id: str | None) -> None:
        """Select a node (or a drawn supernode ``"s:<name>"``) and fill the panel; None clears."""
        if node_id is not None and not node_id.startswith("s:"):
            self.graph.index(node_id)   # raises for an unknown id
        self._selected = node_id
        with self.figure.batch_update():
            self._highlight()
        self.panel.value = self.panel_html(node_id)
        if node_id is not None and not node_id.startswith("s:"):
            self.label_text.value = str(self.graph.node(node_id).label or "")

    def edge_tables(self, node_id: str, k: int = 5) -> dict[str, pd.DataFrame]:
        """Strongest incoming and outgoing edges of a node in the full graph, by sign."""
        g = self.graph
        i = g.index(node_id)
        m = g.sparse_adjacency
        ids = g.nodes["node_id"].to_numpy()
        a, b = m.indptr[i], m.indptr[i + 1]
        incoming = pd.DataFrame({"source": ids[m.indices[a:b]], "weight": m.data[a:b].astype(np.float64)})
        col = m[:, [i]].tocoo()
        outgoing = pd.DataFrame({"target": ids[col.coords[0]], "weight": col.data.astype(np.float64)})
        out = {}
        for name, df in (("incoming", incoming), ("outgoing", outgoing)):
            out[f"{name} +"] = df[df.weight > 0].nlargest(k, "weight").reset_index(drop=True)
            out[f"{name} −"] = df[df.weight < 0].nsmallest(k, "weight").reset_index(drop=True)
        return out

    def panel_html(self, node_id: str | None) -> str:
        if node_id is None:
            return "<i>Click a node to see its edges.</i>"
        if node_id.startswith("s:"):
            name = node_id[2:]
            members = self.graph.supernodes.get(name, [])
            return (f"<h4>supernode {html.escape(name)}</h4><div>{len(members)} nodes: "
                    + ", ".join(html.escape(m) for m in members) + "</div>")
        n = self.graph.node(node_id)
        parts = [f"<h4 class='anb-node-title'>{html.escape(node_id)}</h4>",
                 f"<div><b>{n.kind}</b> · layer {n.layer} · position {n.position} "
                 f"(token {html.escape(repr(n.token))})<br>activation {n.activation:.4g} · "
                 f"influence {n.influence:.4g}"
                 + (f"<br>label: <i>{html.escape(str(n.label))}</i>" if n.label else "") + "</div>"]
        tables = self.edge_tables(node_id)
        parts.append("<div class='anb-tables'>" + "".join(_table_html(df, name) for name, df in tables.items()) + "</div>")
        if n.kind == "feature" and self.model is not None:
            top = self.model.feature_top_tokens(int(n.layer), int(n.feature), k=6)
            parts.append(_table_html(top, "promotes (decoder · unembedding)"))
            contexts = self.model.feature_contexts.get((int(n.layer), int(n.feature)), [])[:5]
            if contexts:
                parts.append(_table_html(pd.DataFrame(contexts, columns=["top-activating context", "activation"]),
                                         "where it fires most"))
        return "".join(parts)

    # -- labels and supernodes -------------------------------------------------------------
    def set_label(self, node_id: str | None, label: str) -> None:
        if node_id is None or node_id.startswith("s:"):
            return
        self.graph.nodes.loc[self.graph.index(node_id), "label"] = label
        self.redraw()
        self.panel.value = self.panel_html(node_id)

    def pick(self, node_id: str | None) -> None:
        if node_id is not None and not node_id.startswith("s:") and node_id not in self._picked:
            self._picked.append(node_id)
        self.picked_html.value = "picked: " + (", ".join(html.escape(p) for p in self._picked) or "<i>none</i>")

    def group(self, name: str) -> None:
        """Name the picked nodes as a supernode (kept in ``graph.supernodes``)."""
        name = (name or "").strip()
        if not name:
            raise ValueError("a supernode needs a name")
        if not self._picked:
            raise ValueError("pick some nodes first (select a node, press 'pick')")
        self.graph.supernodes[name] = list(self._picked)
        self._picked = []
        self.pick(None)
        self.redraw()

    # -- interventions -----------------------------------------------------------------------
    def clamp(self, node_id: str | None, how) -> None:
        """Queue an intervention on a feature: ``"ablate"``, ``"-2x"``, ``"2x"`` or a value."""
        from .interventions import Multiply
        if self.model is None:
            raise ValueError("this widget has no model: GraphWidget(graph, model) enables interventions")
        if node_id is None:
            raise ValueError("select a feature first")
        kind = self.graph.node(node_id).kind
        if kind not in ("feature", "error"):
            raise ValueError(f"{node_id} is a {kind} node; only features and error nodes can be clamped")
        self._interventions[node_id] = {"ablate": 0.0, "-2x": Multiply(-2.0), "2x": Multiply(2.0)}.get(how, how)
        self.result.value = self._pending_html()

    def _pending_html(self) -> str:
        if not self._interventions:
            return "<i>no interventions</i>"
        items = "".join(f"<li>{html.escape(k)} → {html.escape(str(v))}</li>" for k, v in self._interventions.items())
        return f"<div class='anb-pending'><b>pending</b><ul>{items}</ul></div>"

    def run(self, max_new_tokens: int = 6) -> pd.DataFrame:
        """Run the model with the queued interventions; show before/after probabilities and
        a greedy continuation."""
        if self.model is None:
            raise ValueError("this widget has no model: GraphWidget(graph, model) enables interventions")
        mode = self.mode.value
        table = self.model.intervene(self.graph.prompt, self._interventions, mode=mode, top_k=5)
        gen = self.model.generate(self.graph.prompt, self._interventions, max_new_tokens=max_new_tokens)
        self.last_result, self.last_generation = table, gen
        shown = table.head(8)[["token", "p_before", "p_after", "p_change"]]
        self.result.value = (self._pending_html() + f"<div class='anb-run'><b>{mode} run</b>"
                             + shown.to_html(index=False, border=0, float_format=lambda v: f"{v:.3f}",
                                             classes="anb-before-after")
                             + f"<div>before: …{html.escape(gen['before'])}<br>after: …{html.escape(gen['after'])}"
                             f"</div></div>")
        return table

    def reset(self) -> None:
        self._interventions = {}
        self.last_result = self.last_generation = None
        self.result.value = self._pending_html()
