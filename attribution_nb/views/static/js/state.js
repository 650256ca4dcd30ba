// The one state object of a view.  Every module reads and changes the view through it, and
// nothing else is shared: the graph payload, the host (the widget's model or the page's own
// store), the DOM parts, what is drawn now, and the render functions the mount wires in.
import {prune} from "./prune.js";

// G: the payload (payload.py); host: get/set/on/send (hosts.js); root: the element to fill
export function viewState(root, G, host) {
  return {
    G,
    host,
    root,
    Plotly: host.Plotly,
    S: G.style,
    KIND: G.style.kinds,
    N: G.nodes.id.length,
    E: G.edges.s.length,
    index: new Map(G.nodes.id.map((id, i) => [id, i])), // node id -> row of G.nodes
    dom: {}, // toolbar, status, plot, panel, tools, runs, sub, counts (mount.js)
    view: null, // what is drawn: {D, edges, x, y, range, ids} (draw.js)
    hovered: null, // the drawn node under the pointer
    // render functions, wired by mount.js: draw(), showPanel(), subgraph(), say(text, level)
    draw: null,
    showPanel: null,
    subgraph: null,
    say: null,
  };
}

export const labelsOf = st => st.host.get("labels") || {};

// a drawn node's name: the user's label where it has one
export const nameOf = (st, d) => (d.index >= 0 && labelsOf(st)[d.id]) || d.name;

// the kept nodes and edges at the host's thresholds
export const pruned = st => prune(st.G, st.host.get("node_threshold"), st.host.get("edge_threshold"));
