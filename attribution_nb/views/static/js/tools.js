// The tools under the panel: label the selected node, group the pinned nodes as a supernode,
// show the pinned subgraph, test it, and queue interventions (clamps) to run in the kernel.
import {button, el, row, selectText} from "./dom.js";
import {labelsOf, nameOf} from "./state.js";

function labelRow(st, d) {
  const {G, host} = st,
    editable = d && d.index >= 0;
  const input = el("input", "anb-text");
  input.placeholder = "label for the selected node";
  input.value = editable ? labelsOf(st)[d.id] || G.nodes.label[d.index] || "" : "";
  input.disabled = !editable;
  const save = button("save label", "name this node on the plot and in the saved graph", () => {
    const text = input.value.trim();
    if (!text) return st.say("type a label first", "error");
    host.set("labels", Object.assign({}, labelsOf(st), {[d.id]: text}));
    host.send({action: "label", node: d.id, text});
  });
  save.disabled = !editable;
  return row("label", input, save);
}

function groupRow(st, show) {
  const host = st.host,
    pinned = host.get("pinned");
  const name = el("input", "anb-text");
  name.placeholder = "supernode name";
  const group = button("group pinned", "name the pinned nodes as one supernode", () => {
    const text = name.value.trim();
    if (!text) return st.say("give the supernode a name", "error");
    if (!pinned.length) return st.say("pin some nodes first (shift-click, or the pin button)", "error");
    host.set("supernodes", Object.assign({}, host.get("supernodes"), {[text]: pinned.slice()}));
    host.send({action: "group", name: text, members: pinned.slice()});
    host.set("pinned", []);
    st.say("supernode " + JSON.stringify(text) + " holds " + pinned.length + " nodes", "info");
  });
  group.disabled = !pinned.length;
  return row("pinned: " + pinned.length, name, group, show);
}

export function toolRows(st, d) {
  const {host, dom} = st;
  const show = button(
    dom.sub.hidden ? "subgraph" : "hide subgraph",
    "the pinned nodes and supernodes laid out alone, for export",
    () => {
      dom.sub.hidden = !dom.sub.hidden;
      if (!dom.sub.hidden) st.subgraph();
      st.showPanel();
    },
  );
  show.disabled = !host.get("pinned").length && !Object.keys(host.get("supernodes")).length;
  const rows = [labelRow(st, d), groupRow(st, show)];
  if (!host.interactive) return rows;
  const test = button(
    "test this subgraph",
    "inhibit each group and compare the model with what the graph predicts",
    () => {
      st.say("testing the pinned nodes and supernodes …", "info");
      host.send({action: "validate"});
    },
  );
  test.disabled = show.disabled;
  return rows.concat([row("", test)], interventionRows(st, d));
}

function clampButtons(st, d, clampable) {
  const clamp = how => () => st.host.send({action: "clamp", node: d.id, how});
  const value = el("input", "anb-value");
  value.type = "number";
  value.step = 0.1;
  value.value = 0;
  const buttons = [
    button("ablate", "set the activation to 0", clamp("ablate")),
    button("−2×", "multiply the activation by −2", clamp("-2x")),
    button("2×", "multiply the activation by 2", clamp("2x")),
    value,
    button("set", "set the activation to this value", () =>
      st.host.send({action: "clamp", node: d.id, how: Number(value.value)}),
    ),
  ];
  buttons.forEach(b => {
    b.disabled = !clampable;
  });
  return buttons;
}

function modeChoice(st) {
  const mode = el("select", "anb-mode");
  [
    ["free", "free: a normal forward pass"],
    ["frozen", "frozen: attention, norms, other features fixed"],
  ].forEach(([v, t]) => {
    const o = el("option", "", t);
    o.value = v;
    mode.append(o);
  });
  mode.value = st.host.get("mode");
  mode.addEventListener("change", () => st.host.set("mode", mode.value));
  return mode;
}

// the queued clamps and the intervene(...) call they make, with a copy button
function queueList(st, queue) {
  const list = el("div", "anb-queue");
  queue.forEach(([id, text]) =>
    list.append(el("div", "", st.G.nodes.name[st.index.get(id)] + " (" + id + ") → " + text)),
  );
  const code = el("pre", "anb-code", st.host.get("code"));
  const copy = button("copy as code", "copy the model.intervene(...) call", () => {
    const done = () => st.say("copied the intervene(...) call", "info");
    if (navigator.clipboard && window.isSecureContext)
      navigator.clipboard.writeText(code.textContent).then(done, () => selectText(st, code));
    else selectText(st, code);
  });
  return [list, code, row("", copy)];
}

function interventionRows(st, d) {
  const host = st.host,
    clampable = d && d.index >= 0 && (d.kind === "feature" || d.kind === "error");
  const queue = host.get("queue") || [];
  const run = button(
    "run",
    "run the model with the queued interventions",
    () => host.send({action: "run"}),
    "anb-primary",
  );
  const reset = button("reset", "clear the queue", () => host.send({action: "reset"}));
  run.disabled = reset.disabled = !queue.length;
  const out = [
    el(
      "div",
      "anb-section",
      "intervene" + (clampable ? " on " + nameOf(st, d) : " (select a feature or error node)"),
    ),
    row("", ...clampButtons(st, d, clampable)),
    row("", modeChoice(st), run, reset),
  ];
  return queue.length ? out.concat(queueList(st, queue)) : out;
}
