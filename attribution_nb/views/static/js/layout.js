// Where drawn nodes go: a column per prompt position, as wide as its fullest cell (a cell is
// one layer at one position); within a cell the most influential first, error nodes last,
// wrapped into sub-rows past the style's cell cap.

export function layout(G, S, D) {
  const rowOf = d => (d.kind === "token" ? -1 : d.kind === "logit" ? G.n_layers : d.layer);
  const cells = new Map();
  D.forEach((d, j) => {
    const key = rowOf(d) + ":" + d.position;
    if (!cells.has(key)) cells.set(key, []);
    cells.get(key).push(j);
  });
  const cap = S.cell_cap,
    width = new Array(G.tokens.length).fill(1);
  cells.forEach((js, key) => {
    const p = Number(key.split(":")[1]),
      wide = D[js[0]].kind === "logit" ? S.logit_spacing : 1;
    width[p] = Math.max(width[p], Math.min(js.length, cap) * wide);
  });
  const start = [],
    centre = [];
  let at = 0;
  width.forEach((w, p) => {
    start[p] = at;
    centre[p] = at + w / 2;
    at += w + S.column_gap;
  });
  const x = new Float64Array(D.length),
    y = new Float64Array(D.length);
  cells.forEach((js, key) => {
    const [row, p] = key.split(":").map(Number);
    const order = j => (D[j].kind === "error" ? -1 : D[j].influence);
    js.sort((a, b) => order(b) - order(a) || a - b);
    const rows = Math.ceil(js.length / cap),
      per = Math.ceil(js.length / rows);
    const wide = D[js[0]].kind === "logit" ? S.logit_spacing : 1;
    js.forEach((j, r) => {
      const q = Math.floor(r / per),
        k = r % per,
        inRow = Math.min(per, js.length - q * per);
      x[j] = centre[p] + (k - (inRow - 1) / 2) * wide;
      y[j] = row + (rows > 1 ? (q - (rows - 1) / 2) * (S.sub_row / (rows - 1 || 1)) : 0);
    });
  });
  return {x, y, centre, range: [-0.8, at - S.column_gap + 0.8]};
}

// the y axis: tokens, one tick per layer, logits
export function layerTicks(G) {
  return {
    tickvals: Array.from({length: G.n_layers + 2}, (_, k) => k - 1),
    ticktext: ["tokens"].concat(
      Array.from({length: G.n_layers}, (_, k) => "L" + k),
      ["logits"],
    ),
  };
}
