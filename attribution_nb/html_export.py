"""A graph as one standalone HTML file: plotly's offline bundle, the graph as JSON, and a
few lines of JavaScript that prune it live when the sliders move.

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

import numpy as np

from .graph import AttributionGraph, edge_scores, entry_rows, mass_before

_JS = r"""
(function () {
  const G = JSON.parse(document.getElementById("anb-data").textContent);
  const div = document.getElementById("anb-plot");
  const nodeSlider = document.getElementById("anb-node"), edgeSlider = document.getElementById("anb-edge");
  const STYLE = {feature: ["#4c78a8", "circle"], error: ["#9d9da1", "square-open"],
                 token: ["#54a24b", "diamond"], logit: ["#f58518", "star"]};
  const BINS = [[0.3, 3.2], [0.08, 1.6], [0.0, 0.6]];
  const COLOURS = {"1": "rgba(31, 119, 180, 0.55)", "-1": "rgba(214, 39, 40, 0.55)"};
  const N = G.nodes.id.length, E = G.edges.s.length;
  let selected = null, last = null;

  function prune(nt, et) {
    const always = G.nodes.kind.map(k => k === "token" || k === "logit");
    let node = G.nodes.mb.map((mb, i) => always[i] || (nt > 0 && mb < nt));
    let edge = G.edges.mb.map(mb => et > 0 && mb < et);
    for (;;) {
      const hasIn = new Uint8Array(N), hasOut = new Uint8Array(N);
      for (let e = 0; e < E; e++) {
        edge[e] = edge[e] && node[G.edges.s[e]] && node[G.edges.t[e]];
        if (edge[e]) { hasIn[G.edges.t[e]] = 1; hasOut[G.edges.s[e]] = 1; }
      }
      let changed = false;
      for (let i = 0; i < N; i++) {
        const k = G.nodes.kind[i];
        const keep = always[i] || (k === "feature" && hasIn[i] && hasOut[i]) || (k === "error" && hasOut[i]);
        if (node[i] && !keep) { node[i] = false; changed = true; }
      }
      if (!changed) return {node, edge};
    }
  }

  function positions(keep) {
    const x = new Float64Array(N), cells = {};
    keep.forEach(i => {
      const key = G.nodes.layer[i] + ":" + G.nodes.position[i];
      (cells[key] = cells[key] || []).push(i);
      x[i] = G.nodes.position[i];
    });
    Object.values(cells).forEach(ids => {
      const order = k => G.nodes.kind[k] === "error" ? -1 : G.nodes.influence[k];
      ids.sort((a, b) => (order(b) - order(a)) || (a - b));
      if (ids.length > 1) ids.forEach((i, r) => { x[i] += -0.4 + 0.8 * r / (ids.length - 1); });
    });
    return x;
  }

  function segments(list, x) {
    const xs = [], ys = [];
    list.forEach(e => { xs.push(x[G.edges.s[e]], x[G.edges.t[e]], null);
                        ys.push(G.nodes.layer[G.edges.s[e]], G.nodes.layer[G.edges.t[e]], null); });
    return [xs, ys];
  }

  function draw() {
    const nt = parseFloat(nodeSlider.value), et = parseFloat(edgeSlider.value);
    document.getElementById("anb-node-value").textContent = nt.toFixed(2);
    document.getElementById("anb-edge-value").textContent = et.toFixed(2);
    const {node, edge} = prune(nt, et);
    const keep = [], edges = [];
    for (let i = 0; i < N; i++) if (node[i]) keep.push(i);
    for (let e = 0; e < E; e++) if (edge[e]) edges.push(e);
    const x = positions(keep);
    let maxInf = 1e-12, maxW = 1e-30;
    keep.forEach(i => { maxInf = Math.max(maxInf, G.nodes.influence[i]); });
    edges.forEach(e => { maxW = Math.max(maxW, Math.abs(G.edges.w[e])); });
    const traces = [];
    for (const sign of [1, -1]) {
      let lower = Infinity;
      for (const [floor, width] of BINS) {
        const sel = edges.filter(e => Math.sign(G.edges.w[e]) === sign &&
                                      Math.abs(G.edges.w[e]) / maxW >= floor && Math.abs(G.edges.w[e]) / maxW < lower);
        lower = floor;
        const [xs, ys] = segments(sel, x);
        traces.push({type: "scattergl", mode: "lines", x: xs, y: ys, hoverinfo: "skip", showlegend: false,
                     opacity: selected === null ? 1 : 0.25, line: {color: COLOURS[String(sign)], width: width}});
      }
    }
    const mine = selected === null ? [] : edges.filter(e => G.edges.s[e] === selected || G.edges.t[e] === selected);
    const [hx, hy] = segments(mine, x);
    traces.push({type: "scattergl", mode: "lines", x: hx, y: hy, hoverinfo: "skip", showlegend: false,
                 line: {color: "rgba(20, 20, 20, 0.9)", width: 2.5}});
    traces.push({type: "scattergl", mode: "markers", hoverinfo: "text", showlegend: false,
                 x: keep.map(i => x[i]), y: keep.map(i => G.nodes.layer[i]), customdata: keep,
                 text: keep.map(i => "<b>" + G.nodes.id[i] + "</b> (" + G.nodes.kind[i] + ")<br>influence " +
                                     G.nodes.influence[i].toPrecision(3) + (G.nodes.label[i] ? "<br>" + G.nodes.label[i] : "")),
                 marker: {size: keep.map(i => (G.nodes.kind[i] === "token" || G.nodes.kind[i] === "logit") ? 13 :
                                              6 + 20 * Math.sqrt(Math.max(G.nodes.influence[i], 0) / maxInf)),
                          color: keep.map(i => STYLE[G.nodes.kind[i]][0]), symbol: keep.map(i => STYLE[G.nodes.kind[i]][1]),
                          line: {width: keep.map(i => i === selected ? 3 : 1),
                                 color: keep.map(i => i === selected ? "#111111" : "white")}}});
    Plotly.react(div, traces, G.layout, {responsive: true});
    document.getElementById("anb-counts").textContent = keep.length + " nodes, " + edges.length + " edges drawn";
    div.dataset.nodes = keep.length; div.dataset.edges = edges.length;
    last = {keep, edges};
  }

  function panel(i) {
    const rows = (list, other) => list.slice(0, 6).map(e => "<tr><td>" + G.nodes.id[other(e)] + "</td><td>" +
                                   G.edges.w[e].toPrecision(3) + "</td></tr>").join("");
    const inc = last.edges.filter(e => G.edges.t[e] === i).sort((a, b) => Math.abs(G.edges.w[b]) - Math.abs(G.edges.w[a]));
    const out = last.edges.filter(e => G.edges.s[e] === i).sort((a, b) => Math.abs(G.edges.w[b]) - Math.abs(G.edges.w[a]));
    document.getElementById("anb-panel").innerHTML =
      "<h4>" + G.nodes.id[i] + "</h4><div>" + G.nodes.kind[i] + " · layer " + G.nodes.layer[i] + " · position " +
      G.nodes.position[i] + " (token " + JSON.stringify(G.nodes.token[i]) + ")<br>activation " +
      G.nodes.activation[i].toPrecision(4) + " · influence " + G.nodes.influence[i].toPrecision(4) +
      (G.nodes.label[i] ? "<br>label: <i>" + G.nodes.label[i] + "</i>" : "") + "</div>" +
      "<b>incoming (drawn)</b><table>" + rows(inc, e => G.edges.s[e]) + "</table>" +
      "<b>outgoing (drawn)</b><table>" + rows(out, e => G.edges.t[e]) + "</table>";
  }

  nodeSlider.addEventListener("input", draw);
  edgeSlider.addEventListener("input", draw);
  draw();
  div.on("plotly_click", ev => {
    const p = ev.points.find(q => q.customdata !== undefined);
    if (p) { selected = p.customdata; draw(); panel(selected); }
  });
})();
"""

_PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 16px; color: #222; }}
#anb-controls label {{ margin-right: 24px; }}
#anb-main {{ display: flex; gap: 12px; }}
#anb-plot {{ flex: 1; min-width: 600px; height: 620px; }}
#anb-panel {{ width: 360px; font-size: 13px; }}
#anb-panel table {{ border-collapse: collapse; margin-bottom: 8px; }}
#anb-panel td {{ padding: 1px 8px; border-bottom: 1px solid #eee; }}
</style>
<script>{plotly}</script>
</head><body>
<h3>{title}</h3>
<div id="anb-controls">
<label>node threshold <input id="anb-node" type="range" min="0" max="{max_node}" step="0.01" value="{node}">
<span id="anb-node-value"></span></label>
<label>edge threshold <input id="anb-edge" type="range" min="0" max="{max_edge}" step="0.01" value="{edge}">
<span id="anb-edge-value"></span></label>
<span id="anb-counts"></span>
</div>
<div id="anb-main"><div id="anb-plot"></div><div id="anb-panel"><i>Click a node for its panel.</i></div></div>
<p style="font-size:12px;color:#777">{footer}</p>
<script type="application/json" id="anb-data">{data}</script>
<script>{js}</script>
</body></html>
"""


def page_data(graph: AttributionGraph, max_node_threshold: float = 0.95, max_edge_threshold: float = 0.99) -> dict:
    """The JSON the page prunes: nodes and edges with their ranked shares (see module docstring)."""
    for name, v in (("max_node_threshold", max_node_threshold), ("max_edge_threshold", max_edge_threshold)):
        if not 0.0 < float(v) < 1.0:
            raise ValueError(f"{name} must be in (0, 1), got {v!r}")
    kinds = graph.kinds
    influence = graph.influence().numpy()
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
                  "label": [html.escape(str(x)) if isinstance(x, str) else "" for x in nodes.label],
                  "activation": fin(nodes.activation.to_numpy(dtype=float)),
                  "influence": fin(influence[embedded]), "mb": fin(node_mb[embedded])},
        "edges": {"s": new_index[m.indices[keep_e]].tolist(), "t": new_index[rows[keep_e]].tolist(),
                  "w": [float(x) for x in m.data[keep_e]], "mb": fin(edge_mb[keep_e])},
    }


def graph_to_html(graph: AttributionGraph, path: str | os.PathLike, *, node_threshold: float = 0.8,
                  edge_threshold: float = 0.98, max_node_threshold: float = 0.95, max_edge_threshold: float = 0.99,
                  title: str | None = None) -> str:
    """Write ``graph`` as a standalone HTML page with working sliders; returns the path."""
    from plotly.offline import get_plotlyjs

    for name, v, top in (("node_threshold", node_threshold, max_node_threshold),
                         ("edge_threshold", edge_threshold, max_edge_threshold)):
        if not isinstance(v, (int, float)) or not 0.0 <= v <= top:
            raise ValueError(f"{name} must be in [0, {top}], got {v!r}")
    data = page_data(graph, max_node_threshold, max_edge_threshold)
    data["layout"] = {
        "margin": {"l": 60, "r": 20, "t": 20, "b": 90}, "plot_bgcolor": "white", "hovermode": "closest",
        "dragmode": "pan",
        "xaxis": {"tickvals": list(range(len(graph.tokens))), "ticktext": [html.escape(t) for t in graph.tokens],
                  "tickangle": -45, "gridcolor": "#eeeeee", "zeroline": False, "range": [-0.6, len(graph.tokens) - 0.4]},
        "yaxis": {"tickvals": list(range(-1, graph.n_layers + 1)),
                  "ticktext": ["tokens"] + [f"L{l}" for l in range(graph.n_layers)] + ["logits"],
                  "gridcolor": "#eeeeee", "zeroline": False, "range": [-1.6, graph.n_layers + 0.6]},
    }
    text = _PAGE.format(
        title=html.escape(title or f"Attribution graph: {graph.prompt}"), plotly=get_plotlyjs(),
        node=node_threshold, edge=edge_threshold, max_node=max_node_threshold, max_edge=max_edge_threshold,
        footer=html.escape(f"{graph.model_name} · {len(graph.nodes)} nodes, {graph.n_edges} edges in the full graph · "
                           f"made with attribution_nb"),
        data=json.dumps(data).replace("</", "<\\/"), js=_JS)
    path = os.fspath(path)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)
    return path
