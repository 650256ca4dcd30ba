// Where a view's state lives.  A host has get(key), set(key, value), on(key, fn), send(msg),
// onClose(fn), Plotly, interactive and height: the standalone page keeps its state in the page
// (labels and groups are not saved); the notebook widget keeps it in the kernel's model.

export function anbPageHost(initial) {
  const state = Object.assign({}, initial),
    listeners = {};
  return {
    Plotly: globalThis.Plotly,
    interactive: false,
    height: initial.height,
    get: key => state[key],
    set: (key, value) => {
      state[key] = value;
      (listeners[key] || []).forEach(fn => fn(value));
    },
    on: (key, fn) => {
      (listeners[key] = listeners[key] || []).push(fn);
    },
    send: () => {},
    onClose: () => {},
  };
}

// plotly.js, fetched from the kernel once per page (the widget carries no bundle)
export function anbPlotly(model) {
  if (globalThis.Plotly) return Promise.resolve(globalThis.Plotly);
  if (!globalThis.__anbPlotly) {
    globalThis.__anbPlotly = new Promise((resolve, reject) => {
      const got = msg => {
        if (!msg || msg.type !== "plotly") return;
        model.off("msg:custom", got);
        try {
          new Function("module", "define", msg.source)(undefined, undefined);
          resolve(globalThis.Plotly);
        } catch (err) {
          globalThis.__anbPlotly = null;
          reject(err);
        }
      };
      model.on("msg:custom", got);
      globalThis.__anbPlotlyRequests = (globalThis.__anbPlotlyRequests || 0) + 1;
      model.send({action: "plotly"});
    });
  }
  return globalThis.__anbPlotly;
}

export function anbModelHost(model, Plotly) {
  const closers = [];
  return {
    Plotly,
    interactive: model.get("has_model"),
    height: model.get("height"),
    get: key => model.get(key),
    set: (key, value) => {
      model.set(key, value);
      model.save_changes();
    },
    on: (key, fn) => {
      const cb = () => fn(model.get(key));
      model.on("change:" + key, cb);
      closers.push(() => model.off("change:" + key, cb));
    },
    send: msg => model.send(msg),
    onClose: fn => closers.push(fn),
    close: () => closers.forEach(fn => fn()),
  };
}
