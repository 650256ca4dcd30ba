// The pinned nodes and supernodes laid out alone (one column each, by position then layer),
// with the graph's edges between them summed, for a paper or a slide: SVG and PNG export.
import {button, el, esc} from "./dom.js";
import {isFixed} from "./prune.js";
import {labelsOf} from "./state.js";
import {layerTicks} from "./layout.js";

// the boxes drawn: one per supernode (all its members) and one per other pinned node
function boxes(st) {
  const {G, host} = st,
    groups = host.get("supernodes"),
    owner = new Map();
  Object.entries(groups).forEach(([name, members]) => members.forEach(id => owner.set(id, name)));
  const chosen = new Set(host.get("pinned"));
  Object.values(groups).forEach(members => members.forEach(id => chosen.add(id)));
  const found = new Map();
  chosen.forEach(id => {
    const i = st.index.get(id);
    if (i === undefined) return;
    const key = owner.has(id) ? "s:" + owner.get(id) : id;
    if (!found.has(key))
      found.set(key, {
        key,
        name: owner.has(id) ? owner.get(id) : labelsOf(st)[id] || G.nodes.name[i],
        members: [],
      });
    found.get(key).members.push(i);
  });
  const B = Array.from(found.values());
  const rowOf = i => (isFixed(G, i) ? (G.nodes.kind[i] === "token" ? -1 : G.n_layers) : G.nodes.layer[i]);
  B.forEach(b => {
    b.layer = b.members.reduce((s, i) => s + rowOf(i), 0) / b.members.length;
    b.position = b.members.reduce((s, i) => s + G.nodes.position[i], 0) / b.members.length;
  });
  B.map((b, k) => k)
    .sort((a, b) => B[a].position - B[b].position || B[a].layer - B[b].layer)
    .forEach((k, r) => {
      B[k].x = r;
    });
  return B;
}

function summedEdges(G, B) {
  const at = new Map(),
    sums = new Map();
  B.forEach((b, k) => b.members.forEach(i => at.set(i, k)));
  for (let e = 0; e < G.edges.s.length; e++) {
    const s = at.get(G.edges.s[e]),
      t = at.get(G.edges.t[e]);
    if (s === undefined || t === undefined || s === t) continue;
    sums.set(s + ":" + t, (sums.get(s + ":" + t) || 0) + G.edges.w[e]);
  }
  return sums;
}

function traces(st, B, sums) {
  const {G, S, KIND} = st,
    maxW = Math.max(1e-30, ...Array.from(sums.values(), Math.abs));
  const out = Array.from(sums, ([key, w]) => {
    const [s, t] = key.split(":").map(Number);
    return {
      type: "scatter",
      mode: "lines",
      x: [B[s].x, B[t].x],
      y: [B[s].layer, B[t].layer],
      hoverinfo: "skip",
      showlegend: false,
      line: {color: S.strong[w > 0 ? "1" : "-1"], width: 1 + (5 * Math.abs(w)) / maxW},
    };
  });
  const look = b => (b.key.startsWith("s:") ? KIND.supernode : KIND[G.nodes.kind[b.members[0]]]);
  out.push({
    type: "scatter",
    mode: "markers+text",
    x: B.map(b => b.x),
    y: B.map(b => b.layer),
    // names cut to 28 characters (the hover shows them whole), above and below in turn, so
    // that neighbouring columns' names do not run into each other
    text: B.map(b => esc(b.name.length > 28 ? b.name.slice(0, 27) + "…" : b.name)),
    textposition: B.map(b => (b.x % 2 ? "bottom center" : "top center")),
    hoverinfo: "text",
    hovertext: B.map(b => esc(b.name)),
    showlegend: false,
    cliponaxis: false,
    marker: {size: 16, color: B.map(b => look(b)[0]), symbol: B.map(b => look(b)[1])},
  });
  return out;
}

export function subgraph(st) {
  const {G, Plotly} = st,
    sub = st.dom.sub,
    B = boxes(st),
    sums = summedEdges(G, B);
  const head = el("div", "anb-row"),
    figure = el("div", "anb-subplot");
  const exportAs = format => () =>
    Plotly.downloadImage(figure, {format, filename: "subgraph", width: 900, height: 520, scale: 2});
  head.append(
    el("span", "anb-section", "pinned subgraph: " + B.length + " nodes, " + sums.size + " edges"),
    button("SVG", "download as SVG", exportAs("svg")),
    button("PNG", "download as PNG", exportAs("png")),
  );
  sub.replaceChildren(head, figure);
  Plotly.newPlot(
    figure,
    traces(st, B, sums),
    {
      height: 420,
      margin: {l: 50, r: 30, t: 30, b: 40},
      plot_bgcolor: "white",
      showlegend: false,
      xaxis: {visible: false, range: [-0.7, B.length - 0.3]},
      yaxis: {zeroline: false, gridcolor: "#eee", ...layerTicks(G), range: [-1.5, G.n_layers + 0.8]},
    },
    {displaylogo: false, responsive: true},
  );
  sub.dataset.nodes = B.length;
  sub.dataset.edges = sums.size;
}
