"""The cost curve: time and peak memory of ``attribute`` and of ``prune`` as the prompt grows
(8 → 256 tokens) and as transcoders grow (features per layer), printed as a table and drawn
as a plotly figure saved to HTML.

    python bench/scaling.py [--lengths 8 16 32 64 128 256] [--features 256 512 1024 2048 4096]
                            [--html bench/scaling.html]

Each point runs in fresh processes: one attributes (all active features, no cap) and saves
the graph, a second loads it and prunes it (0.8 / 0.98), so each peak (ru_maxrss, the
whole process: Python, torch and the model included) belongs to one step.  The model is
a tiny random Llama (4 layers, d_model 64, seeded JumpReLU transcoders), 2 threads.

    python bench/scaling.py --model qwen3-0.6b [--lengths 17 32 64 128 256] [--features 2048 8192 16384 32768]
                            [--png bench/scaling_qwen3.png]

``--model qwen3-0.6b`` (or ``smollm2``): the real-size case of ``bench/compare_circuit_tracer.py``
(Qwen3-0.6B's config with seeded random weights, calibrated JumpReLU transcoders, ~10 active
features per token per layer), prompts cut from one natural text, ``attribute``'s defaults (at
most 8,192 features kept), each point started when the rest of the machine is quiet; the
printout ends with each curve's fitted exponent (the slope of log cost against log size) and
``--png`` also saves the figure as an image (drawn by Debian's chromium).
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

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare_circuit_tracer as cct  # noqa: E402  (the real-size cases are built there)


def _attribute(tokens: int, features: int, out: str) -> dict:
    import torch

    import attribution_nb as anb
    from attribution_nb.demo import WORDS, tiny_model

    torch.set_num_threads(2)
    model = tiny_model("llama", seed=0, d_features=features)
    words = [w for w in WORDS if w.isalpha()]
    prompt = " ".join(words[(7 * i) % len(words)] for i in range(tokens - 1))
    anb.attribute(model, " ".join(words[:4]), progress=False)  # warm-up
    t = time.perf_counter()
    graph = anb.attribute(model, prompt, max_feature_nodes=None, progress=False)
    seconds = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    graph.save(out)
    return {
        "attribute_s": seconds,
        "attribute_peak_mb": peak,
        "features": int((graph.nodes.kind == "feature").sum()),
        "nodes": len(graph.nodes),
        "edges": graph.n_edges,
    }


def _attribute_real(name: str, tokens: int, features: int, out: str) -> dict:
    """One point of the real-size case ``name``: a warm-up on 17 tokens, then ``attribute`` timed."""
    import torch
    from transformers import AutoTokenizer

    import attribution_nb as anb

    torch.set_num_threads(2)
    folder = cct.REAL_MODELS[name][1](features)
    tok = AutoTokenizer.from_pretrained(folder)
    ids = [tok.bos_token_id, *tok(cct.LONG_TEXT)["input_ids"]][:tokens]
    if len(ids) < tokens:
        raise SystemExit(f"the bench's text has {len(ids)} tokens, fewer than {tokens}")
    model = anb.load_model(folder, transcoders=os.path.join(folder, "transcoders"))
    anb.attribute(model, ids[:17], progress=False)  # warm-up
    t = time.perf_counter()
    graph = anb.attribute(model, ids, progress=False)
    seconds = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    graph.save(out)
    info = graph.info
    return {
        "attribute_s": seconds,
        "attribute_peak_mb": peak,
        "features": int((graph.nodes.kind == "feature").sum()),
        "active": info["n_active_features"],
        "rows": info.get("feature_rows", 0),
        "batch": info["batch_size"],
        "nodes": len(graph.nodes),
        "edges": graph.n_edges,
        "timings": info["timings"],
    }


def _prune(path: str) -> dict:
    import attribution_nb as anb

    graph = anb.AttributionGraph.load(path)
    t = time.perf_counter()
    pruned = graph.prune(0.8, 0.98)
    seconds = time.perf_counter() - t
    return {
        "prune_s": seconds,
        "prune_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "pruned_edges": pruned.n_edges,
    }


def _run(args: list[str]) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(out.stderr.strip().splitlines()[-1])
    return json.loads(out.stdout.strip().splitlines()[-1])


def point(tokens: int, features: int, model: str = "tiny") -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "g.graph")
        r = {"tokens": tokens, "features_per_layer": features}
        if model != "tiny":
            cct.REAL_MODELS[model][1](features)  # built once, outside the timed process
            r["load"] = cct.quiet()
        r.update(_run(["--_attribute", str(tokens), str(features), path, model]))
        r.update(_run(["--_prune", path]))
        r["graph_mb"] = os.path.getsize(path) / 2**20
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lengths", type=int, nargs="+", default=[8, 16, 32, 64, 128, 256])
    ap.add_argument("--features", type=int, nargs="+", default=[256, 512, 1024, 2048, 4096])
    ap.add_argument(
        "--base-features", type=int, default=512, help="features per layer while the prompt grows"
    )
    ap.add_argument(
        "--base-tokens", type=int, default=32, help="prompt length while the features grow"
    )
    ap.add_argument(
        "--html", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "scaling.html")
    )
    ap.add_argument(
        "--model",
        choices=["tiny", *sorted(cct.REAL_MODELS)],
        default="tiny",
        help="tiny (default) or a real-size case (then lengths 17-256, features 2k-32k by default)",
    )
    ap.add_argument(
        "--png", help="also save the figure as this PNG (with --model; Debian's chromium draws it)"
    )
    ap.add_argument("--json", help="also write the results to this file")
    ap.add_argument("--_attribute", nargs=4, help=argparse.SUPPRESS)
    ap.add_argument("--_prune", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._attribute:
        n, f, out, model = args._attribute
        fn = _attribute if model == "tiny" else lambda *a: _attribute_real(model, *a)
        print(json.dumps(fn(int(n), int(f), out)))
        return
    real = args.model != "tiny"
    if real:
        defaults = {
            "lengths": [17, 32, 64, 128, 256],
            "features": [2048, 8192, 16384, 32768],
            "base_features": 16384,
            "base_tokens": 17,
        }
        for key, value in defaults.items():  # the tiny defaults are replaced unless given
            if getattr(args, key) == ap.get_default(key):
                setattr(args, key, value)
    if args._prune:
        print(json.dumps(_prune(args._prune)))
        return

    head = (
        f"{'tokens':>6} {'F/layer':>7} {'features':>8} {'edges':>11} {'attribute s':>11} {'peak MB':>8} "
        f"{'prune s':>8} {'peak MB':>8} {'file MB':>8} {'bytes/edge':>10}"
    )
    sweeps = {
        "prompt length": [(n, args.base_features) for n in args.lengths],
        "features per layer": [(args.base_tokens, f) for f in args.features],
    }
    results = {}
    what = (
        cct.REAL_MODELS[args.model][0] + ", attribute's defaults (at most 8,192 features kept)"
        if real
        else "tiny Llama, 4 layers, d_model 64"
    )
    for name, points in sweeps.items():
        print(f"\n{name} ({what}, 2 threads)\n{head}")
        results[name] = []
        for tokens, features in points:
            r = point(tokens, features, args.model)
            results[name].append(r)
            print(
                f"{r['tokens']:>6} {r['features_per_layer']:>7} {r['features']:>8} {r['edges']:>11} "
                f"{r['attribute_s']:>11.2f} {r['attribute_peak_mb']:>8.0f} {r['prune_s']:>8.2f} "
                f"{r['prune_peak_mb']:>8.0f} {r['graph_mb']:>8.1f} {r['graph_mb'] * 2**20 / max(r['edges'], 1):>10.1f}",
                flush=True,
            )
    print_exponents(results)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)

    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(
        rows=2,
        cols=2,
        subplot_titles=[
            "time vs prompt length",
            "peak memory vs edges",
            "time vs features per layer",
            "edges vs prompt length",
        ],
    )
    length, width = results["prompt length"], results["features per layer"]
    x = [r["tokens"] for r in length]
    fig.add_trace(go.Scatter(x=x, y=[r["attribute_s"] for r in length], name="attribute (s)"), 1, 1)
    fig.add_trace(go.Scatter(x=x, y=[r["prune_s"] for r in length], name="prune (s)"), 1, 1)
    every = length + width
    fig.add_trace(
        go.Scatter(
            x=[r["edges"] for r in every],
            y=[r["attribute_peak_mb"] for r in every],
            mode="markers",
            name="attribute peak (MB)",
        ),
        1,
        2,
    )
    fig.add_trace(
        go.Scatter(
            x=[r["edges"] for r in every],
            y=[r["prune_peak_mb"] for r in every],
            mode="markers",
            name="load + prune peak (MB)",
        ),
        1,
        2,
    )
    xf = [r["features_per_layer"] for r in width]
    at = f"{args.base_tokens} tokens"
    fig.add_trace(
        go.Scatter(x=xf, y=[r["attribute_s"] for r in width], name=f"attribute (s), {at}"), 2, 1
    )
    fig.add_trace(go.Scatter(x=xf, y=[r["prune_s"] for r in width], name=f"prune (s), {at}"), 2, 1)
    fig.add_trace(go.Scatter(x=x, y=[r["edges"] for r in length], name="edges"), 2, 2)
    for r, c in ((1, 1), (1, 2), (2, 1), (2, 2)):
        fig.update_xaxes(type="log", row=r, col=c)
        fig.update_yaxes(type="log", row=r, col=c)
    fig.update_layout(height=800, title=f"attribution_nb: cost of attribute and prune ({what})")
    fig.write_html(args.html, include_plotlyjs=True)
    print(f"\nwrote {args.html}")
    if args.png:
        save_png(args.html, args.png)
        print(f"wrote {args.png}")


def exponent(x, y) -> float:
    """The slope of log y against log x (least squares): cost ∝ size^slope."""
    return float(np.polyfit(np.log(x), np.log(y), 1)[0])


def print_exponents(results: dict) -> None:
    length, width = results["prompt length"], results["features per layer"]
    for name, rows, key in (
        ("prompt length", length, "tokens"),
        ("features per layer", width, "features_per_layer"),
    ):
        if len(rows) < 2:
            continue
        x = [r[key] for r in rows]
        print(
            f"fitted exponents against {name}: attribute time {exponent(x, [r['attribute_s'] for r in rows]):.2f}, "
            f"peak memory {exponent(x, [r['attribute_peak_mb'] for r in rows]):.2f}, "
            f"edges {exponent(x, [max(r['edges'], 1) for r in rows]):.2f}"
        )


def save_png(html_path: str, png_path: str, height: int = 820) -> None:
    """The figure as an image: its page opened in Debian's chromium (Playwright), screenshotted."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True)
        page = browser.new_page(viewport={"width": 1200, "height": height})
        page.goto("file://" + os.path.abspath(html_path))
        page.wait_for_selector(".main-svg")
        page.screenshot(path=png_path)
        browser.close()


if __name__ == "__main__":
    main()
