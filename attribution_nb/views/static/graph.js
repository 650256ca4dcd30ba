(function () {
  const G = JSON.parse(document.getElementById("anb-data").textContent);
  const div = document.getElementById("anb-plot");
  const nodeSlider = document.getElementById("anb-node"), edgeSlider = document.getElementById("anb-edge");
  // colours, symbols, edge bins and sizes: attribution_nb/views/style.py, shared with the widget
  const STYLE = G.style.kinds, BINS = G.style.bins, COLOURS = G.style.colours;
  const [FIXED_SIZE, MIN_SIZE, SIZE_RANGE] = G.style.sizes, CELL = G.style.cell_width;
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
      if (ids.length > 1) ids.forEach((i, r) => { x[i] += -CELL / 2 + CELL * r / (ids.length - 1); });
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
                 line: G.style.highlight});
    traces.push({type: "scattergl", mode: "markers", hoverinfo: "text", showlegend: false,
                 x: keep.map(i => x[i]), y: keep.map(i => G.nodes.layer[i]), customdata: keep,
                 text: keep.map(i => "<b>" + esc(G.nodes.id[i]) + "</b> (" + esc(G.nodes.kind[i]) + ")<br>influence " +
                                     G.nodes.influence[i].toPrecision(3) + (G.nodes.label[i] ? "<br>" + esc(G.nodes.label[i]) : "")),
                 marker: {size: keep.map(i => (G.nodes.kind[i] === "token" || G.nodes.kind[i] === "logit") ? FIXED_SIZE :
                                              MIN_SIZE + SIZE_RANGE * Math.sqrt(Math.max(G.nodes.influence[i], 0) / maxInf)),
                          color: keep.map(i => STYLE[G.nodes.kind[i]][0]), symbol: keep.map(i => STYLE[G.nodes.kind[i]][1]),
                          line: {width: keep.map(i => i === selected ? 3 : 1),
                                 color: keep.map(i => i === selected ? "#111111" : "white")}}});
    Plotly.react(div, traces, G.layout, {responsive: true});
    document.getElementById("anb-counts").textContent = keep.length + " nodes, " + edges.length + " edges drawn";
    div.dataset.nodes = keep.length; div.dataset.edges = edges.length;
    last = {keep, edges};
  }

  // every string from the graph reaches the page as text, never as markup (plotly's hover text
  // reads a little HTML: &, < and > are what it needs escaped)
  function esc(text) {
    return String(text).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
  }

  function el(tag, text) {
    const node = document.createElement(tag);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function edgeTable(list, other) {
    const table = el("table");
    list.slice(0, 6).forEach(e => {
      const row = table.insertRow();
      row.insertCell().textContent = G.nodes.id[other(e)];
      row.insertCell().textContent = G.edges.w[e].toPrecision(3);
    });
    return table;
  }

  function panel(i) {
    const byWeight = (a, b) => Math.abs(G.edges.w[b]) - Math.abs(G.edges.w[a]);
    const inc = last.edges.filter(e => G.edges.t[e] === i).sort(byWeight);
    const out = last.edges.filter(e => G.edges.s[e] === i).sort(byWeight);
    const box = document.getElementById("anb-panel");
    box.replaceChildren();
    box.append(el("h4", G.nodes.id[i]));
    const about = el("div", G.nodes.kind[i] + " · layer " + G.nodes.layer[i] + " · position " + G.nodes.position[i] +
                            " (token " + JSON.stringify(G.nodes.token[i]) + ")");
    about.append(el("br"), document.createTextNode("activation " + G.nodes.activation[i].toPrecision(4) +
                                                   " · influence " + G.nodes.influence[i].toPrecision(4)));
    if (G.nodes.label[i]) about.append(el("br"), document.createTextNode("label: "), el("i", G.nodes.label[i]));
    box.append(about, el("b", "incoming (drawn)"), edgeTable(inc, e => G.edges.s[e]),
               el("b", "outgoing (drawn)"), edgeTable(out, e => G.edges.t[e]));
  }

  nodeSlider.addEventListener("input", draw);
  edgeSlider.addEventListener("input", draw);
  draw();
  div.on("plotly_click", ev => {
    const p = ev.points.find(q => q.customdata !== undefined);
    if (p) { selected = p.customdata; draw(); panel(selected); }
  });
})();
