"""Time to build the GraphWidget and to re-prune and redraw it, on a graph of ~5,000 edges.

    python bench/widget.py [--edges 5000]

The graph: the demo model's graph of the Dallas prompt, pruned to about ``--edges`` edges
(so that every slider position re-prunes a 5,000-edge graph).  "redraw" is what one slider
move costs in the kernel: pruning at the new thresholds, rebuilding the traces and the
status line (the browser's WebGL drawing comes after and is not timed here).  The full
graph (all edges) is timed too, for scale, and ``graph.to_html`` for the standalone page.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--edges", type=int, default=5000)
    ap.add_argument("--prompt", default="fact : the capital of the state containing dallas is")
    args = ap.parse_args()

    import torch

    import attribution_nb as anb
    from attribution_nb.views.widget import GraphWidget
    torch.set_num_threads(2)

    model = anb.load_model()
    full = anb.attribute(model, args.prompt, progress=False)
    # the loosest edge threshold whose pruned graph has at most --edges edges
    lo, hi = 0.0, 1.0
    for _ in range(30):
        mid = (lo + hi) / 2
        if full.prune_masks(1.0, mid)[1].sum() <= args.edges:
            lo = mid
        else:
            hi = mid
    graph = full.prune(1.0, lo)
    GraphWidget(graph, model)            # warm-up: imports, plotly's validators

    print(f"graph: {len(graph.nodes)} nodes, {graph.n_edges} edges (full graph: {len(full.nodes)} nodes, "
          f"{full.n_edges} edges); 2 threads")
    for name, g in ((f"{graph.n_edges}-edge graph", graph), (f"full graph ({full.n_edges} edges)", full)):
        t = time.perf_counter()
        w = GraphWidget(g, model, node_threshold=1.0, edge_threshold=1.0)
        build = time.perf_counter() - t
        times, drawn = [], []
        for nt, et in [(1.0, 0.99), (0.9, 0.95), (0.8, 0.9), (0.6, 0.8), (1.0, 1.0)] * 2:
            t = time.perf_counter()
            w.state = {"node_threshold": nt, "edge_threshold": et}
            times.append(time.perf_counter() - t)
            drawn.append(w.drawn["edges"])
        t = time.perf_counter()
        w.select(g.top_features(1).node_id[0])
        select = time.perf_counter() - t
        print(f"{name:<28} build {build * 1000:7.0f} ms (first draw {w.timings['first_draw_s'] * 1000:.0f} ms, "
              f"{len(g.nodes)} nodes, {g.n_edges} edges drawn) · re-prune + redraw median "
              f"{statistics.median(times) * 1000:6.1f} ms, max {max(times) * 1000:6.1f} ms "
              f"(drawing {min(drawn)}–{max(drawn)} edges) · select a node {select * 1000:.0f} ms")
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        path = full.to_html(os.path.join(tmp, "g.html"))
        print(f"to_html of the full graph: {time.perf_counter() - t:.2f} s, {os.path.getsize(path) / 1e6:.1f} MB "
              f"(plotly's bundle is {len(__import__('plotly.offline', fromlist=['x']).get_plotlyjs()) / 1e6:.1f} MB of it)")


if __name__ == "__main__":
    main()
