"""The cost curve: time and peak memory of ``attribute`` and of ``prune`` as the prompt grows
(8 → 256 tokens) and as transcoders grow (features per layer), printed as a table and drawn
as a plotly figure saved to HTML.

    python bench/scaling.py [--lengths 8 16 32 64 128 256] [--features 256 512 1024 2048 4096]
                            [--html bench/scaling.html]

Each point runs in fresh processes: one attributes (all active features, no cap) and saves
the graph, a second loads it and prunes it (0.8 / 0.98), so each peak (ru_maxrss, the
whole process: Python, torch and the model included) belongs to one step.  The model is
a tiny random Llama (4 layers, d_model 64, seeded JumpReLU transcoders), 2 threads.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time


def _attribute(tokens: int, features: int, out: str) -> dict:
    import torch

    import attribution_nb as anb
    from attribution_nb.demo import WORDS, tiny_model
    torch.set_num_threads(2)
    model = tiny_model("llama", seed=0, d_features=features)
    words = [w for w in WORDS if w.isalpha()]
    prompt = " ".join(words[(7 * i) % len(words)] for i in range(tokens - 1))
    anb.attribute(model, " ".join(words[:4]), progress=False)          # warm-up
    t = time.perf_counter()
    graph = anb.attribute(model, prompt, max_feature_nodes=None, progress=False)
    seconds = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    graph.save(out)
    return {"attribute_s": seconds, "attribute_peak_mb": peak, "features": int((graph.nodes.kind == "feature").sum()),
            "nodes": len(graph.nodes), "edges": graph.n_edges}


def _prune(path: str) -> dict:
    import attribution_nb as anb
    graph = anb.AttributionGraph.load(path)
    t = time.perf_counter()
    pruned = graph.prune(0.8, 0.98)
    seconds = time.perf_counter() - t
    return {"prune_s": seconds, "prune_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "pruned_edges": pruned.n_edges}


def _run(args: list[str]) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(out.stderr.strip().splitlines()[-1])
    return json.loads(out.stdout.strip().splitlines()[-1])


def point(tokens: int, features: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "g.graph")
        r = {"tokens": tokens, "features_per_layer": features}
        r.update(_run(["--_attribute", str(tokens), str(features), path]))
        r.update(_run(["--_prune", path]))
        r["graph_mb"] = os.path.getsize(path) / 2**20
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lengths", type=int, nargs="+", default=[8, 16, 32, 64, 128, 256])
    ap.add_argument("--features", type=int, nargs="+", default=[256, 512, 1024, 2048, 4096])
    ap.add_argument("--base-features", type=int, default=512, help="features per layer while the prompt grows")
    ap.add_argument("--base-tokens", type=int, default=32, help="prompt length while the features grow")
    ap.add_argument("--html", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "scaling.html"))
    ap.add_argument("--_attribute", nargs=3, help=argparse.SUPPRESS)
    ap.add_argument("--_prune", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._attribute:
        print(json.dumps(_attribute(int(args._attribute[0]), int(args._attribute[1]), args._attribute[2])))
        return
    if args._prune:
        print(json.dumps(_prune(args._prune)))
        return

    head = (f"{'tokens':>6} {'F/layer':>7} {'features':>8} {'edges':>11} {'attribute s':>11} {'peak MB':>8} "
            f"{'prune s':>8} {'peak MB':>8} {'file MB':>8} {'bytes/edge':>10}")
    sweeps = {"prompt length": [(n, args.base_features) for n in args.lengths],
              "features per layer": [(args.base_tokens, f) for f in args.features]}
    results = {}
    for name, points in sweeps.items():
        print(f"\n{name} (tiny Llama, 4 layers, d_model 64, 2 threads)\n{head}")
        results[name] = []
        for tokens, features in points:
            r = point(tokens, features)
            results[name].append(r)
            print(f"{r['tokens']:>6} {r['features_per_layer']:>7} {r['features']:>8} {r['edges']:>11} "
                  f"{r['attribute_s']:>11.2f} {r['attribute_peak_mb']:>8.0f} {r['prune_s']:>8.2f} "
                  f"{r['prune_peak_mb']:>8.0f} {r['graph_mb']:>8.1f} {r['graph_mb'] * 2**20 / max(r['edges'], 1):>10.1f}",
                  flush=True)

    import plotly.graph_objects as go
    from plotly.subplots import make_subplots
    fig = make_subplots(rows=2, cols=2, subplot_titles=["time vs prompt length", "peak memory vs edges",
                                                        "time vs features per layer", "edges vs prompt length"])
    length, width = results["prompt length"], results["features per layer"]
    x = [r["tokens"] for r in length]
    fig.add_trace(go.Scatter(x=x, y=[r["attribute_s"] for r in length], name="attribute (s)"), 1, 1)
    fig.add_trace(go.Scatter(x=x, y=[r["prune_s"] for r in length], name="prune (s)"), 1, 1)
    every = length + width
    fig.add_trace(go.Scatter(x=[r["edges"] for r in every], y=[r["attribute_peak_mb"] for r in every], mode="markers",
                             name="attribute peak (MB)"), 1, 2)
    fig.add_trace(go.Scatter(x=[r["edges"] for r in every], y=[r["prune_peak_mb"] for r in every], mode="markers",
                             name="load + prune peak (MB)"), 1, 2)
    xf = [r["features_per_layer"] for r in width]
    fig.add_trace(go.Scatter(x=xf, y=[r["attribute_s"] for r in width], name="attribute (s), 32 tokens"), 2, 1)
    fig.add_trace(go.Scatter(x=xf, y=[r["prune_s"] for r in width], name="prune (s), 32 tokens"), 2, 1)
    fig.add_trace(go.Scatter(x=x, y=[r["edges"] for r in length], name="edges"), 2, 2)
    for r, c in ((1, 1), (1, 2), (2, 1), (2, 2)):
        fig.update_xaxes(type="log", row=r, col=c)
        fig.update_yaxes(type="log", row=r, col=c)
    fig.update_layout(height=800, title="attribution_nb: cost of attribute and prune")
    fig.write_html(args.html, include_plotlyjs=True)
    print(f"\nwrote {args.html}")


if __name__ == "__main__":
    main()
