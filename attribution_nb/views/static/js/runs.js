// The history of intervention runs the kernel reports: newest first, each a before/after table
// (and, for a generation, the text before and after).
import {el} from "./dom.js";

export function showRuns(st) {
  const runs = st.dom.runs,
    list = st.host.get("runs") || [];
  runs.replaceChildren();
  if (!list.length) return;
  runs.append(el("div", "anb-section", "runs (" + list.length + ")"));
  list
    .slice()
    .reverse()
    .forEach((r, k) => {
      const box = el("details", "anb-run");
      box.open = k === 0;
      box.append(el("summary", "", "#" + (list.length - k) + " " + r.mode + ": " + r.what));
      const table = el("table", "anb-before-after"),
        head = table.insertRow();
      r.columns.forEach(c => head.append(el("th", "", c)));
      r.rows.forEach(cells => {
        const tr = table.insertRow();
        cells.forEach(c => {
          tr.insertCell().textContent = c;
        });
      });
      box.append(table);
      if (r.before !== undefined)
        box.append(el("div", "anb-gen", "before: …" + r.before), el("div", "anb-gen", "after: …" + r.after));
      runs.append(box);
    });
}
