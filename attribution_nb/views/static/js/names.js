// The names written on the plot, placed in pixels so that none overlaps another or a node.
import {esc} from "./dom.js";
import {labelsOf, nameOf} from "./state.js";

// names on the plot: logits, supernodes, pinned and user-labelled nodes, then the n most
// influential features; a name is placed below or above its node where it overlaps no other
// name nor node centre, else left to the hover text
export function placeLabels(st, D, x, y, range) {
  const {G, host} = st,
    plot = st.dom.plot;
  const pinned = new Set(host.get("pinned")),
    n = host.get("n_labels"),
    labels = labelsOf(st);
  const all = D.map((d, j) => j);
  const feats = all.filter(j => D[j].kind === "feature").sort((a, b) => D[b].influence - D[a].influence);
  const first = all.filter(
    j =>
      D[j].kind === "logit" ||
      D[j].kind === "supernode" ||
      pinned.has(D[j].id) ||
      (D[j].index >= 0 && labels[D[j].id]),
  );
  const want = first.concat(feats.slice(0, n).filter(j => !first.includes(j)));
  const fl = plot._fullLayout,
    xa = fl && fl.xaxis,
    ya = fl && fl.yaxis;
  const w = xa && xa._length ? xa._length : Math.max(200, plot.clientWidth - 68);
  const h = ya && ya._length ? ya._length : Math.max(200, host.height - 140);
  const px = v => ((v - range[0]) / (range[1] - range[0])) * w,
    py = v => ((G.n_layers + 0.7 - v) / (G.n_layers + 2.3)) * h;
  const boxes = [],
    out = [];
  const hits = (a, b) => a[0] < b[2] && b[0] < a[2] && a[1] < b[3] && b[1] < a[3];
  const covers = (box, j) =>
    D.some(
      (_, k) => k !== j && px(x[k]) > box[0] && px(x[k]) < box[2] && py(y[k]) > box[1] && py(y[k]) < box[3],
    );
  want.forEach(j => {
    const full = nameOf(st, D[j]),
      text = full.length > 24 ? full.slice(0, 23) + "…" : full;
    const tw = 6 * text.length + 4,
      cx = px(x[j]),
      cy = py(y[j]);
    for (const shift of [-13, 13]) {
      const box = [cx - tw / 2, cy - shift - 7, cx + tw / 2, cy - shift + 7];
      if (boxes.some(b => hits(b, box)) || covers(box, j)) continue;
      boxes.push(box);
      out.push({
        x: x[j],
        y: y[j],
        text: esc(text),
        yshift: shift,
        showarrow: false,
        font: {size: 10, color: "#222"},
        bgcolor: "rgba(255,255,255,0.82)",
        borderpad: 0,
        hovertext: esc(full),
        captureevents: false,
      });
      return;
    }
  });
  return out;
}
