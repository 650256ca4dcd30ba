"""Time and peak memory of ``attribute`` on one fixed tiny model as the prompt grows.

    python bench/attribution.py [--lengths 8 32 128] [--features 512]

Prints one row per prompt length: active features, graph nodes and edges, wall time of
``attribute`` (split into its phases) and of ``prune``, and peak resident memory added
by the run (measured in a fresh subprocess per length, so runs do not share a peak).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def one(length: int, features: int) -> dict:
    import torch
    import attribution_nb as anb
    from attribution_nb.demo import WORDS, tiny_model

    torch.set_num_threads(2)
    model = tiny_model("llama", seed=0, d_features=features)
    words = [w for w in WORDS if w.isalpha()]
    prompt = " ".join(words[i % len(words)] for i in range(length - 1))   # + <bos> = length tokens
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    anb.attribute(model, " ".join(words[:4]), progress=False)             # warm-up
    t = time.perf_counter()
    graph = anb.attribute(model, prompt, progress=False)
    t_attr = time.perf_counter() - t
    t = time.perf_counter()
    graph.prune(0.8, 0.98)
    t_prune = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"tokens": len(graph.tokens), "features": int((graph.nodes.kind == "feature").sum()),
            "nodes": len(graph.nodes), "edges": graph.n_edges, "attribute_s": t_attr,
            "prune_s": t_prune, "peak_mb": peak / 1024, "added_mb": (peak - base) / 1024,
            **{f"{k}_s": v for k, v in graph.info["timings"].items() if k != "total"}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lengths", type=int, nargs="+", default=[8, 32, 128])
    ap.add_argument("--features", type=int, default=512, help="transcoder features per layer")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.features)))
        return
    print(f"tiny Llama: 4 layers, d_model 64, {args.features} JumpReLU features/layer, 2 threads")
    head = f"{'tokens':>6} {'features':>8} {'edges':>10} {'attribute s':>11} {'capture':>8} {'trace':>7} {'logit rows':>10} {'feat rows':>9} {'prune s':>8} {'peak MB':>8}"
    print(head)
    rows = []
    for n in args.lengths:
        out = subprocess.run([sys.executable, __file__, "--one", str(n), "--features", str(args.features)],
                             capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(r)
        print(f"{r['tokens']:>6} {r['features']:>8} {r['edges']:>10} {r['attribute_s']:>11.3f} {r['capture_s']:>8.3f} "
              f"{r['linear_trace_s']:>7.3f} {r['logit_rows_s']:>10.3f} {r['feature_rows_s']:>9.3f} {r['prune_s']:>8.3f} {r['peak_mb']:>8.0f}")
    if len(rows) > 1:
        a, b = rows[0], rows[-1]
        print(f"\n{b['tokens'] / a['tokens']:.0f}x the tokens -> {b['features'] / a['features']:.1f}x the features, "
              f"{b['attribute_s'] / a['attribute_s']:.1f}x the attribute time")


if __name__ == "__main__":
    main()
