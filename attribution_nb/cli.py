"""Command line: ``attribution-nb attribute "PROMPT"`` and ``attribution-nb demo``."""

from __future__ import annotations

import argparse
import os
import sys
import time

from .attribution import attribute
from .attribution.targets import LogitDiff
from .loading import load_model

DEMO_PROMPT = "fact : the capital of the state containing dallas is"


def _write(graph, out: str, tables: str | None) -> list[str]:
    if out.endswith(".html"):
        raise ValueError(f"--out {out!r} must be a .graph file; use --html {out!r} for the standalone page")
    written = []
    folder = os.path.dirname(out)
    if folder:
        os.makedirs(folder, exist_ok=True)
    graph.save(out)
    written.append(out)
    if tables:
        stem = out.removesuffix(".graph")
        for name in ("nodes", "edges", "logits"):
            df = getattr(graph, name)
            path = f"{stem}.{name}.{tables}"
            df.to_csv(path, index=False) if tables == "csv" else df.to_parquet(path, index=False)
            written.append(path)
    return written


def _summary(graph, pruned, seconds: float) -> str:
    s = pruned.scores()
    top = pruned.top_features(5)
    lines = [
        f"prompt: {graph.prompt!r} ({len(graph.tokens)} tokens) in {seconds:.2f} s",
        ("targets: " + ", ".join(f"{t!r} = {v:.3f}" for t, v in zip(graph.logits.token, graph.logits.logit))
         if graph.logits.token_id.isna().any() else
         "top predictions: " + ", ".join(f"{t!r} {p:.3f}" for t, p in zip(graph.logits.token, graph.logits.probability))),
        f"graph: {(graph.nodes.kind == 'feature').sum()} features ({graph.info.get('feature_rows', '?')} with rows), "
        f"{len(graph.edges)} edges; "
        f"pruned: {(pruned.nodes.kind == 'feature').sum()} features, {len(pruned.edges)} edges",
        f"replacement score {s['replacement']:.3f}, completeness score {s['completeness']:.3f}",
        "most influential features:",
    ]
    for r in top.itertuples():
        label = f"  {r.label}" if r.label else ""
        lines.append(f"  {r.node_id:<18} token {r.token!r:<14} activation {r.activation:7.3f}  influence {r.influence:.4f}{label}")
    return "\n".join(lines)


def _attribute(args) -> int:
    t0 = time.perf_counter()
    model = load_model(None if args.model == "demo" else args.model, transcoders=args.transcoders)
    targets = list(args.target or []) + [LogitDiff(a, b) for a, b in (args.contrast or [])]
    # the page's sliders prune at any threshold: it gets every row
    rows = "all" if args.all_rows or args.html else "adaptive"
    graph = attribute(model, args.prompt, targets=targets or None, max_feature_nodes=args.max_feature_nodes,
                      batch_size=args.batch_size, rows=rows, bos_features=args.bos_features,
                      prune_thresholds=(args.node_threshold, args.edge_threshold), progress=True)
    pruned = graph.prune(args.node_threshold, args.edge_threshold)
    print(f"model: {model!r}")
    print(_summary(graph, pruned, time.perf_counter() - t0))
    for path in _write(pruned, args.out, args.tables):
        print(f"wrote {path}")
    if args.html:
        graph.to_html(args.html, model=model, node_threshold=args.node_threshold, edge_threshold=args.edge_threshold)
        print(f"wrote {args.html} (open it in a browser; its sliders re-prune the full graph)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="attribution-nb", description="Attribution graphs for language models.")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p, out_default):
        p.add_argument("--node-threshold", type=float, default=0.8, help="share of influence the kept nodes hold")
        p.add_argument("--edge-threshold", type=float, default=0.98, help="share of influence the kept edges hold")
        p.add_argument("--out", default=out_default, help="where to write the pruned graph (.graph)")
        p.add_argument("--tables", choices=["csv", "parquet"], help="also write nodes/edges/logits tables")
        p.add_argument("--html", default=None, help="also write a standalone HTML page of the graph with sliders")
        p.add_argument("--max-feature-nodes", type=int, default=None)
        p.add_argument("--batch-size", type=int, default=None, help="targets per backward pass (default: from the "
                                                                       "model's size and the device)")
        p.add_argument("--all-rows", action="store_true", help="compute every feature's row (default: only those "
                                                               "the pruned graph needs, proved; always with --html)")
        p.add_argument("--bos-features", action="store_true", help="keep the BOS position's features")
        p.add_argument("--target", action="append", metavar="TOKEN",
                       help="explain this token's logit (repeat for several; default: the top logits)")
        p.add_argument("--contrast", nargs=2, action="append", metavar=("A", "B"),
                       help="explain logit(A) − logit(B), e.g. --contrast austin dallas (repeatable)")

    p = sub.add_parser("attribute", help="attribute a prompt and write the pruned graph")
    p.add_argument("prompt")
    p.add_argument("--model", default="demo", help="'demo' (default) or a local Hugging Face model folder")
    p.add_argument("--transcoders", default=None, help="folder of transcoders (TranscoderSet.save layout)")
    common(p, "graph.graph")
    d = sub.add_parser("demo", help="attribute a prompt on the embedded demo model")
    d.add_argument("--prompt", default=DEMO_PROMPT)
    common(d, "demo.graph")
    args = parser.parse_args(argv)
    if args.command == "demo":
        args.model, args.transcoders = "demo", None
    try:
        return _attribute(args)
    except (ValueError, KeyError, OSError) as err:      # (a missing file, a folder given as --out, a read-only disk)
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
