// Small DOM helpers.  Every string from the graph goes into the page as text (textContent),
// never as markup; plotly's hover and tick texts read a little HTML, so those go through esc.

export function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

export function button(text, title, onClick, cls) {
  const b = el("button", "anb-button" + (cls ? " " + cls : ""), text);
  b.type = "button";
  if (title) b.title = title;
  b.addEventListener("click", onClick);
  return b;
}

export function row(title, ...items) {
  const r = el("div", "anb-row");
  if (title) r.append(el("span", "anb-row-title", title));
  r.append(...items);
  return r;
}

export function esc(text) {
  return String(text).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

// a threshold slider bound to the host's `key`; a change from either side redraws
export function slider(st, label, key, max) {
  const box = el("label", "anb-slider"),
    input = el("input"),
    value = el("span", "anb-slider-value");
  input.type = "range";
  input.min = 0;
  input.max = max;
  input.step = 0.001;
  input.value = st.host.get(key);
  input.dataset.key = key;
  value.textContent = Number(input.value).toFixed(3);
  input.addEventListener("input", () => {
    value.textContent = Number(input.value).toFixed(3);
    st.host.set(key, Number(input.value));
  });
  st.host.on(key, v => {
    input.value = v;
    value.textContent = Number(v).toFixed(3);
    st.draw();
  });
  box.append(label + " ", input, value);
  return box;
}

// select a node's text for copying, where the page may not write the clipboard
export function selectText(st, node) {
  const range = document.createRange();
  range.selectNodeContents(node);
  const s = window.getSelection();
  s.removeAllRanges();
  s.addRange(range);
  st.say("the call is selected: press Ctrl+C (this page cannot write the clipboard)", "info");
}
