// The plotly traces of the graph: edges binned by weight and sign, the highlight of one node's
// edges, the legend, and the node markers with their hover text.
import {esc} from "./dom.js";
import {nameOf} from "./state.js";

// SVG while few are drawn (crisp, exports as vector, no WebGL to start: the first draw is fast
// even where WebGL runs on the CPU); WebGL for many (SVG slows past a few thousand edges)
const traceType = (n, limit) => (n > limit ? "scattergl" : "scatter");

// the edges in bins of |weight| (weakest first, so the strongest lie on top), by sign
export function edgeTraces(S, list, x, y, faded) {
  const maxW = list.reduce((m, e) => Math.max(m, Math.abs(e.w)), 1e-30);
  const out = [];
  S.bins
    .slice()
    .reverse()
    .forEach(([floor, width], b, bins) => {
      const ceiling = b + 1 < bins.length ? bins[b + 1][0] : Infinity;
      for (const sign of [1, -1]) {
        const xs = [],
          ys = [];
        list.forEach(e => {
          const r = Math.abs(e.w) / maxW;
          if (Math.sign(e.w) === sign && r >= floor && r < ceiling) {
            xs.push(x[e.s], x[e.t], null);
            ys.push(y[e.s], y[e.t], null);
          }
        });
        out.push({
          type: traceType(list.length, S.svg_edges),
          mode: "lines",
          x: xs,
          y: ys,
          hoverinfo: "skip",
          showlegend: false,
          opacity: faded ? 0.22 : 1,
          line: {color: S.colours[String(sign)], width},
        });
      }
    });
  return out;
}

// two traces (excites, inhibits) of drawn node j's edges, empty for none
export function highlight(st, j) {
  const xs = {1: [], "-1": []},
    ys = {1: [], "-1": []},
    v = st.view;
  if (v && j !== null && j !== undefined) {
    v.edges.forEach(e => {
      if (e.s !== j && e.t !== j) return;
      const k = e.w > 0 ? 1 : -1;
      xs[k].push(v.x[e.s], v.x[e.t], null);
      ys[k].push(v.y[e.s], v.y[e.t], null);
    });
  }
  return [1, -1].map(k => ({
    type: "scatter",
    mode: "lines",
    x: xs[k],
    y: ys[k],
    hoverinfo: "skip",
    showlegend: false,
    line: {color: st.S.strong[String(k)], width: 2.6},
  }));
}

export function legend(st) {
  const {S, KIND} = st;
  const items = [
    ["feature", "feature"],
    ["error", "error (residual)"],
    ["token", "token"],
    ["logit", "logit"],
  ];
  if (Object.keys(st.host.get("supernodes")).length) items.push(["supernode", "supernode"]);
  const out = items.map(([k, name]) => ({
    type: "scatter",
    mode: "markers",
    x: [null],
    y: [null],
    name,
    hoverinfo: "skip",
    marker: {color: KIND[k][0], symbol: KIND[k][1], size: 10},
  }));
  const line = (name, color, width) => ({
    type: "scatter",
    mode: "lines",
    x: [null],
    y: [null],
    name,
    line: {color, width},
  });
  out.push(
    line("excites", S.strong["1"], 3),
    line("inhibits", S.strong["-1"], 3),
    line("width ∝ |weight|", "rgba(120,120,120,0.6)", 1),
  );
  return out;
}

function hoverText(st, d) {
  const G = st.G;
  let t = "<b>" + esc(nameOf(st, d)) + "</b> · " + esc(d.kind);
  if (d.index < 0) return t + "<br>" + d.members.length + " nodes · influence " + d.influence.toPrecision(3);
  const i = d.index;
  t += "<br>" + esc(d.id) + "<br>token " + esc(JSON.stringify(G.nodes.token[i]));
  if (d.kind === "logit") t += " · probability " + G.nodes.probability[i].toFixed(3);
  else if (d.kind !== "token") {
    t +=
      " · activation " +
      G.nodes.activation[i].toPrecision(3) +
      " · influence " +
      G.nodes.influence[i].toPrecision(3);
  }
  return t;
}

// the node markers: size by influence, ring on the selected and pinned nodes
export function nodeTrace(st, D, x, y, sel) {
  const {S, KIND} = st,
    pinned = new Set(st.host.get("pinned")),
    [FIXED, MIN, RANGE] = S.sizes;
  const fixed = d => d.kind === "token" || d.kind === "logit";
  const maxInf = D.reduce((m, d) => (fixed(d) ? m : Math.max(m, d.influence)), 1e-12);
  return {
    type: traceType(D.length, S.svg_nodes),
    mode: "markers",
    hoverinfo: "text",
    showlegend: false,
    x: Array.from(x),
    y: Array.from(y),
    customdata: D.map(d => d.id),
    hovertext: D.map(d => hoverText(st, d)),
    marker: {
      size: D.map(d => (fixed(d) ? FIXED : MIN + RANGE * Math.sqrt(d.influence / maxInf))),
      color: D.map(d => KIND[d.kind][0]),
      symbol: D.map(d => KIND[d.kind][1]),
      opacity: 0.95,
      line: {
        width: D.map((d, j) => (j === sel ? 3 : pinned.has(d.id) ? 2.5 : 1)),
        color: D.map((d, j) => (j === sel ? "#111" : pinned.has(d.id) ? "#e45756" : "white")),
      },
    },
  };
}
