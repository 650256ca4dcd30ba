"""Command line: ``attribution-nb attribute "PROMPT"``, ``attribution-nb demo``, ``attribution-nb export GRAPH
--neuronpedia FOLDER`` and ``attribution-nb serve FOLDER``."""

from __future__ import annotations

import argparse
import os
import sys
import time

from .attribution import attribute
from .attribution.targets import LogitDiff
from .graph import AttributionGraph
from .checks import as_float, require
from .io import atomic_paths, check_targets
from .loading import load_model

DEMO_PROMPT = "fact : the capital of the state containing dallas is"


def _outputs(args) -> list[str]:
    """The files a run writes, checked before any work: ``--out``, its tables, ``--html`` (distinct, writable)."""
    out = args.out
    if out.endswith(".html"):
        raise ValueError(
            f"--out {out!r} must be a .graph file; use --html {out!r} for the standalone page"
        )
    stem = out.removesuffix(".graph")
    paths = [out] + [
        f"{stem}.{name}.{args.tables}" for name in ("nodes", "edges", "logits") if args.tables
    ]
    paths += [args.html] if args.html else []
    folder = os.path.dirname(out)
    if folder:
        os.makedirs(folder, exist_ok=True)
    check_targets(*paths)
    if args.tables == "parquet":
        require("pyarrow")
    return paths


def _write(graph, pruned, args, paths: list[str]) -> None:
    """Write the pruned graph, its tables and the page as one set: all new, or (on any failure) all as they were."""
    with atomic_paths(*paths) as tmps:
        pruned.save(tmps[0])
        for name, tmp in zip(("nodes", "edges", "logits"), tmps[1:4] if args.tables else []):
            df = getattr(pruned, name)
            df.to_csv(tmp, index=False) if args.tables == "csv" else df.to_parquet(tmp, index=False)
        if args.html:
            graph.to_html(
                tmps[-1],
                model=args.loaded,
                node_threshold=args.node_threshold,
                edge_threshold=args.edge_threshold,
            )


def _summary(graph, pruned, seconds: float) -> str:
    s = pruned.scores()
    top = pruned.top_features(5)
    lines = [
        f"prompt: {graph.prompt!r} ({len(graph.tokens)} tokens) in {seconds:.2f} s",
        (
            "targets: "
            + ", ".join(f"{t!r} = {v:.3f}" for t, v in zip(graph.logits.token, graph.logits.logit))
            if graph.logits.token_id.isna().any()
            else "top predictions: "
            + ", ".join(
                f"{t!r} {p:.3f}" for t, p in zip(graph.logits.token, graph.logits.probability)
            )
        ),
        f"graph: {(graph.nodes.kind == 'feature').sum()} features ({graph.info.get('feature_rows', '?')} with rows), "
        f"{len(graph.edges)} edges; "
        f"pruned: {(pruned.nodes.kind == 'feature').sum()} features, {len(pruned.edges)} edges",
        f"replacement score {s['replacement']:.3f}, completeness score {s['completeness']:.3f}",
        "most influential features:",
    ]
    for r in top.itertuples():
        label = f"  {r.label}" if r.label else ""
        lines.append(
            f"  {r.node_id:<18} token {r.token!r:<14} activation {r.activation:7.3f}"
            f"  influence {r.influence:.4f}{label}"
        )
    return "\n".join(lines)


def _attribute(args) -> int:
    t0 = time.perf_counter()
    for flag in ("node_threshold", "edge_threshold"):
        as_float("--" + flag.replace("_", "-"), getattr(args, flag), 0.0, 1.0)
    paths = _outputs(args)
    model = load_model(None if args.model == "demo" else args.model, transcoders=args.transcoders)
    targets = list(args.target or []) + [LogitDiff(a, b) for a, b in (args.contrast or [])]
    # the page's sliders prune at any threshold: it gets every row
    rows = "all" if args.all_rows or args.html else "adaptive"
    graph = attribute(
        model,
        args.prompt,
        targets=targets or None,
        max_feature_nodes=args.max_feature_nodes,
        batch_size=args.batch_size,
        rows=rows,
        bos_features=args.bos_features,
        prune_thresholds=(args.node_threshold, args.edge_threshold),
        progress=True,
    )
    pruned = graph.prune(args.node_threshold, args.edge_threshold)
    print(f"model: {model!r}")
    print(_summary(graph, pruned, time.perf_counter() - t0))
    args.loaded = model
    _write(graph, pruned, args, paths)
    for path in paths:
        note = (
            " (open it in a browser; its sliders re-prune the full graph)"
            if path == args.html
            else ""
        )
        print(f"wrote {path}{note}")
    return 0


SERVE = """
import sys, time
from circuit_tracer.frontend.local_server import serve
server = serve(data_dir=sys.argv[1], port=int(sys.argv[2]))
print(f"serving {sys.argv[1]} at http://localhost:{sys.argv[2]}/index.html (Ctrl-C stops)", flush=True)
try:
    while True:
        time.sleep(3600)
except KeyboardInterrupt:
    server.stop()
"""


def _export(args) -> int:
    graph = AttributionGraph.load(args.graph)
    model = None
    if args.features:
        name = args.model or ("demo" if graph.model_name == "demo" else None)
        if name is None:
            raise ValueError(
                f"--features needs --model (the graph's model is {graph.model_name!r}) and --transcoders"
            )
        model = load_model(None if name == "demo" else name, transcoders=args.transcoders)
    elif args.model or args.transcoders:
        raise ValueError("--model and --transcoders are used only with --features")
    kwargs = {
        "slug": args.slug,
        "node_threshold": args.node_threshold,
        "edge_threshold": args.edge_threshold,
    }
    if "node_threshold" in graph.info or graph.info.get("edges_complete") is False:
        kwargs = {"slug": args.slug, "prune": False}  # (already pruned: written as it is)
    path = graph.to_neuronpedia(
        args.neuronpedia, scan=args.scan, features=args.features, model=model, **kwargs
    )
    print(f"wrote {path} and {os.path.join(args.neuronpedia, 'graph-metadata.json')}")
    print(
        f"open it: attribution-nb serve {args.neuronpedia}   (circuit-tracer's viewer, then the page's graph list)"
    )
    return 0


def _serve(args) -> int:
    import subprocess

    if not os.path.isfile(os.path.join(args.folder, "graph-metadata.json")):
        raise ValueError(
            f"{args.folder} has no graph-metadata.json: write graphs there with "
            f"'attribution-nb export GRAPH --neuronpedia {args.folder}' first"
        )
    python = args.python or sys.executable
    probe = subprocess.run(
        [python, "-c", "import circuit_tracer.frontend.local_server"], capture_output=True
    )
    if probe.returncode != 0:
        raise ValueError(
            f"{python} has no circuit-tracer (its viewer serves the folder). It pins other nnsight and "
            f"transformers versions, so give it an environment of its own: python -m venv ct && "
            f"ct/bin/pip install circuit-tracer==0.5.0, then add --python ct/bin/python"
        )
    return subprocess.call([python, "-c", SERVE, os.path.abspath(args.folder), str(args.port)])


def _graph_options(p, out_default: str) -> None:
    """The options of the commands that make a graph (attribute, demo)."""
    p.add_argument(
        "--node-threshold",
        type=float,
        default=0.8,
        help="share of influence the kept nodes hold",
    )
    p.add_argument(
        "--edge-threshold",
        type=float,
        default=0.98,
        help="share of influence the kept edges hold",
    )
    p.add_argument("--out", default=out_default, help="where to write the pruned graph (.graph)")
    p.add_argument(
        "--tables", choices=["csv", "parquet"], help="also write nodes/edges/logits tables"
    )
    p.add_argument(
        "--html",
        default=None,
        help="also write a standalone HTML page of the graph with sliders",
    )
    p.add_argument("--max-feature-nodes", type=int, default=None)
    p.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="targets per backward pass (default: from the model's size and the device)",
    )
    p.add_argument(
        "--all-rows",
        action="store_true",
        help="compute every feature's row (default: only those "
        "the pruned graph needs, proved; always with --html)",
    )
    p.add_argument("--bos-features", action="store_true", help="keep the BOS position's features")
    p.add_argument(
        "--target",
        action="append",
        metavar="TOKEN",
        help="explain this token's logit (repeat for several; default: the top logits)",
    )
    p.add_argument(
        "--contrast",
        nargs=2,
        action="append",
        metavar=("A", "B"),
        help="explain logit(A) − logit(B), e.g. --contrast austin dallas (repeatable)",
    )


def _export_options(sub) -> None:
    e = sub.add_parser(
        "export", help="write a saved graph as Neuronpedia / circuit-tracer graph JSON"
    )
    e.add_argument("graph", help="a .graph file (or a graph JSON)")
    e.add_argument(
        "--neuronpedia",
        required=True,
        metavar="FOLDER",
        help="folder to write {slug}.json and graph-metadata.json into",
    )
    e.add_argument(
        "--slug", default=None, help="the graph's name in the folder (default: from the prompt)"
    )
    e.add_argument(
        "--scan",
        default=None,
        help="the model id Neuronpedia shows (default: the graph's model name)",
    )
    e.add_argument("--node-threshold", type=float, default=0.8)
    e.add_argument("--edge-threshold", type=float, default=0.98)
    e.add_argument(
        "--features",
        action="store_true",
        help="also write feature pages the local viewer shows offline",
    )
    e.add_argument("--model", default=None, help="with --features: 'demo' or a local model folder")
    e.add_argument(
        "--transcoders", default=None, help="with --features and a model folder: its transcoders"
    )


def _serve_options(sub) -> None:
    v = sub.add_parser(
        "serve", help="serve a folder of graph JSON with circuit-tracer's local viewer"
    )
    v.add_argument("folder")
    v.add_argument("--port", type=int, default=8032)
    v.add_argument(
        "--python", default=None, help="a Python that has circuit-tracer (default: this one)"
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="attribution-nb", description="Attribution graphs for language models."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("attribute", help="attribute a prompt and write the pruned graph")
    p.add_argument("prompt")
    p.add_argument(
        "--model", default="demo", help="'demo' (default) or a local Hugging Face model folder"
    )
    p.add_argument(
        "--transcoders", default=None, help="folder of transcoders (TranscoderSet.save layout)"
    )
    _graph_options(p, "graph.graph")
    d = sub.add_parser("demo", help="attribute a prompt on the embedded demo model")
    d.add_argument("--prompt", default=DEMO_PROMPT)
    _graph_options(d, "demo.graph")
    _export_options(sub)
    _serve_options(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "demo":
        args.model, args.transcoders = "demo", None
    try:
        if args.command == "export":
            return _export(args)
        if args.command == "serve":
            return _serve(args)
        return _attribute(args)
    except (
        ValueError,
        KeyError,
        OSError,
        ImportError,
    ) as err:  # (a missing file, a folder as --out, a full disk)
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted (no file was written)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
