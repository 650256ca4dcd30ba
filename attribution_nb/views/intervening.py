"""The widget's intervention controls: clamp the selected feature, run the model, show
before/after probabilities and a continuation (a part of :class:`GraphWidget`)."""

from __future__ import annotations

import html
from typing import Any

import pandas as pd

from ..interventions import Multiply

CLAMPS = {"ablate": 0.0, "-2x": Multiply(-2.0), "2x": Multiply(2.0)}


class InterventionControls:
    """Buttons and results for interventions; expects ``graph``, ``model``, ``_selected`` and
    ``_interventions`` on the widget it is part of."""

    graph: Any
    model: Any
    _selected: str | None
    _interventions: dict

    def _intervention_box(self, w) -> list:
        """Interventions first (short), above the node's panel (long); none without a model."""
        if self.model is None:
            return []
        b = dict(layout=w.Layout(width="70px"))
        self.ablate_button = w.Button(description="ablate", **b)
        self.inhibit_button = w.Button(description="−2×", **b)
        self.amplify_button = w.Button(description="2×", **b)
        self.value_slider = w.FloatSlider(value=0.0, min=-10.0, max=10.0, step=0.1, description="value",
                                          continuous_update=False, layout=w.Layout(width="260px"),
                                          style={"description_width": "45px"})
        self.set_button = w.Button(description="set", **b)
        self.mode = w.ToggleButtons(options=["free", "frozen"], value="free",
                                    tooltips=["a normal forward pass with the clamp",
                                              "attention, norms and other features fixed: direct effects"],
                                    style={"button_width": "64px"})
        self.run_button = w.Button(description="run", button_style="primary", **b)
        self.reset_button = w.Button(description="reset", **b)
        self.result = w.HTML()
        self.result.add_class("anb-result")
        for button, how in ((self.ablate_button, "ablate"), (self.inhibit_button, "-2x"), (self.amplify_button, "2x")):
            button.on_click(lambda _, how=how: self.clamp(self._selected, how))
        self.set_button.on_click(lambda _: self.clamp(self._selected, float(self.value_slider.value)))
        self.run_button.on_click(lambda _: self.run())
        self.reset_button.on_click(lambda _: self.reset())
        return [w.HTML("<b>Intervene on the selected feature</b>"),
                w.HBox([self.ablate_button, self.inhibit_button, self.amplify_button, self.set_button]),
                self.value_slider, w.HBox([self.mode, self.run_button, self.reset_button]), self.result]

    def clamp(self, node_id: str | None, how) -> None:
        """Queue an intervention on a feature: ``"ablate"``, ``"-2x"``, ``"2x"`` or a value."""
        if self.model is None:
            raise ValueError("this widget has no model: GraphWidget(graph, model) enables interventions")
        if node_id is None:
            raise ValueError("select a feature first")
        kind = self.graph.node(node_id).kind
        if kind not in ("feature", "error"):
            raise ValueError(f"{node_id} is a {kind} node; only features and error nodes can be clamped")
        self._interventions[node_id] = CLAMPS.get(how, how)
        self.result.value = self._pending_html()

    def _pending_html(self) -> str:
        if not self._interventions:
            return "<i>no interventions</i>"
        items = "".join(f"<li>{html.escape(k)} → {html.escape(str(v))}</li>" for k, v in self._interventions.items())
        return f"<div class='anb-pending'><b>pending</b><ul>{items}</ul></div>"

    def run(self, max_new_tokens: int = 6) -> pd.DataFrame:
        """Run the model with the queued interventions; show before/after probabilities and
        a greedy continuation."""
        if self.model is None:
            raise ValueError("this widget has no model: GraphWidget(graph, model) enables interventions")
        mode = self.mode.value
        table = self.model.intervene(self.graph.prompt, self._interventions, mode=mode, top_k=5)
        gen = self.model.generate(self.graph.prompt, self._interventions, max_new_tokens=max_new_tokens)
        self.last_result, self.last_generation = table, gen
        shown = table.head(8)[["token", "p_before", "p_after", "p_change"]]
        self.result.value = (self._pending_html() + f"<div class='anb-run'><b>{mode} run</b>"
                             + shown.to_html(index=False, border=0, float_format=lambda v: f"{v:.3f}",
                                             classes="anb-before-after")
                             + f"<div>before: …{html.escape(gen['before'])}<br>after: …{html.escape(gen['after'])}"
                             f"</div></div>")
        return table

    def reset(self) -> None:
        self._interventions = {}
        self.last_result = self.last_generation = None
        self.result.value = self._pending_html()
