// Pruning, the same rule as AttributionGraph.prune (see payload.py): a node is kept when its
// node share is under the threshold, an edge when its edge share is; then, until nothing
// changes, edges lose ends that are gone, features need an input and an output, error nodes
// an output.  Tokens and logits always stay.  Pure functions of the payload: no DOM.

// tokens and logits: always kept, never pruned
export const isFixed = (G, i) => G.nodes.kind[i] === "token" || G.nodes.kind[i] === "logit";

export function prune(G, nt, et) {
  const N = G.nodes.id.length,
    E = G.edges.s.length,
    kind = G.nodes.kind;
  const fixed = i => isFixed(G, i);
  const node = new Uint8Array(N),
    edge = new Uint8Array(E);
  for (let i = 0; i < N; i++) node[i] = fixed(i) || (nt > 0 && G.nodes.mb[i] < nt) ? 1 : 0;
  for (let e = 0; e < E; e++) edge[e] = et > 0 && G.edges.mb[e] < et ? 1 : 0;
  for (;;) {
    const hasIn = new Uint8Array(N),
      hasOut = new Uint8Array(N);
    for (let e = 0; e < E; e++) {
      if (edge[e] && !(node[G.edges.s[e]] && node[G.edges.t[e]])) edge[e] = 0;
      if (edge[e]) {
        hasIn[G.edges.t[e]] = 1;
        hasOut[G.edges.s[e]] = 1;
      }
    }
    let changed = false;
    for (let i = 0; i < N; i++) {
      const k = kind[i];
      const keep = fixed(i) || (k === "feature" && hasIn[i] && hasOut[i]) || (k === "error" && hasOut[i]);
      if (node[i] && !keep) {
        node[i] = 0;
        changed = true;
      }
    }
    if (!changed) return {node, edge};
  }
}

// drawn nodes: one per kept node, or one per supernode of `groups` ({name: [ids]}, {} when
// not collapsed), with the kept edges between them summed
export function drawnNodes(G, node, edge, groups) {
  const N = G.nodes.id.length,
    E = G.edges.s.length;
  const owner = new Map();
  Object.entries(groups).forEach(([name, members]) => members.forEach(id => owner.set(id, name)));
  const D = [],
    of = new Int32Array(N).fill(-1),
    byName = new Map();
  for (let i = 0; i < N; i++) {
    if (!node[i]) continue;
    const name = owner.get(G.nodes.id[i]);
    if (name === undefined) {
      of[i] = D.length;
      D.push({id: G.nodes.id[i], members: [i], kind: G.nodes.kind[i]});
      continue;
    }
    if (!byName.has(name)) {
      byName.set(name, D.length);
      D.push({id: "s:" + name, name, members: [], kind: "supernode"});
    }
    of[i] = byName.get(name);
    D[of[i]].members.push(i);
  }
  D.forEach(d => describe(G, d));
  const sums = new Map();
  for (let e = 0; e < E; e++) {
    if (!edge[e]) continue;
    const s = of[G.edges.s[e]],
      t = of[G.edges.t[e]];
    if (s === t) continue;
    const key = s * D.length + t;
    sums.set(key, (sums.get(key) || 0) + G.edges.w[e]);
  }
  const edges = Array.from(sums, ([key, w]) => ({s: Math.floor(key / D.length), t: key % D.length, w}));
  return {D, edges};
}

// a drawn node's layer, position, influence, name and payload row (−1 for a supernode)
function describe(G, d) {
  const m = d.members,
    mean = a => m.reduce((s, i) => s + a[i], 0) / m.length;
  const group = d.kind === "supernode";
  d.layer = group ? Math.round(mean(G.nodes.layer)) : G.nodes.layer[m[0]];
  d.position = group ? Math.round(mean(G.nodes.position)) : G.nodes.position[m[0]];
  d.influence = m.reduce((s, i) => s + Math.max(G.nodes.influence[i], 0), 0);
  d.name = group ? d.name + " (" + m.length + ")" : G.nodes.name[m[0]];
  d.index = m.length === 1 && !group ? m[0] : -1;
}
