"""The README's figure of the Qwen3-0.6B scaling run, from ``bench/results_scaling_qwen3.json``
(the numbers ``bench/scaling.py --model qwen3-0.6b`` printed) and the circuit-tracer points of
``bench/results_circuit_tracer.txt``:  ``python bench/plot_scaling_qwen3.py`` writes
``bench/scaling_qwen3.png`` (drawn by Debian's chromium)."""

import json
import os
import sys
import tempfile

import plotly.graph_objects as go
from plotly.subplots import make_subplots

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import scaling  # noqa: E402

#: circuit-tracer on the same case at 17 tokens (bench/results_circuit_tracer.txt): seconds
CIRCUIT_TRACER = {"defaults (batch 512)": 236.0, "batch 128": 91.8}


def main() -> None:
    res = json.load(open(os.path.join(HERE, "results_scaling_qwen3.json")))
    titles = ["against prompt length (16,384 F/layer)", "against features per layer (17 tokens)"]
    fig = make_subplots(rows=1, cols=2, subplot_titles=titles, specs=[[{"secondary_y": True}] * 2])
    for col, (name, key) in enumerate(
        (("prompt length", "tokens"), ("features per layer", "features_per_layer")), 1
    ):
        rows = res[name]
        x = [r[key] for r in rows]
        fig.add_trace(
            go.Scatter(
                x=x,
                y=[r["attribute_s"] for r in rows],
                name="attribute (s)",
                mode="lines+markers",
                line={"color": "#4c72b0"},
                showlegend=col == 1,
            ),
            1,
            col,
            secondary_y=False,
        )
        fig.add_trace(
            go.Scatter(
                x=x,
                y=[r["attribute_peak_mb"] / 1024 for r in rows],
                name="peak memory (GB)",
                mode="lines+markers",
                line={"color": "#dd8452", "dash": "dot"},
                showlegend=col == 1,
            ),
            1,
            col,
            secondary_y=True,
        )
        fig.update_xaxes(type="log", row=1, col=col, title_text=name)
        fig.update_yaxes(  # (the features panel from zero: its time hardly moves)
            type="log" if col == 1 else "linear",
            rangemode="tozero",
            row=1,
            col=col,
            secondary_y=False,
            title_text="seconds",
        )
        fig.update_yaxes(
            row=1,
            col=col,
            secondary_y=True,
            title_text="GB",
            type="linear",
            rangemode="tozero",
            dtick=4 if col == 1 else 2,
            showgrid=False,
        )
    for (label, seconds), symbol in zip(CIRCUIT_TRACER.items(), ("x", "x-open")):
        fig.add_trace(
            go.Scatter(
                x=[17],
                y=[seconds],
                name=f"circuit-tracer, {label} (s)",
                mode="markers",
                marker={"symbol": symbol, "size": 11, "color": "black"},
            ),
            1,
            1,
            secondary_y=False,
        )
    fig.update_layout(
        height=480,
        width=1150,
        legend={"orientation": "h", "y": -0.22},
        title="attribute on a Qwen3-0.6B-shaped model, 2 CPU threads, float32, at most 8,192 features kept",
    )
    with tempfile.TemporaryDirectory() as tmp:
        html = os.path.join(tmp, "figure.html")
        fig.write_html(html, include_plotlyjs=True)
        scaling.save_png(html, os.path.join(HERE, "scaling_qwen3.png"), height=500)


if __name__ == "__main__":
    main()
