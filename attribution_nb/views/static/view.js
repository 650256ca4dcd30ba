// The one front end of attribution_nb's graph views: the notebook widget (an anywidget whose
// state lives in the kernel) and the standalone page (state in the page) both call anbMount.
// Every string from the graph reaches the page as text (textContent), never as markup; plotly's
// hover and tick texts read a little HTML, so those are escaped (esc).
function anbMount(root, G, host) {
  const Plotly = host.Plotly;
  const S = G.style, KIND = S.kinds, N = G.nodes.id.length, E = G.edges.s.length;
  const index = new Map(G.nodes.id.map((id, i) => [id, i]));
  const isFixed = i => G.nodes.kind[i] === "token" || G.nodes.kind[i] === "logit";
  let view = null, hovered = null;

  // ---- the page around the plot ---------------------------------------------------
  const el = (tag, cls, text) => {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  };
  const button = (text, title, onClick, cls) => {
    const b = el("button", "anb-button" + (cls ? " " + cls : ""), text);
    b.type = "button"; if (title) b.title = title;
    b.addEventListener("click", onClick);
    return b;
  };
  const slider = (label, key, max) => {
    const box = el("label", "anb-slider"), input = el("input"), value = el("span", "anb-slider-value");
    input.type = "range"; input.min = 0; input.max = max; input.step = 0.001;
    input.value = host.get(key); input.dataset.key = key;
    value.textContent = Number(input.value).toFixed(3);
    input.addEventListener("input", () => { value.textContent = Number(input.value).toFixed(3); host.set(key, Number(input.value)); });
    host.on(key, v => { input.value = v; value.textContent = Number(v).toFixed(3); draw(); });
    box.append(label + " ", input, value);
    return box;
  };
  root.replaceChildren();
  root.classList.add("anb-view");
  const toolbar = el("div", "anb-toolbar");
  const nLabels = el("input"); nLabels.type = "number"; nLabels.min = 0; nLabels.max = 99; nLabels.value = host.get("n_labels");
  nLabels.className = "anb-n-labels"; nLabels.title = "how many of the most influential features are named on the plot";
  nLabels.addEventListener("change", () => host.set("n_labels", Math.max(0, Math.min(99, parseInt(nLabels.value) || 0))));
  host.on("n_labels", v => { nLabels.value = v; draw(); });
  const collapse = el("input"); collapse.type = "checkbox"; collapse.checked = host.get("collapse");
  collapse.addEventListener("change", () => host.set("collapse", collapse.checked));
  host.on("collapse", v => { collapse.checked = v; draw(); });
  const labelsBox = el("label", "anb-option"); labelsBox.append("labels ", nLabels);
  const collapseBox = el("label", "anb-option"); collapseBox.append(collapse, " collapse supernodes");
  const counts = el("span", "anb-counts");
  toolbar.append(slider("node threshold", "node_threshold", G.max_node_threshold),
                 slider("edge threshold", "edge_threshold", G.max_edge_threshold), labelsBox, collapseBox, counts);
  const status = el("div", "anb-status"); status.setAttribute("role", "status");
  const main = el("div", "anb-main"), plot = el("div", "anb-plot"), side = el("div", "anb-side");
  const panel = el("div", "anb-panel"), tools = el("div", "anb-tools"), runs = el("div", "anb-runs");
  side.append(panel, tools, runs);
  main.append(plot, side);
  const sub = el("div", "anb-subgraph"); sub.hidden = true;
  root.append(toolbar, status, main, sub);
  plot.style.height = side.style.maxHeight = host.height + "px";

  function say(text, level) {
    status.textContent = text || "";
    status.dataset.level = level || "info";
    status.hidden = !text;
  }
  host.on("status", s => say(s && s.text, s && s.level));
  say(host.get("status") && host.get("status").text, host.get("status") && host.get("status").level);

  // ---- pruning (the same rule as AttributionGraph.prune; see payload.py) ------------
  function prune(nt, et) {
    const node = new Uint8Array(N), edge = new Uint8Array(E);
    for (let i = 0; i < N; i++) node[i] = isFixed(i) || (nt > 0 && G.nodes.mb[i] < nt) ? 1 : 0;
    for (let e = 0; e < E; e++) edge[e] = et > 0 && G.edges.mb[e] < et ? 1 : 0;
    for (;;) {
      const hasIn = new Uint8Array(N), hasOut = new Uint8Array(N);
      for (let e = 0; e < E; e++) {
        if (edge[e] && !(node[G.edges.s[e]] && node[G.edges.t[e]])) edge[e] = 0;
        if (edge[e]) { hasIn[G.edges.t[e]] = 1; hasOut[G.edges.s[e]] = 1; }
      }
      let changed = false;
      for (let i = 0; i < N; i++) {
        const k = G.nodes.kind[i];
        const keep = isFixed(i) || (k === "feature" && hasIn[i] && hasOut[i]) || (k === "error" && hasOut[i]);
        if (node[i] && !keep) { node[i] = 0; changed = true; }
      }
      if (!changed) return {node, edge};
    }
  }

  // drawn nodes: one per kept node, or one per supernode when collapsed
  function drawnNodes(node, edge) {
    const groups = host.get("collapse") ? host.get("supernodes") : {};
    const owner = new Map();
    Object.entries(groups).forEach(([name, members]) => members.forEach(id => owner.set(id, name)));
    const D = [], of = new Int32Array(N).fill(-1), byName = new Map();
    for (let i = 0; i < N; i++) {
      if (!node[i]) continue;
      const name = owner.get(G.nodes.id[i]);
      if (name === undefined) { of[i] = D.length; D.push({id: G.nodes.id[i], members: [i], kind: G.nodes.kind[i]}); continue; }
      if (!byName.has(name)) { byName.set(name, D.length); D.push({id: "s:" + name, name, members: [], kind: "supernode"}); }
      of[i] = byName.get(name); D[of[i]].members.push(i);
    }
    D.forEach(d => {
      const m = d.members, mean = a => m.reduce((s, i) => s + a[i], 0) / m.length;
      d.layer = d.kind === "supernode" ? Math.round(mean(G.nodes.layer)) : G.nodes.layer[m[0]];
      d.position = d.kind === "supernode" ? Math.round(mean(G.nodes.position)) : G.nodes.position[m[0]];
      d.influence = m.reduce((s, i) => s + Math.max(G.nodes.influence[i], 0), 0);
      d.name = d.kind === "supernode" ? d.name + " (" + m.length + ")" : G.nodes.name[m[0]];
      d.index = m.length === 1 && d.kind !== "supernode" ? m[0] : -1;
    });
    const sums = new Map();
    for (let e = 0; e < E; e++) {
      if (!edge[e]) continue;
      const s = of[G.edges.s[e]], t = of[G.edges.t[e]];
      if (s === t) continue;
      const key = s * D.length + t;
      sums.set(key, (sums.get(key) || 0) + G.edges.w[e]);
    }
    const edges = Array.from(sums, ([key, w]) => ({s: Math.floor(key / D.length), t: key % D.length, w}));
    return {D, edges};
  }

  // ---- layout: a column per prompt position, as wide as its fullest cell -----------
  function layout(D) {
    const rowOf = d => d.kind === "token" ? -1 : d.kind === "logit" ? G.n_layers : d.layer;
    const cells = new Map();
    D.forEach((d, j) => {
      const key = rowOf(d) + ":" + d.position;
      if (!cells.has(key)) cells.set(key, []);
      cells.get(key).push(j);
    });
    const cap = S.cell_cap, width = new Array(G.tokens.length).fill(1);
    cells.forEach((js, key) => {
      const p = Number(key.split(":")[1]), wide = D[js[0]].kind === "logit" ? S.logit_spacing : 1;
      width[p] = Math.max(width[p], Math.min(js.length, cap) * wide);
    });
    const start = [], centre = [];
    let at = 0;
    width.forEach((w, p) => { start[p] = at; centre[p] = at + w / 2; at += w + S.column_gap; });
    const x = new Float64Array(D.length), y = new Float64Array(D.length);
    cells.forEach((js, key) => {
      const [row, p] = key.split(":").map(Number);
      const order = j => D[j].kind === "error" ? -1 : D[j].influence;
      js.sort((a, b) => (order(b) - order(a)) || (a - b));
      const rows = Math.ceil(js.length / cap), per = Math.ceil(js.length / rows);
      const wide = D[js[0]].kind === "logit" ? S.logit_spacing : 1;
      js.forEach((j, r) => {
        const q = Math.floor(r / per), k = r % per, inRow = Math.min(per, js.length - q * per);
        x[j] = centre[p] + (k - (inRow - 1) / 2) * wide;
        y[j] = row + (rows > 1 ? (q - (rows - 1) / 2) * (S.sub_row / (rows - 1 || 1)) : 0);
      });
    });
    return {x, y, centre, range: [-0.8, at - S.column_gap + 0.8]};
  }

  // ---- plotly traces ------------------------------------------------------------------
  // SVG while few are drawn (crisp, exports as vector, no WebGL to start: the first draw is fast
  // even where WebGL runs on the CPU); WebGL for many (SVG slows past a few thousand edges)
  const traceType = (n, limit) => (n > limit ? "scattergl" : "scatter");
  function edgeTraces(list, x, y, faded) {
    const maxW = list.reduce((m, e) => Math.max(m, Math.abs(e.w)), 1e-30);
    const out = [];
    S.bins.slice().reverse().forEach(([floor, width], b, bins) => {     // weakest first: strongest on top
      const ceiling = b + 1 < bins.length ? bins[b + 1][0] : Infinity;
      for (const sign of [1, -1]) {
        const xs = [], ys = [];
        list.forEach(e => {
          const r = Math.abs(e.w) / maxW;
          if (Math.sign(e.w) === sign && r >= floor && r < ceiling) { xs.push(x[e.s], x[e.t], null); ys.push(y[e.s], y[e.t], null); }
        });
        out.push({type: traceType(list.length, S.svg_edges), mode: "lines", x: xs, y: ys, hoverinfo: "skip", showlegend: false,
                  opacity: faded ? 0.22 : 1, line: {color: S.colours[String(sign)], width}});
      }
    });
    return out;
  }

  function highlight(j) {
    const xs = {1: [], "-1": []}, ys = {1: [], "-1": []};
    if (view && j !== null && j !== undefined) {
      view.edges.forEach(e => {
        if (e.s !== j && e.t !== j) return;
        const k = e.w > 0 ? 1 : -1;
        xs[k].push(view.x[e.s], view.x[e.t], null); ys[k].push(view.y[e.s], view.y[e.t], null);
      });
    }
    return [1, -1].map(k => ({type: "scatter", mode: "lines", x: xs[k], y: ys[k], hoverinfo: "skip", showlegend: false,
                              line: {color: S.strong[String(k)], width: 2.6}}));
  }

  function legend() {
    const items = [["feature", "feature"], ["error", "error (residual)"], ["token", "token"], ["logit", "logit"]];
    if (Object.keys(host.get("supernodes")).length) items.push(["supernode", "supernode"]);
    const out = items.map(([k, name]) => ({type: "scatter", mode: "markers", x: [null], y: [null], name, hoverinfo: "skip",
                                           marker: {color: KIND[k][0], symbol: KIND[k][1], size: 10}}));
    out.push({type: "scatter", mode: "lines", x: [null], y: [null], name: "excites", line: {color: S.strong["1"], width: 3}});
    out.push({type: "scatter", mode: "lines", x: [null], y: [null], name: "inhibits", line: {color: S.strong["-1"], width: 3}});
    out.push({type: "scatter", mode: "lines", x: [null], y: [null], name: "width ∝ |weight|",
              line: {color: "rgba(120,120,120,0.6)", width: 1}});
    return out;
  }

  // names on the plot: logits, supernodes, pinned and user-labelled nodes, then the n most
  // influential features; a name is placed below or above its node where it overlaps no other
  // name nor node centre, else left to the hover text
  function placeLabels(D, x, y, range) {
    const pinned = new Set(host.get("pinned")), n = host.get("n_labels");
    const feats = D.map((d, j) => j).filter(j => D[j].kind === "feature").sort((a, b) => D[b].influence - D[a].influence);
    const first = D.map((d, j) => j).filter(j => D[j].kind === "logit" || D[j].kind === "supernode" || pinned.has(D[j].id) ||
                                                 (D[j].index >= 0 && labels()[D[j].id]));
    const want = first.concat(feats.slice(0, n).filter(j => !first.includes(j)));
    const fl = plot._fullLayout, xa = fl && fl.xaxis, ya = fl && fl.yaxis;
    const w = xa && xa._length ? xa._length : Math.max(200, plot.clientWidth - 68);
    const h = ya && ya._length ? ya._length : Math.max(200, host.height - 140);
    const px = v => (v - range[0]) / (range[1] - range[0]) * w, py = v => (G.n_layers + 0.7 - v) / (G.n_layers + 2.3) * h;
    const boxes = [], out = [];
    const hits = (a, b) => a[0] < b[2] && b[0] < a[2] && a[1] < b[3] && b[1] < a[3];
    want.forEach(j => {
      const full = nameOf(D[j]), text = full.length > 24 ? full.slice(0, 23) + "…" : full;
      const tw = 6 * text.length + 4, cx = px(x[j]), cy = py(y[j]);
      for (const shift of [-13, 13]) {
        const box = [cx - tw / 2, cy - shift - 7, cx + tw / 2, cy - shift + 7];
        const clash = boxes.some(b => hits(b, box)) ||
                      D.some((_, k) => k !== j && px(x[k]) > box[0] && px(x[k]) < box[2] && py(y[k]) > box[1] && py(y[k]) < box[3]);
        if (!clash) {
          boxes.push(box);
          out.push({x: x[j], y: y[j], text: esc(text), yshift: shift, showarrow: false, font: {size: 10, color: "#222"},
                    bgcolor: "rgba(255,255,255,0.82)", borderpad: 0, hovertext: esc(full), captureevents: false});
          return;
        }
      }
    });
    return out;
  }

  const labels = () => host.get("labels") || {};
  const nameOf = d => (d.index >= 0 && labels()[d.id]) || d.name;

  function hoverText(d) {
    let t = "<b>" + esc(nameOf(d)) + "</b> · " + esc(d.kind);
    if (d.index >= 0) {
      const i = d.index;
      t += "<br>" + esc(d.id) + "<br>token " + esc(JSON.stringify(G.nodes.token[i]));
      if (d.kind === "logit") t += " · probability " + G.nodes.probability[i].toFixed(3);
      else if (d.kind !== "token") t += " · activation " + G.nodes.activation[i].toPrecision(3) + " · influence " + G.nodes.influence[i].toPrecision(3);
    } else {
      t += "<br>" + d.members.length + " nodes · influence " + d.influence.toPrecision(3);
    }
    return t;
  }

  function draw() {
    const t0 = performance.now();
    const {node, edge} = prune(host.get("node_threshold"), host.get("edge_threshold"));
    const {D, edges} = drawnNodes(node, edge);
    const {x, y, centre, range} = layout(D);
    view = {D, edges, x, y, range, ids: new Map(D.map((d, j) => [d.id, j]))};
    const sel = view.ids.get(host.get("selected")), pinned = new Set(host.get("pinned"));
    const maxInf = D.reduce((m, d) => d.kind === "token" || d.kind === "logit" ? m : Math.max(m, d.influence), 1e-12);
    const [FIXED, MIN, RANGE] = S.sizes;
    const traces = edgeTraces(edges, x, y, sel !== undefined).concat(highlight(sel), legend(), [
      {type: traceType(D.length, S.svg_nodes), mode: "markers", hoverinfo: "text", showlegend: false, x: Array.from(x), y: Array.from(y),
       customdata: D.map(d => d.id), hovertext: D.map(hoverText),
       marker: {size: D.map(d => d.kind === "token" || d.kind === "logit" ? FIXED : MIN + RANGE * Math.sqrt(d.influence / maxInf)),
                color: D.map(d => KIND[d.kind][0]), symbol: D.map(d => KIND[d.kind][1]), opacity: 0.95,
                line: {width: D.map((d, j) => j === sel ? 3 : pinned.has(d.id) ? 2.5 : 1),
                       color: D.map((d, j) => j === sel ? "#111" : pinned.has(d.id) ? "#e45756" : "white")}}}]);
    const ticks = G.tokens.map(esc);
    const layoutSpec = {
      margin: {l: 56, r: 12, t: 34, b: 78}, plot_bgcolor: "white", paper_bgcolor: "white", hovermode: "closest",
      dragmode: "pan", autosize: true, showlegend: true, uirevision: "keep", annotations: placeLabels(D, x, y, range),
      legend: {orientation: "h", x: 0, y: 1.0, yanchor: "bottom", font: {size: 11}, itemclick: false, itemdoubleclick: false},
      xaxis: {tickvals: centre, ticktext: ticks, tickangle: G.tokens.length > 8 ? -40 : 0, tickfont: {size: 12},
              showgrid: true, gridcolor: "#eeeeee", zeroline: false, range},
      yaxis: {tickvals: Array.from({length: G.n_layers + 2}, (_, k) => k - 1),
              ticktext: ["tokens"].concat(Array.from({length: G.n_layers}, (_, k) => "L" + k), ["logits"]),
              showgrid: true, gridcolor: "#eeeeee", zeroline: false, range: [-1.6, G.n_layers + 0.7], fixedrange: false},
    };
    Plotly.react(plot, traces, layoutSpec, {responsive: true, scrollZoom: true, displaylogo: false,
                                            modeBarButtonsToRemove: ["select2d", "lasso2d"]});
    counts.textContent = D.length + " nodes, " + edges.length + " edges drawn";
    root.dataset.nodes = D.length; root.dataset.edges = edges.length;
    root.dataset.drawMs = (performance.now() - t0).toFixed(1);
    showPanel();
  }

  function placeAgain() {
    if (view) Plotly.relayout(plot, {annotations: placeLabels(view.D, view.x, view.y, view.range)});
  }

  function restyleHighlight(j) {
    if (!view) return;
    const h = highlight(j), base = 2 * S.bins.length;
    Plotly.restyle(plot, {x: h.map(t => t.x), y: h.map(t => t.y)}, [base, base + 1]);
    const faded = j !== undefined && j !== null;
    Plotly.restyle(plot, {opacity: faded ? 0.22 : 1}, Array.from({length: base}, (_, k) => k));
  }

  // ---- the panel --------------------------------------------------------------------
  function select(id) {
    host.set("selected", id);      // its listener redraws (the ring, the highlighted edges, the panel)
  }

  function neighbours(j, incoming) {
    const list = view.edges.filter(e => (incoming ? e.t : e.s) === j).sort((a, b) => Math.abs(b.w) - Math.abs(a.w));
    const box = el("div", "anb-neighbours");
    box.append(el("div", "anb-section", (incoming ? "inputs" : "outputs") + " (" + list.length + " drawn)"));
    list.slice(0, 8).forEach(e => {
      const d = view.D[incoming ? e.s : e.t];
      const row = el("div", "anb-neighbour");
      row.tabIndex = 0; row.dataset.node = d.id; row.title = d.id;
      const where = d.index >= 0 ? [JSON.stringify(G.nodes.token[d.index]), d.kind === "token" ? "token" :
                                    d.kind === "logit" ? "logit" : "L" + d.layer] : [d.kind];
      row.append(el("span", "anb-weight " + (e.w > 0 ? "anb-pos" : "anb-neg"), (e.w > 0 ? "+" : "−") + Math.abs(e.w).toPrecision(3)),
                 el("span", "anb-name", [nameOf(d)].concat(where).join(" · ")));
      row.addEventListener("click", () => select(d.id));
      row.addEventListener("keydown", ev => { if (ev.key === "Enter") select(d.id); });
      const src = incoming ? d : view.D[j], dst = incoming ? view.D[j] : d;
      if (host.interactive && src.index >= 0 && dst.index >= 0 && G.nodes.position[src.index] < G.nodes.position[dst.index]
          && G.nodes.kind[dst.index] !== "token") {
        const heads = button("heads", "which attention heads carry this edge, and why they look there", ev => {
          ev.stopPropagation();
          say("finding the heads that carry " + src.id + " → " + dst.id + " …", "info");
          host.send({action: "heads", source: src.id, target: dst.id});
        }, "anb-heads");
        row.append(heads);
      }
      box.append(row);
    });
    return box;
  }

  function headsSection(c) {
    const box = el("div", "anb-carried");
    box.append(el("div", "anb-section", "heads carrying " + c.source_name + " → " + c.target_name +
                  " (edge " + c.edge.toPrecision(3) + ")"));
    c.rows.forEach(([layer, head, loading, weight]) => {
      const row = el("div", "anb-neighbour");
      row.append(el("span", "anb-weight " + (loading > 0 ? "anb-pos" : "anb-neg"), (loading > 0 ? "+" : "−") +
                    Math.abs(loading).toPrecision(3)),
                 el("span", "anb-name", "L" + layer + " head " + head + " · attends " + (100 * weight).toFixed(0) + "% to the source"));
      box.append(row);
    });
    if (c.qk && c.qk.length) {
      box.append(el("div", "anb-section", "why L" + c.qk_head[0] + " head " + c.qk_head[1] + " looks there (score " +
                    c.score.toPrecision(3) + "): query × key"));
      c.qk.forEach(([qname, kname, value]) => {
        const row = el("div", "anb-neighbour");
        row.append(el("span", "anb-weight " + (value > 0 ? "anb-pos" : "anb-neg"), (value > 0 ? "+" : "−") + Math.abs(value).toPrecision(3)),
                   el("span", "anb-name", qname + " × " + kname));
        box.append(row);
      });
    }
    return box;
  }

  function tokenList(title, items, cls) {
    const box = el("div", "anb-tokens");
    box.append(el("div", "anb-section", title));
    const line = el("div");
    items.forEach(([t, v]) => { const s = el("span", "anb-token " + cls, t); s.title = v.toPrecision(3); line.append(s); });
    box.append(line);
    return box;
  }

  function contextList(items) {
    const box = el("div", "anb-contexts");
    box.append(el("div", "anb-section", "where it fires most"));
    items.forEach(([text, act]) => {
      const row = el("div", "anb-context"), m = /^(.*)\[([^\]]*)\]\s*$/s.exec(text);
      if (m) row.append(m[1], el("mark", "", m[2])); else row.append(text);
      row.append(el("span", "anb-act", " " + Number(act).toPrecision(3)));
      box.append(row);
    });
    return box;
  }

  function showPanel() {
    const id = host.get("selected"), j = view ? view.ids.get(id) : undefined;
    panel.replaceChildren();
    if (id === null || id === undefined) {
      panel.append(el("div", "anb-hint", "Hover a node to see its edges; click it for its panel. Shift-click pins it."));
    } else if (j === undefined) {
      panel.append(el("div", "anb-hint", id + " is not drawn at these thresholds."));
    } else {
      const d = view.D[j];
      panel.append(el("div", "anb-node-name", nameOf(d)), el("div", "anb-node-title", d.id));
      if (d.index >= 0) {
        const i = d.index, bits = [d.kind, "token " + JSON.stringify(G.nodes.token[i]), "position " + G.nodes.position[i]];
        if (d.kind === "feature" || d.kind === "error") bits.splice(1, 0, "layer " + G.nodes.layer[i]);
        panel.append(el("div", "anb-meta", bits.join(" · ")));
        panel.append(el("div", "anb-meta", d.kind === "logit" ? "probability " + G.nodes.probability[i].toFixed(3) :
                        d.kind === "token" ? "" : "activation " + G.nodes.activation[i].toPrecision(4) +
                        " · influence " + G.nodes.influence[i].toPrecision(4)));
      } else {
        panel.append(el("div", "anb-meta", "supernode of " + d.members.length + ": " + d.members.map(i => G.nodes.name[i]).join(", ")));
      }
      const pin = button(new Set(host.get("pinned")).has(d.id) ? "unpin" : "pin", "keep this node in the subgraph view",
                         () => togglePin(d.id), "anb-pin");
      panel.append(pin, neighbours(j, true), neighbours(j, false));
      const carried = host.get("heads");
      if (carried && carried.rows && (carried.source === d.id || carried.target === d.id)) panel.append(headsSection(carried));
      const info = (host.get("details") || {})[d.id] || G.details[d.id];
      if (d.kind === "feature" && info) {
        if (info.latent) panel.append(el("div", "anb-meta anb-latent", "detects " + info.latent));
        panel.append(tokenList("promotes", info.promotes, "anb-pos"), tokenList("suppresses", info.suppresses, "anb-neg"));
        if (info.contexts.length) panel.append(contextList(info.contexts));
      } else if (d.kind === "feature" && host.interactive) {
        host.send({action: "details", node: d.id});
      }
    }
    tools.replaceChildren(...toolRows(j === undefined ? null : view.D[j]));
  }

  function togglePin(id) {
    const pinned = host.get("pinned").slice(), k = pinned.indexOf(id);
    if (k >= 0) pinned.splice(k, 1); else pinned.push(id);
    host.set("pinned", pinned);
    if (!sub.hidden) subgraph();
  }

  // ---- labels, groups, interventions ------------------------------------------------
  function toolRows(d) {
    const rows = [];
    const editable = d && d.index >= 0;
    const labelInput = el("input", "anb-text"); labelInput.placeholder = "label for the selected node";
    labelInput.value = editable ? (labels()[d.id] || G.nodes.label[d.index] || "") : "";
    labelInput.disabled = !editable;
    const save = button("save label", "name this node on the plot and in the saved graph", () => {
      const text = labelInput.value.trim();
      if (!text) return say("type a label first", "error");
      host.set("labels", Object.assign({}, labels(), {[d.id]: text}));
      host.send({action: "label", node: d.id, text});
    });
    save.disabled = !editable;
    rows.push(row("label", labelInput, save));
    const pinned = host.get("pinned");
    const name = el("input", "anb-text"); name.placeholder = "supernode name";
    const group = button("group pinned", "name the pinned nodes as one supernode", () => {
      const text = name.value.trim();
      if (!text) return say("give the supernode a name", "error");
      if (!pinned.length) return say("pin some nodes first (shift-click, or the pin button)", "error");
      host.set("supernodes", Object.assign({}, host.get("supernodes"), {[text]: pinned.slice()}));
      host.send({action: "group", name: text, members: pinned.slice()});
      host.set("pinned", []);
      say("supernode " + JSON.stringify(text) + " holds " + pinned.length + " nodes", "info");
    });
    group.disabled = !pinned.length;
    const show = button(sub.hidden ? "subgraph" : "hide subgraph", "the pinned nodes and supernodes laid out alone, for export",
                        () => { sub.hidden = !sub.hidden; if (!sub.hidden) subgraph(); showPanel(); });
    show.disabled = !pinned.length && !Object.keys(host.get("supernodes")).length;
    rows.push(row("pinned: " + pinned.length, name, group, show));
    if (host.interactive) {
      const test = button("test this subgraph", "inhibit each group and compare the model with what the graph predicts", () => {
        say("testing the pinned nodes and supernodes …", "info");
        host.send({action: "validate"});
      });
      test.disabled = show.disabled;
      rows.push(row("", test));
    }
    if (host.interactive) rows.push(...interventionRows(d));
    return rows;
  }

  function row(title, ...items) {
    const r = el("div", "anb-row");
    if (title) r.append(el("span", "anb-row-title", title));
    r.append(...items);
    return r;
  }

  function interventionRows(d) {
    const clampable = d && d.index >= 0 && (d.kind === "feature" || d.kind === "error");
    const queue = host.get("queue") || [];
    const clamp = how => () => host.send({action: "clamp", node: d.id, how});
    const value = el("input", "anb-value"); value.type = "number"; value.step = 0.1; value.value = 0;
    const buttons = [button("ablate", "set the activation to 0", clamp("ablate")),
                     button("−2×", "multiply the activation by −2", clamp("-2x")),
                     button("2×", "multiply the activation by 2", clamp("2x")), value,
                     button("set", "set the activation to this value", () => host.send({action: "clamp", node: d.id, how: Number(value.value)}))];
    buttons.forEach(b => { b.disabled = !clampable; });
    const mode = el("select", "anb-mode");
    [["free", "free: a normal forward pass"], ["frozen", "frozen: attention, norms, other features fixed"]].forEach(([v, t]) => {
      const o = el("option", "", t); o.value = v; mode.append(o);
    });
    mode.value = host.get("mode");
    mode.addEventListener("change", () => host.set("mode", mode.value));
    const run = button("run", "run the model with the queued interventions", () => host.send({action: "run"}), "anb-primary");
    const reset = button("reset", "clear the queue", () => host.send({action: "reset"}));
    run.disabled = reset.disabled = !queue.length;
    const out = [el("div", "anb-section", "intervene" + (clampable ? " on " + nameOf(d) : " (select a feature or error node)")),
                 row("", ...buttons), row("", mode, run, reset)];
    if (queue.length) {
      const list = el("div", "anb-queue");
      queue.forEach(([id, text]) => list.append(el("div", "", G.nodes.name[index.get(id)] + " (" + id + ") → " + text)));
      const code = el("pre", "anb-code", host.get("code"));
      const copy = button("copy as code", "copy the model.intervene(...) call", () => {
        const done = () => say("copied the intervene(...) call", "info");
        if (navigator.clipboard && window.isSecureContext) navigator.clipboard.writeText(code.textContent).then(done, () => selectText(code));
        else selectText(code);
      });
      out.push(list, code, row("", copy));
    }
    return out;
  }

  function selectText(node) {
    const range = document.createRange(); range.selectNodeContents(node);
    const s = window.getSelection(); s.removeAllRanges(); s.addRange(range);
    say("the call is selected: press Ctrl+C (this page cannot write the clipboard)", "info");
  }

  function showRuns() {
    runs.replaceChildren();
    const list = host.get("runs") || [];
    if (!list.length) return;
    runs.append(el("div", "anb-section", "runs (" + list.length + ")"));
    list.slice().reverse().forEach((r, k) => {
      const box = el("details", "anb-run"); box.open = k === 0;
      box.append(el("summary", "", "#" + (list.length - k) + " " + r.mode + ": " + r.what));
      const table = el("table", "anb-before-after"), head = table.insertRow();
      r.columns.forEach(c => head.append(el("th", "", c)));
      r.rows.forEach(cells => { const tr = table.insertRow(); cells.forEach(c => tr.insertCell().textContent = c); });
      box.append(table);
      if (r.before !== undefined) box.append(el("div", "anb-gen", "before: …" + r.before), el("div", "anb-gen", "after: …" + r.after));
      runs.append(box);
    });
  }
  host.on("runs", showRuns);
  ["selected", "pinned", "labels", "supernodes"].forEach(k => host.on(k, () => draw()));
  ["queue", "code", "details", "mode", "heads"].forEach(k => host.on(k, () => showPanel()));

  // ---- the pinned subgraph, alone, for a paper or a slide ---------------------------
  function subgraph() {
    const groups = host.get("supernodes"), owner = new Map();
    Object.entries(groups).forEach(([name, members]) => members.forEach(id => owner.set(id, name)));
    const chosen = new Set(host.get("pinned"));
    Object.values(groups).forEach(members => members.forEach(id => chosen.add(id)));
    const boxes = new Map();
    chosen.forEach(id => {
      const i = index.get(id); if (i === undefined) return;
      const key = owner.has(id) ? "s:" + owner.get(id) : id;
      if (!boxes.has(key)) boxes.set(key, {key, name: owner.has(id) ? owner.get(id) : (labels()[id] || G.nodes.name[i]), members: []});
      boxes.get(key).members.push(i);
    });
    const B = Array.from(boxes.values()), at = new Map();
    B.forEach((b, k) => { b.members.forEach(i => at.set(i, k));
      b.layer = b.members.reduce((s, i) => s + (isFixed(i) ? (G.nodes.kind[i] === "token" ? -1 : G.n_layers) : G.nodes.layer[i]), 0) / b.members.length;
      b.position = b.members.reduce((s, i) => s + G.nodes.position[i], 0) / b.members.length; });
    const order = B.map((b, k) => k).sort((a, b) => B[a].position - B[b].position || B[a].layer - B[b].layer);
    order.forEach((k, r) => { B[k].x = r; });
    const sums = new Map();
    for (let e = 0; e < E; e++) {
      const s = at.get(G.edges.s[e]), t = at.get(G.edges.t[e]);
      if (s === undefined || t === undefined || s === t) continue;
      sums.set(s + ":" + t, (sums.get(s + ":" + t) || 0) + G.edges.w[e]);
    }
    const maxW = Math.max(1e-30, ...Array.from(sums.values(), Math.abs));
    const traces = Array.from(sums, ([key, w]) => {
      const [s, t] = key.split(":").map(Number);
      return {type: "scatter", mode: "lines", x: [B[s].x, B[t].x], y: [B[s].layer, B[t].layer], hoverinfo: "skip", showlegend: false,
              line: {color: S.strong[w > 0 ? "1" : "-1"], width: 1 + 5 * Math.abs(w) / maxW}};
    });
    traces.push({type: "scatter", mode: "markers+text", x: B.map(b => b.x), y: B.map(b => b.layer), text: B.map(b => esc(b.name)),
                 textposition: "top center", hoverinfo: "text", hovertext: B.map(b => esc(b.name)), showlegend: false, cliponaxis: false,
                 marker: {size: 16, color: B.map(b => b.key.startsWith("s:") ? KIND.supernode[0] : KIND[G.nodes.kind[b.members[0]]][0]),
                          symbol: B.map(b => b.key.startsWith("s:") ? KIND.supernode[1] : KIND[G.nodes.kind[b.members[0]]][1])}});
    const head = el("div", "anb-row");
    const figure = el("div", "anb-subplot");
    const exportAs = format => () => Plotly.downloadImage(figure, {format, filename: "subgraph", width: 900, height: 520, scale: 2});
    head.append(el("span", "anb-section", "pinned subgraph: " + B.length + " nodes, " + sums.size + " edges"),
                button("SVG", "download as SVG", exportAs("svg")), button("PNG", "download as PNG", exportAs("png")));
    sub.replaceChildren(head, figure);
    Plotly.newPlot(figure, traces, {height: 420, margin: {l: 50, r: 30, t: 30, b: 40}, plot_bgcolor: "white", showlegend: false,
                                    xaxis: {visible: false, range: [-0.7, B.length - 0.3]},
                                    yaxis: {zeroline: false, gridcolor: "#eee", tickvals: Array.from({length: G.n_layers + 2}, (_, k) => k - 1),
                                            ticktext: ["tokens"].concat(Array.from({length: G.n_layers}, (_, k) => "L" + k), ["logits"]),
                                            range: [-1.5, G.n_layers + 0.8]}},
                   {displaylogo: false, responsive: true});
    sub.dataset.nodes = B.length; sub.dataset.edges = sums.size;
  }

  // ---- events ---------------------------------------------------------------------------
  draw();
  placeAgain();  // now that plotly has measured the axes (names are placed in pixels)
  showRuns();
  plot.on("plotly_click", ev => {
    const p = ev.points.find(q => q.customdata !== undefined && q.curveNumber === plot.data.length - 1);
    if (!p) return;
    if (ev.event && ev.event.shiftKey) togglePin(p.customdata); else select(p.customdata);
  });
  plot.on("plotly_hover", ev => {
    const p = ev.points.find(q => q.curveNumber === plot.data.length - 1);
    if (p && view) { hovered = view.ids.get(p.customdata); restyleHighlight(hovered); }
  });
  plot.on("plotly_unhover", () => { hovered = null; restyleHighlight(view ? view.ids.get(host.get("selected")) : null); });
  if (typeof ResizeObserver !== "undefined") {
    let pending = null;
    const watch = new ResizeObserver(() => {
      clearTimeout(pending);
      pending = setTimeout(() => { if (plot.offsetWidth) { Plotly.Plots.resize(plot); placeAgain(); } }, 120);
    });
    watch.observe(plot);
    host.onClose(() => watch.disconnect());
  }
  return {draw, select};
}

function esc(text) {
  return String(text).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

// ---- the standalone page: its state lives in the page (labels and groups are not saved)
function anbPageHost(initial) {
  const state = Object.assign({}, initial), listeners = {};
  return {
    Plotly: globalThis.Plotly, interactive: false, height: initial.height,
    get: key => state[key],
    set: (key, value) => { state[key] = value; (listeners[key] || []).forEach(fn => fn(value)); },
    on: (key, fn) => { (listeners[key] = listeners[key] || []).push(fn); },
    send: () => {}, onClose: () => {},
  };
}

// ---- the notebook widget: anywidget's render, plotly.js fetched from the kernel once per page
function anbPlotly(model) {
  if (globalThis.Plotly) return Promise.resolve(globalThis.Plotly);
  if (!globalThis.__anbPlotly) {
    globalThis.__anbPlotly = new Promise((resolve, reject) => {
      const got = msg => {
        if (!msg || msg.type !== "plotly") return;
        model.off("msg:custom", got);
        try { (new Function("module", "define", msg.source))(undefined, undefined); resolve(globalThis.Plotly); }
        catch (err) { globalThis.__anbPlotly = null; reject(err); }
      };
      model.on("msg:custom", got);
      globalThis.__anbPlotlyRequests = (globalThis.__anbPlotlyRequests || 0) + 1;
      model.send({action: "plotly"});
    });
  }
  return globalThis.__anbPlotly;
}

function anbModelHost(model, Plotly) {
  const closers = [];
  return {
    Plotly, interactive: model.get("has_model"), height: model.get("height"),
    get: key => model.get(key),
    set: (key, value) => { model.set(key, value); model.save_changes(); },
    on: (key, fn) => { const cb = () => fn(model.get(key)); model.on("change:" + key, cb); closers.push(() => model.off("change:" + key, cb)); },
    send: msg => model.send(msg),
    onClose: fn => closers.push(fn),
    close: () => closers.forEach(fn => fn()),
  };
}

// anywidget calls initialize when the widget's model arrives, before any view: fetch plotly.js then
function initialize({model}) {
  anbPlotly(model).catch(() => {});
}

async function render({model, el}) {
  const t0 = performance.now();
  el.classList.add("anb-graph-widget");
  const wait = document.createElement("div");
  wait.className = "anb-loading"; wait.textContent = "loading the graph view…";
  el.append(wait);
  const Plotly = await anbPlotly(model);
  const host = anbModelHost(model, Plotly);
  const t1 = performance.now();
  anbMount(el, model.get("payload"), host);
  // for bench/widget.py: when the view started, got plotly.js, and had drawn (ms since page load)
  (globalThis.__anbTimes = globalThis.__anbTimes || []).push([t0, t1, performance.now()]);
  return () => { host.close(); Plotly.purge(el.querySelector(".anb-plot")); };
}

export default { initialize, render };
