// The one front end of attribution_nb's graph views: the notebook widget (anywidget's
// initialize and render, below) and the standalone page both call anbMount, which builds the
// page parts, wires the render functions into the view's state (state.js) and subscribes
// them to the host's keys.
import {draw, placeAgain, restyleHighlight} from "./draw.js";
import {el, slider} from "./dom.js";
import {anbModelHost, anbPlotly} from "./hosts.js";
import {select, showPanel, togglePin} from "./panel.js";
import {showRuns} from "./runs.js";
import {viewState} from "./state.js";
import {subgraph} from "./subgraph.js";

// the toolbar: the two threshold sliders, how many names to show, collapse supernodes, counts
function toolbar(st) {
  const {G, host} = st,
    bar = el("div", "anb-toolbar");
  const nLabels = el("input", "anb-n-labels");
  nLabels.type = "number";
  nLabels.min = 0;
  nLabels.max = 99;
  nLabels.value = host.get("n_labels");
  nLabels.title = "how many of the most influential features are named on the plot";
  nLabels.addEventListener("change", () =>
    host.set("n_labels", Math.max(0, Math.min(99, parseInt(nLabels.value) || 0))),
  );
  host.on("n_labels", v => {
    nLabels.value = v;
    st.draw();
  });
  const collapse = el("input");
  collapse.type = "checkbox";
  collapse.checked = host.get("collapse");
  collapse.addEventListener("change", () => host.set("collapse", collapse.checked));
  host.on("collapse", v => {
    collapse.checked = v;
    st.draw();
  });
  const labelsBox = el("label", "anb-option"),
    collapseBox = el("label", "anb-option");
  labelsBox.append("labels ", nLabels);
  collapseBox.append(collapse, " collapse supernodes");
  st.dom.counts = el("span", "anb-counts");
  bar.append(
    slider(st, "node threshold", "node_threshold", G.max_node_threshold),
    slider(st, "edge threshold", "edge_threshold", G.max_edge_threshold),
    labelsBox,
    collapseBox,
    st.dom.counts,
  );
  return bar;
}

// the status line (role=status): the kernel's messages and the view's own
function statusLine(st) {
  const status = el("div", "anb-status"),
    host = st.host;
  status.setAttribute("role", "status");
  st.say = (text, level) => {
    status.textContent = text || "";
    status.dataset.level = level || "info";
    status.hidden = !text;
  };
  host.on("status", s => st.say(s && s.text, s && s.level));
  st.say(host.get("status") && host.get("status").text, host.get("status") && host.get("status").level);
  return status;
}

function build(st) {
  const {root, dom} = st;
  st.draw = () => draw(st);
  st.showPanel = () => showPanel(st);
  st.subgraph = () => subgraph(st);
  root.replaceChildren();
  root.classList.add("anb-view");
  const bar = toolbar(st),
    status = statusLine(st);
  const main = el("div", "anb-main"),
    side = el("div", "anb-side");
  dom.plot = el("div", "anb-plot");
  dom.panel = el("div", "anb-panel");
  dom.tools = el("div", "anb-tools");
  dom.runs = el("div", "anb-runs");
  side.append(dom.panel, dom.tools, dom.runs);
  main.append(dom.plot, side);
  dom.sub = el("div", "anb-subgraph");
  dom.sub.hidden = true;
  root.append(bar, status, main, dom.sub);
  dom.plot.style.height = side.style.maxHeight = st.host.height + "px";
}

// plot events: click selects (shift-click pins), hover highlights; a resize lays out again
function listen(st) {
  const {host, Plotly} = st,
    plot = st.dom.plot;
  host.on("runs", () => showRuns(st));
  ["selected", "pinned", "labels", "supernodes"].forEach(k => host.on(k, () => st.draw()));
  ["queue", "code", "details", "mode", "heads"].forEach(k => host.on(k, () => st.showPanel()));
  plot.on("plotly_click", ev => {
    const p = ev.points.find(q => q.customdata !== undefined && q.curveNumber === plot.data.length - 1);
    if (!p) return;
    if (ev.event && ev.event.shiftKey) togglePin(st, p.customdata);
    else select(st, p.customdata);
  });
  plot.on("plotly_hover", ev => {
    const p = ev.points.find(q => q.curveNumber === plot.data.length - 1);
    if (p && st.view) {
      st.hovered = st.view.ids.get(p.customdata);
      restyleHighlight(st, st.hovered);
    }
  });
  plot.on("plotly_unhover", () => {
    st.hovered = null;
    restyleHighlight(st, st.view ? st.view.ids.get(host.get("selected")) : null);
  });
  if (typeof ResizeObserver === "undefined") return;
  let pending = null;
  const watch = new ResizeObserver(() => {
    clearTimeout(pending);
    pending = setTimeout(() => {
      if (plot.offsetWidth) {
        Plotly.Plots.resize(plot);
        placeAgain(st);
      }
    }, 120);
  });
  watch.observe(plot);
  host.onClose(() => watch.disconnect());
}

export function anbMount(root, G, host) {
  const st = viewState(root, G, host);
  build(st);
  st.draw();
  placeAgain(st); // now that plotly has measured the axes (names are placed in pixels)
  showRuns(st);
  listen(st);
  return {draw: st.draw, select: id => select(st, id), state: st};
}

// anywidget calls initialize when the widget's model arrives, before any view: fetch plotly.js then
function initialize({model}) {
  anbPlotly(model).catch(() => {});
}

async function render({model, el: target}) {
  const t0 = performance.now();
  target.classList.add("anb-graph-widget");
  const wait = document.createElement("div");
  wait.className = "anb-loading";
  wait.textContent = "loading the graph view…";
  target.append(wait);
  const Plotly = await anbPlotly(model);
  const host = anbModelHost(model, Plotly);
  const t1 = performance.now();
  anbMount(target, model.get("payload"), host);
  // for bench/widget.py: when the view started, got plotly.js, and had drawn (ms since page load)
  (globalThis.__anbTimes = globalThis.__anbTimes || []).push([t0, t1, performance.now()]);
  return () => {
    host.close();
    Plotly.purge(target.querySelector(".anb-plot"));
  };
}

export default {initialize, render};
