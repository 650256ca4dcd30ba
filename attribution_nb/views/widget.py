"""The notebook view of an attribution graph: one anywidget whose front end is the standalone
page's (``static/js/``, see :func:`.page.front_end`), with its state kept here in the kernel.

``GraphWidget(graph, model)`` draws tokens at the bottom, one row per layer, logits on top,
one column per prompt position (as wide as its fullest cell).  The sliders prune in the
browser, exactly as :meth:`AttributionGraph.prune` (the payload carries each node's and edge's
ranked share, :mod:`.payload`); hovering a node highlights its edges, clicking opens its panel
(inputs and outputs to walk the graph, what a feature promotes and suppresses, where it fires
most), shift-click pins it.  With a model, the panel's buttons queue clamps on the selected
feature and run them; every refusal shows in the widget's status line.  Labels and supernodes
are written into the graph (``graph.set_label``, ``graph.add_supernode``), so ``graph.save``
keeps them.

plotly.js is sent once per browser page, not once per widget: the first widget's front end
asks the kernel for it and every later one finds it loaded.  anywidget (the ``notebook`` extra)
is imported when a widget is built.
"""

from __future__ import annotations

import time

import pandas as pd

from ..checks import as_float, as_int
from ..graph import AttributionGraph
from ..validation import validate
from .drawing import draw_data
from .intervening import InterventionControls, heads_shown, subgraph_groups, validation_run
from .page import front_end, initial_state, static_text
from .panel import edge_tables
from .payload import feature_details, graph_payload

STATE_KEYS = (
    "selected",
    "node_threshold",
    "edge_threshold",
    "collapse",
    "picked",
    "supernodes",
    "interventions",
)
_VIEW_CLASS: list = []


def check_state(graph, new) -> None:
    """A widget state checked whole against ``graph`` (before any of it is applied)."""
    if not isinstance(new, dict):
        raise TypeError(f"state must be a dict like widget.state, got {type(new).__name__}")
    unknown = set(new) - set(STATE_KEYS)
    if unknown:
        raise KeyError(f"unknown state keys {sorted(unknown)}; known: {list(STATE_KEYS)}")
    for key in ("node_threshold", "edge_threshold"):
        if key in new:
            as_float(key, new[key], 0.0, 1.0)
    for key in ("supernodes", "interventions"):
        if key in new and not isinstance(new[key], dict):
            raise TypeError(f"state[{key!r}] must be a dict, got {type(new[key]).__name__}")
    for name, members in (new.get("supernodes") or {}).items():
        if not isinstance(name, str) or not isinstance(members, list | tuple):
            raise ValueError(
                f"state['supernodes'] maps names to lists of node ids, got {name!r}: {members!r}"
            )
        missing = [m for m in members if m not in graph._index]
        if missing:
            raise KeyError(
                f"supernode {name!r}: nodes {missing[:5]} are not in this graph; nothing was changed"
            )
    for node_id in new.get("interventions") or {}:
        if node_id not in graph._index:
            raise KeyError(
                f"intervention on {node_id!r}, which is not in this graph; nothing was changed"
            )
    if "picked" in new and not isinstance(new["picked"], list | tuple):
        raise TypeError(
            f"state['picked'] must be a list of node ids, got {type(new['picked']).__name__}"
        )
    if new.get("selected") is not None and new["selected"] not in graph._index:
        raise KeyError(
            f"selected node {new['selected']!r} is not in this graph; nothing was changed"
        )


def _new_view(graph, model, node_threshold, edge_threshold, n_labels, height):
    """The anywidget view of a new :class:`GraphWidget`, its arguments checked by name."""
    payload = graph_payload(graph, model)
    max_edge = payload["max_edge_threshold"]
    state = initial_state(
        as_float("node_threshold", node_threshold, 0.0, 1.0),
        min(as_float("edge_threshold", edge_threshold, 0.0, 1.0), max_edge),
        as_int("height", height, minimum=200),
        as_int("n_labels", n_labels, minimum=0),
    )
    state.pop("height")
    return _view_class()(
        payload=payload,
        height=height,
        has_model=model is not None,
        **{k: v for k, v in state.items() if k not in ("supernodes", "status")},
        supernodes=payload["supernodes"],
    )


def _view_class():
    """The anywidget class (built once, on first use, so that importing this needs no anywidget)."""
    if _VIEW_CLASS:
        return _VIEW_CLASS[0]
    import anywidget
    import traitlets as t

    class GraphView(anywidget.AnyWidget):
        _esm = front_end(module=True)
        _css = static_text("view.css")
        payload = t.Dict().tag(sync=True)
        height = t.Int(560).tag(sync=True)
        has_model = t.Bool(False).tag(sync=True)
        node_threshold = t.Float(0.8).tag(sync=True)
        edge_threshold = t.Float(0.98).tag(sync=True)
        n_labels = t.Int(8).tag(sync=True)
        collapse = t.Bool(False).tag(sync=True)
        selected = t.Unicode(None, allow_none=True).tag(sync=True)
        pinned: t.List = t.List().tag(sync=True)
        labels = t.Dict().tag(sync=True)
        supernodes = t.Dict().tag(sync=True)
        queue: t.List = t.List().tag(sync=True)
        code = t.Unicode("").tag(sync=True)
        mode = t.Unicode("free").tag(sync=True)
        runs: t.List = t.List().tag(sync=True)
        status = t.Dict().tag(sync=True)
        details = t.Dict().tag(sync=True)
        heads = t.Dict().tag(sync=True)

    _VIEW_CLASS.append(GraphView)
    return GraphView


class GraphWidget(InterventionControls):
    """An interactive attribution graph for a notebook; show it by leaving it last in a cell.

    Args:
        graph: an :class:`AttributionGraph` (the full one: the sliders prune it).
        model: the :class:`ReplacementModel` it came from, to enable the clamp buttons and
            each feature's promoted/suppressed tokens and contexts.
        node_threshold, edge_threshold: initial slider values.
        n_labels: how many of the most influential features are named on the plot.
        height: the plot's height in pixels (its width follows the notebook's).
    """

    def __init__(
        self,
        graph: AttributionGraph,
        model=None,
        *,
        node_threshold: float = 0.8,
        edge_threshold: float = 0.98,
        n_labels: int = 8,
        height: int = 560,
    ):
        if not isinstance(graph, AttributionGraph):
            raise TypeError(f"GraphWidget needs an AttributionGraph, got {type(graph).__name__}")
        t0 = time.perf_counter()
        self.graph, self.model = graph, model
        self._interventions: dict = {}
        self.timings: dict = {}
        self.last_result: pd.DataFrame | None = None
        self.last_generation: dict | None = None
        self.view = _new_view(graph, model, node_threshold, edge_threshold, n_labels, height)
        self.view.on_msg(self._on_message)
        self.view.observe(self._note_rows, names=["node_threshold", "edge_threshold"])
        self._note_rows()
        self.timings["build_s"] = time.perf_counter() - t0

    def _note_rows(self, _change=None) -> None:
        """In the status line: where the sliders stand at thresholds that a graph built with
        adaptive rows is not proved exact for (:meth:`AttributionGraph.rows_note`)."""
        note = self.graph.rows_note(self.view.node_threshold, self.view.edge_threshold)
        if note:
            self.view.status = {"text": note, "level": "info", "rows_note": True}
        elif self.view.status.get("rows_note"):
            self.view.status = {}

    # -- display -----------------------------------------------------------------------
    def _ipython_display_(self):
        from IPython.display import display

        display(self.view)

    def _repr_mimebundle_(self, **kwargs):
        return self.view._repr_mimebundle_(**kwargs)

    # -- messages from the browser ---------------------------------------------------------
    def _on_message(self, _view, content, buffers) -> None:
        """An action from the front end; a refusal goes to the status line, never to a log."""
        if not isinstance(content, dict):
            return
        action = content.get("action")
        if action == "plotly":
            from plotly.offline import get_plotlyjs

            self.view.send({"type": "plotly", "source": get_plotlyjs()})
            return
        try:
            self._act(action, content)
        except (ValueError, KeyError, TypeError) as err:
            self.say(str(err.args[0]) if err.args else str(err), "error")

    def _act(self, action, content: dict) -> None:
        if action == "clamp":
            self.clamp(content.get("node"), content.get("how"))
        elif action == "run":
            self.run()
        elif action == "reset":
            self.reset()
        elif action == "label":
            self.set_label(content.get("node"), str(content.get("text") or ""))
        elif action == "group":
            self.view.pinned = list(content.get("members") or [])
            self.group(str(content.get("name") or ""))
        elif action == "details":
            self._send_details(content.get("node"))
        elif action == "validate":
            self.test_subgraph()
        elif action == "heads":
            self.show_heads(str(content.get("source")), str(content.get("target")))
        else:
            raise ValueError(f"unknown action {action!r}")

    def test_subgraph(self) -> pd.DataFrame:
        """Test the claims of the pinned nodes and supernodes (:func:`attribution_nb.validate`): the
        supernodes are groups, the pinned features not in one are a group "pinned"; the table goes
        to the run history."""
        if self.model is None:
            raise ValueError("this widget has no model: GraphWidget(graph, model) tests a subgraph")
        groups = subgraph_groups(self.graph, self.view.pinned)
        table = validate(self.graph, self.model, groups)
        agree = int(table.agrees.sum())
        self.view.runs = [*self.view.runs, validation_run(table, len(groups))]
        self.say(f"tested {len(table)} claims: {agree} agree with the model")
        return table

    def show_heads(self, source: str, target: str, n: int = 5) -> dict:
        """The heads that carry the edge ``source → target`` and, for the strongest, its top QK
        pairs (:func:`attribution_nb.edge_heads`, :func:`attribution_nb.attribute_attention`),
        shown in the panel; returns what is shown."""
        if self.model is None:
            raise ValueError(
                "this widget has no model: GraphWidget(graph, model) finds the heads of an edge"
            )
        shown, best, loads = heads_shown(self.model, self.graph, source, target, self._name, n)
        name = self._name
        self.view.heads = shown
        layer, head, load = int(best["layer"]), int(best["head"]), float(best["loading"])
        self.say(
            f"{name(source)} → {name(target)}: L{layer} head {head} carries {load:+.3g} "
            f"of {loads.attrs['edge']:+.3g}"
        )
        return shown

    def _name(self, node_id: str) -> str:
        if node_id == "bias" or node_id not in self.graph._index:
            return node_id
        n = self.graph.node(node_id)
        base = n.label if isinstance(n.label, str) and n.label else node_id
        return f"{base} · {n.token!r}"

    def say(self, text: str, level: str = "info") -> None:
        """Show ``text`` in the widget's status line (``level``: ``"info"`` or ``"error"``)."""
        self.view.status = {"text": str(text), "level": level}

    def _send_details(self, node_id) -> None:
        if self.model is None or node_id in self.view.details:
            return
        found = feature_details(self.graph, self.model, [node_id])
        if found:
            self.view.details = {**self.view.details, **found}

    # -- state -----------------------------------------------------------------------
    @property
    def state(self) -> dict:
        """Selected node, thresholds, collapse flag, pinned nodes, supernodes, queued clamps."""
        v = self.view
        return {
            "selected": v.selected,
            "node_threshold": float(v.node_threshold),
            "edge_threshold": float(v.edge_threshold),
            "collapse": bool(v.collapse),
            "picked": list(v.pinned),
            "supernodes": {k: list(m) for k, m in self.graph.supernodes.items()},
            "interventions": dict(self._interventions),
        }

    @state.setter
    def state(self, new: dict) -> None:
        """Apply a state (as :attr:`state` returns it), checked whole first: a refused state changes nothing."""
        check_state(self.graph, new)
        with self.view.hold_sync():
            if "supernodes" in new:
                self.graph.supernodes = {}
                for name, members in new["supernodes"].items():
                    self.graph.add_supernode(name, members)
                self.view.supernodes = {k: list(m) for k, m in self.graph.supernodes.items()}
            if "interventions" in new:
                self._interventions = {}
                for node_id, how in new["interventions"].items():
                    self.clamp(node_id, how)
            if "picked" in new:
                self.view.pinned = [nid for nid in new["picked"] if nid in self.graph._index]
            for key in ("node_threshold", "edge_threshold"):
                if key in new:
                    setattr(self.view, key, as_float(key, new[key], 0.0, 1.0))
            if "collapse" in new:
                self.view.collapse = bool(new["collapse"])
            if "selected" in new:
                self.select(new["selected"])

    def close(self) -> None:
        """Close the widget's view (a closed widget is not shown again) and drop its callbacks."""
        self.view.on_msg(self._on_message, remove=True)
        self.view.unobserve(self._note_rows, names=["node_threshold", "edge_threshold"])
        layout = getattr(self.view, "layout", None)
        self.view.close()
        if (
            layout is not None
        ):  # (a DOM widget's Layout is a widget of its own, registered until closed)
            layout.close()
        _forget_hot_reload(self.view)

    @property
    def drawn(self) -> dict:
        """What is on screen: numbers of nodes and edges, and the node ids (the browser prunes
        the payload by the same rule; the browser tests compare the two)."""
        data = draw_data(
            self.graph, self.view.node_threshold, self.view.edge_threshold, self.view.collapse
        )
        return {"nodes": data["n_nodes"], "edges": data["n_edges"], "ids": list(data["ids"])}

    # -- selection, labels, supernodes ---------------------------------------------------------
    def edge_tables(self, node_id: str, k: int = 5) -> dict[str, pd.DataFrame]:
        """Strongest incoming and outgoing edges of a node in the full graph, by sign."""
        return edge_tables(self.graph, node_id, k)

    def select(self, node_id: str | None) -> None:
        """Select a node (or a drawn supernode ``"s:<name>"``) and open its panel; None clears."""
        if node_id is not None and not isinstance(node_id, str):
            raise ValueError(f"select takes a node id string (or None), got {node_id!r}")
        if node_id is not None and not node_id.startswith("s:"):
            self.graph.index(node_id)  # raises for an unknown id
        self.view.selected = node_id

    def set_label(self, node_id: str | None, label: str) -> None:
        """Label a node on the plot and in the graph (``graph.save`` keeps it)."""
        if not isinstance(node_id, str) or node_id.startswith("s:"):
            raise ValueError(
                f"select a feature, error, token or logit node to label it, got {node_id!r}"
            )
        self.graph.set_label(node_id, label)
        self.view.labels = {**self.view.labels, node_id: label}

    def pick(self, node_id: str | None) -> None:
        """Pin a node (the browser: shift-click, or the panel's pin button)."""
        if node_id is None or node_id.startswith("s:"):
            raise ValueError("select a node to pin it")
        self.graph.index(node_id)
        if node_id not in self.view.pinned:
            self.view.pinned = [*self.view.pinned, node_id]

    pin = pick

    def group(self, name: str) -> None:
        """Name the pinned nodes as a supernode (kept in ``graph.supernodes``)."""
        pinned = list(self.view.pinned)
        if not pinned:
            raise ValueError(
                "pin some nodes first (shift-click them, or select one and press 'pin')"
            )
        self.graph.add_supernode(name, pinned)
        self.view.supernodes = {k: list(m) for k, m in self.graph.supernodes.items()}
        self.view.pinned = []


def _forget_hot_reload(view) -> None:
    """anywidget connects every widget to its class's front-end source (psygnal's ``changed``
    signal, for hot reload) and never disconnects it, so a closed widget would stay alive:
    disconnect the callbacks that hold this one.  (psygnal and anywidget internals; a no-op if
    they change.)"""
    for cls in type(view).__mro__:
        for key in ("_esm", "_css"):
            changed = getattr(cls.__dict__.get(key), "changed", None)
            if changed is None:
                continue
            for slot in list(getattr(changed, "_slots", ())):
                fn = slot.dereference() if hasattr(slot, "dereference") else None
                if any(
                    getattr(c, "cell_contents", None) is view
                    for c in getattr(fn, "__closure__", None) or ()
                ):
                    changed.disconnect(fn)
