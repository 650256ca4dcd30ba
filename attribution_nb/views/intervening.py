"""The widget's interventions: queue clamps on features, run them, keep a history of runs
(a part of :class:`GraphWidget`).  The queue is shown with the ``model.intervene(...)`` call
that repeats it; a frozen run also shows the change the graph's edges predict for each logit
next to the observed one (they agree: in frozen mode the logits are linear in the clamped
activations, and the edges into the logits are exactly those slopes)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ..attention import attribute_attention, edge_heads
from ..ids import NodeId
from ..interventions import Multiply, Steer, as_how, demeaned_logit_change, intervention_table
from ..validation import predicted_logit_changes


def as_code(how) -> str:
    """An intervention as the Python that makes it."""
    if isinstance(how, Multiply):
        return f"anb.Multiply({how.factor!r})"
    if isinstance(how, Steer):
        return f"anb.Steer({how.scale!r})"
    return repr(float(how))


def describe(how) -> str:
    """An intervention in a few characters: ``×-2``, ``steer +2.5``, ``= 0``."""
    if isinstance(how, Multiply):
        return f"×{how.factor:g}"
    if isinstance(how, Steer):
        return f"steer {how.scale:+g}"
    return f"= {float(how):g}"


class InterventionControls:
    """Queue, run and reset; expects ``graph``, ``model``, ``view`` and ``_interventions`` on the
    widget it is part of."""

    graph: Any
    model: Any
    view: Any
    _interventions: dict
    last_result: pd.DataFrame | None
    last_generation: dict | None

    def _need_model(self) -> None:
        if self.model is None:
            raise ValueError(
                "this widget has no model: GraphWidget(graph, model) enables interventions"
            )

    def clamp(self, node_id: str | None, how) -> None:
        """Queue an intervention on a feature or error node: ``"ablate"``, ``"-2x"``, ``"2x"``,
        a value, or a :class:`Multiply` / :class:`Steer`."""
        self._need_model()
        if node_id is None:
            raise ValueError("select a feature first")
        kind = self.graph.node(node_id).kind
        if kind not in ("feature", "error"):
            raise ValueError(
                f"{node_id} is a {kind} node; only features and error nodes can be clamped"
            )
        how = as_how(
            node_id,
            how,
            value_name="a clamp value",
            refusal=f"a clamp is 'ablate', '-2x', '2x', a finite number, Multiply or Steer; got {how!r}",
        )
        self._interventions[node_id] = how
        self._show_queue()

    def _show_queue(self) -> None:
        items = list(self._interventions.items())
        self.view.queue = [[k, describe(v)] for k, v in items]
        body = ", ".join(f"{k!r}: {as_code(v)}" for k, v in items)
        self.view.code = (
            f"model.intervene({self.graph.prompt!r}, {{{body}}}, mode={self.view.mode!r})"
            if items
            else ""
        )

    def run(self, max_new_tokens: int = 6) -> pd.DataFrame:
        """Run the model with the queued interventions (in the view's mode, free or frozen) and
        add the before/after table to the run history."""
        self._need_model()
        if not self._interventions:
            raise ValueError(
                "nothing queued: select a feature, then ablate, −2×, 2× or set, then run"
            )
        mode = self.view.mode
        prompt, clamps = self.graph.prompt, dict(self._interventions)
        before, after = self.model.intervened_logits(prompt, clamps, mode=mode)
        table = intervention_table(self.model, before, after, 5)
        record = {
            "mode": mode,
            "what": ", ".join(
                f"{self.graph.node(k).label or k} {describe(v)}" for k, v in clamps.items()
            ),
            "columns": ["token", "p before", "p after", "change"],
            "rows": [
                [t, f"{a:.3f}", f"{b:.3f}", f"{c:+.3f}"]
                for t, a, b, c in table.head(8)[
                    ["token", "p_before", "p_after", "p_change"]
                ].itertuples(index=False)
            ],
        }
        if mode == "frozen":
            predicted = self.predicted_change(clamps)
            tokens = self.graph.logits.token_id
            observed = demeaned_logit_change(
                before, after, tokens.fillna(0).to_numpy(dtype=np.int64)
            )
            record["columns"] = ["logit", "predicted Δ", "observed Δ"]
            record["rows"] = [
                [t, f"{p:+.4f}", "—" if pd.isna(tid) else f"{o:+.4f}"]
                for t, tid, p, o in zip(self.graph.logits.token, tokens, predicted, observed)
            ]
            self.last_generation = None
        else:
            gen = self.model.generate(prompt, clamps, max_new_tokens=max_new_tokens)
            record["before"], record["after"] = gen["before"], gen["after"]
            self.last_generation = gen
        self.last_result = table
        self.view.runs = [*self.view.runs, record]
        self.view.status = {"text": f"{mode} run #{len(self.view.runs)} done", "level": "info"}
        return table

    def predicted_change(self, clamps: dict) -> np.ndarray:
        """The change of each logit node's (demeaned) logit that the graph's edges predict for
        ``clamps`` in frozen mode (:func:`~attribution_nb.validation.predicted_logit_changes`)."""
        return predicted_logit_changes(self.graph, clamps)

    def reset(self) -> None:
        """Clear the queue (the run history stays)."""
        self._interventions = {}
        self.last_result = self.last_generation = None
        self._show_queue()


def subgraph_groups(graph, pinned) -> dict:
    """The groups "test this subgraph" validates: the supernodes, and the pinned features that are
    in none as one group "pinned"; refused by name when there are none."""
    groups = {k: list(v) for k, v in graph.supernodes.items()}
    grouped = {m for v in groups.values() for m in v}
    pinned = [n for n in pinned if n not in grouped and graph.node(n).kind == "feature"]
    if pinned:
        groups["pinned"] = pinned
    if not groups:
        raise ValueError("pin some features (shift-click) or group them into supernodes first")
    return groups


def validation_run(table: pd.DataFrame, n_groups: int) -> dict:
    """A validation table as an entry of the widget's run history."""
    agree = int(table.agrees.sum())
    return {
        "mode": "test",
        "what": f"{len(table)} claims of {n_groups} groups, {agree} agree",
        "columns": ["claim", "group", "affects", "predicted", "observed", "agrees"],
        "rows": [
            [c, g, a, f"{p:+.3g}", f"{o:+.3g}", "yes" if ok else "no"]
            for c, g, a, p, o, ok in table.itertuples(index=False)
        ],
    }


def heads_shown(model, graph, source: str, target: str, name, n: int = 5):
    """What the panel shows for an edge's heads (:func:`~attribution_nb.edge_heads`) and the
    strongest head's top query × key pairs (:func:`~attribution_nb.attribute_attention`); with
    the strongest head's row and the loadings table."""
    loads = edge_heads(model, graph.prompt, source, target)
    best = loads.iloc[0]
    last = len(graph.tokens) - 1
    q = last if NodeId.kind_of(target) == "logit" else int(graph.node(target).position)
    layer, head = int(best["layer"]), int(best["head"])
    qk = attribute_attention(model, graph.prompt, layer, head, q, int(graph.node(source).position))
    pairs = qk.head(n)[["query_node", "key_node", "contribution"]].itertuples(index=False)
    shown = {
        "source": source,
        "target": target,
        "source_name": name(source),
        "target_name": name(target),
        "edge": loads.attrs["edge"],
        "rows": loads.head(n).values.tolist(),
        "qk_head": [layer, head],
        "score": qk.attrs["score"],
        "qk": [[name(a), name(b), float(c)] for a, b, c in pairs],
    }
    return shown, best, loads
