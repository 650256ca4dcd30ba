// The plot: prune at the host's thresholds, lay the drawn nodes out, and hand plotly the traces
// (traces.js) and the names (names.js); restyle the highlight of a hovered or selected node.
import {esc} from "./dom.js";
import {layout, layerTicks} from "./layout.js";
import {placeLabels} from "./names.js";
import {drawnNodes} from "./prune.js";
import {pruned} from "./state.js";
import {edgeTraces, highlight, legend, nodeTrace} from "./traces.js";

function plotLayout(st, D, x, y, centre, range) {
  const G = st.G;
  return {
    margin: {l: 56, r: 12, t: 34, b: 78},
    plot_bgcolor: "white",
    paper_bgcolor: "white",
    hovermode: "closest",
    dragmode: "pan",
    autosize: true,
    showlegend: true,
    uirevision: "keep",
    annotations: placeLabels(st, D, x, y, range),
    legend: {
      orientation: "h",
      x: 0,
      y: 1.0,
      yanchor: "bottom",
      font: {size: 11},
      itemclick: false,
      itemdoubleclick: false,
    },
    xaxis: {
      tickvals: centre,
      ticktext: G.tokens.map(esc),
      tickangle: G.tokens.length > 8 ? -40 : 0,
      tickfont: {size: 12},
      showgrid: true,
      gridcolor: "#eeeeee",
      zeroline: false,
      range,
    },
    yaxis: {
      ...layerTicks(G),
      showgrid: true,
      gridcolor: "#eeeeee",
      zeroline: false,
      range: [-1.6, G.n_layers + 0.7],
      fixedrange: false,
    },
  };
}

// prune at the host's thresholds, lay out, draw; then the panel
export function draw(st) {
  const t0 = performance.now(),
    {host, dom} = st;
  const {node, edge} = pruned(st);
  const {D, edges} = drawnNodes(st.G, node, edge, host.get("collapse") ? host.get("supernodes") : {});
  const {x, y, centre, range} = layout(st.G, st.S, D);
  st.view = {D, edges, x, y, range, ids: new Map(D.map((d, j) => [d.id, j]))};
  const sel = st.view.ids.get(host.get("selected"));
  const traces = edgeTraces(st.S, edges, x, y, sel !== undefined).concat(highlight(st, sel), legend(st), [
    nodeTrace(st, D, x, y, sel),
  ]);
  st.Plotly.react(dom.plot, traces, plotLayout(st, D, x, y, centre, range), {
    responsive: true,
    scrollZoom: true,
    displaylogo: false,
    modeBarButtonsToRemove: ["select2d", "lasso2d"],
  });
  dom.counts.textContent = D.length + " nodes, " + edges.length + " edges drawn";
  st.root.dataset.nodes = D.length;
  st.root.dataset.edges = edges.length;
  st.root.dataset.drawMs = (performance.now() - t0).toFixed(1);
  st.showPanel();
}

// place the names again (after plotly has measured the axes, or a resize)
export function placeAgain(st) {
  const v = st.view;
  if (v) st.Plotly.relayout(st.dom.plot, {annotations: placeLabels(st, v.D, v.x, v.y, v.range)});
}

// highlight drawn node j's edges and fade the rest (j null: none)
export function restyleHighlight(st, j) {
  if (!st.view) return;
  const h = highlight(st, j),
    base = 2 * st.S.bins.length,
    plot = st.dom.plot;
  st.Plotly.restyle(plot, {x: h.map(t => t.x), y: h.map(t => t.y)}, [base, base + 1]);
  const faded = j !== undefined && j !== null;
  st.Plotly.restyle(
    plot,
    {opacity: faded ? 0.22 : 1},
    Array.from({length: base}, (_, k) => k),
  );
}
