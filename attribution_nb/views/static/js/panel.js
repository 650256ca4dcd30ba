// The side panel of the selected node: what it is, its strongest inputs and outputs (each a
// link to that node, with a "heads" button where attention carries the edge), the heads found
// for an edge, and a feature's promoted and suppressed tokens and top contexts.
import {button, el} from "./dom.js";
import {nameOf} from "./state.js";
import {toolRows} from "./tools.js";

export function select(st, id) {
  st.host.set("selected", id); // its listener redraws (the ring, the highlighted edges, the panel)
}

export function togglePin(st, id) {
  const pinned = st.host.get("pinned").slice(),
    k = pinned.indexOf(id);
  if (k >= 0) pinned.splice(k, 1);
  else pinned.push(id);
  st.host.set("pinned", pinned);
  if (!st.dom.sub.hidden) st.subgraph();
}

const signed = (value, digits) =>
  el(
    "span",
    "anb-weight " + (value > 0 ? "anb-pos" : "anb-neg"),
    (value > 0 ? "+" : "−") + Math.abs(value).toPrecision(digits),
  );

function neighbourRow(st, j, e, incoming) {
  const {G, view} = st,
    d = view.D[incoming ? e.s : e.t];
  const row = el("div", "anb-neighbour");
  row.tabIndex = 0;
  row.dataset.node = d.id;
  row.title = d.id;
  const where =
    d.index >= 0
      ? [
          JSON.stringify(G.nodes.token[d.index]),
          d.kind === "token" ? "token" : d.kind === "logit" ? "logit" : "L" + d.layer,
        ]
      : [d.kind];
  row.append(signed(e.w, 3), el("span", "anb-name", [nameOf(st, d)].concat(where).join(" · ")));
  row.addEventListener("click", () => select(st, d.id));
  row.addEventListener("keydown", ev => {
    if (ev.key === "Enter") select(st, d.id);
  });
  const src = incoming ? d : view.D[j],
    dst = incoming ? view.D[j] : d;
  if (
    st.host.interactive &&
    src.index >= 0 &&
    dst.index >= 0 &&
    G.nodes.position[src.index] < G.nodes.position[dst.index] &&
    G.nodes.kind[dst.index] !== "token"
  ) {
    row.append(
      button(
        "heads",
        "which attention heads carry this edge, and why they look there",
        ev => {
          ev.stopPropagation();
          st.say("finding the heads that carry " + src.id + " → " + dst.id + " …", "info");
          st.host.send({action: "heads", source: src.id, target: dst.id});
        },
        "anb-heads",
      ),
    );
  }
  return row;
}

function neighbours(st, j, incoming) {
  const list = st.view.edges
    .filter(e => (incoming ? e.t : e.s) === j)
    .sort((a, b) => Math.abs(b.w) - Math.abs(a.w));
  const box = el("div", "anb-neighbours");
  box.append(el("div", "anb-section", (incoming ? "inputs" : "outputs") + " (" + list.length + " drawn)"));
  list.slice(0, 8).forEach(e => box.append(neighbourRow(st, j, e, incoming)));
  return box;
}

function headsSection(c) {
  const box = el("div", "anb-carried");
  box.append(
    el(
      "div",
      "anb-section",
      "heads carrying " + c.source_name + " → " + c.target_name + " (edge " + c.edge.toPrecision(3) + ")",
    ),
  );
  c.rows.forEach(([layer, head, loading, weight]) => {
    const row = el("div", "anb-neighbour");
    row.append(
      signed(loading, 3),
      el(
        "span",
        "anb-name",
        "L" + layer + " head " + head + " · attends " + (100 * weight).toFixed(0) + "% to the source",
      ),
    );
    box.append(row);
  });
  if (c.qk && c.qk.length) {
    box.append(
      el(
        "div",
        "anb-section",
        "why L" +
          c.qk_head[0] +
          " head " +
          c.qk_head[1] +
          " looks there (score " +
          c.score.toPrecision(3) +
          "): query × key",
      ),
    );
    c.qk.forEach(([qname, kname, value]) => {
      const row = el("div", "anb-neighbour");
      row.append(signed(value, 3), el("span", "anb-name", qname + " × " + kname));
      box.append(row);
    });
  }
  return box;
}

function tokenList(title, items, cls) {
  const box = el("div", "anb-tokens"),
    line = el("div");
  box.append(el("div", "anb-section", title));
  items.forEach(([t, v]) => {
    const s = el("span", "anb-token " + cls, t);
    s.title = v.toPrecision(3);
    line.append(s);
  });
  box.append(line);
  return box;
}

function contextList(items) {
  const box = el("div", "anb-contexts");
  box.append(el("div", "anb-section", "where it fires most"));
  items.forEach(([text, act]) => {
    const row = el("div", "anb-context"),
      m = /^(.*)\[([^\]]*)\]\s*$/s.exec(text);
    if (m) row.append(m[1], el("mark", "", m[2]));
    else row.append(text);
    row.append(el("span", "anb-act", " " + Number(act).toPrecision(3)));
    box.append(row);
  });
  return box;
}

// what the node is: kind, layer, token, position; activation and influence, or probability
function nodeFacts(st, d) {
  const G = st.G,
    i = d.index;
  if (i < 0)
    return [
      el(
        "div",
        "anb-meta",
        "supernode of " + d.members.length + ": " + d.members.map(m => G.nodes.name[m]).join(", "),
      ),
    ];
  const bits = [d.kind, "token " + JSON.stringify(G.nodes.token[i]), "position " + G.nodes.position[i]];
  if (d.kind === "feature" || d.kind === "error") bits.splice(1, 0, "layer " + G.nodes.layer[i]);
  return [
    el("div", "anb-meta", bits.join(" · ")),
    el(
      "div",
      "anb-meta",
      d.kind === "logit"
        ? "probability " + G.nodes.probability[i].toFixed(3)
        : d.kind === "token"
          ? ""
          : "activation " +
            G.nodes.activation[i].toPrecision(4) +
            " · influence " +
            G.nodes.influence[i].toPrecision(4),
    ),
  ];
}

// a feature's details: from the payload, else asked of the kernel (they arrive in "details")
function featureDetails(st, d) {
  const info = (st.host.get("details") || {})[d.id] || st.G.details[d.id];
  if (!info) {
    if (st.host.interactive) st.host.send({action: "details", node: d.id});
    return [];
  }
  const out = info.latent ? [el("div", "anb-meta anb-latent", "detects " + info.latent)] : [];
  out.push(
    tokenList("promotes", info.promotes, "anb-pos"),
    tokenList("suppresses", info.suppresses, "anb-neg"),
  );
  if (info.contexts.length) out.push(contextList(info.contexts));
  return out;
}

export function showPanel(st) {
  const {host, view, dom} = st,
    id = host.get("selected"),
    j = view ? view.ids.get(id) : undefined;
  const panel = dom.panel;
  panel.replaceChildren();
  if (id === null || id === undefined) {
    panel.append(
      el("div", "anb-hint", "Hover a node to see its edges; click it for its panel. Shift-click pins it."),
    );
  } else if (j === undefined) {
    panel.append(el("div", "anb-hint", id + " is not drawn at these thresholds."));
  } else {
    const d = view.D[j];
    panel.append(
      el("div", "anb-node-name", nameOf(st, d)),
      el("div", "anb-node-title", d.id),
      ...nodeFacts(st, d),
    );
    const pin = button(
      new Set(host.get("pinned")).has(d.id) ? "unpin" : "pin",
      "keep this node in the subgraph view",
      () => togglePin(st, d.id),
      "anb-pin",
    );
    panel.append(pin, neighbours(st, j, true), neighbours(st, j, false));
    const carried = host.get("heads");
    if (carried && carried.rows && (carried.source === d.id || carried.target === d.id))
      panel.append(headsSection(carried));
    if (d.kind === "feature") panel.append(...featureDetails(st, d));
  }
  dom.tools.replaceChildren(...toolRows(st, j === undefined ? null : view.D[j]));
}
