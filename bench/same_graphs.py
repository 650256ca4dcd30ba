"""Are the graphs bit-identical to those of another revision? (a refactoring check)

    python bench/same_graphs.py --base <git revision>      # e.g. --base HEAD~3

Checks out ``<revision>`` into ``bench/.work/base-<rev>`` (a git worktree), builds the same
graphs with that code and with the code here, each in a fresh process on this machine, and
compares them array by array: node ids, kinds, layers, positions, features, tokens, labels,
activations, influences, the sparse adjacency (indptr, indices, data) and the logits, with
``numpy.array_equal`` on the raw values (no tolerance).  Cases: the embedded demo model on
two case-study prompts, and tiny random models of every family and transcoder kind (skip,
cross-layer, TopK), with all features, with ``max_feature_nodes`` (the greedy order) and on
a prompt long enough for prefix traces.  Prints one line a case and exits 1 on a difference.

``python bench/same_graphs.py --save DIR`` only writes this code's graphs to ``DIR``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PROMPT = "fact : the capital of the state containing dallas is"
LONG = " ".join([PROMPT] * 7)  # 71 tokens: prefix traces
# name: (family, activation, transcoder kind, prompt, max_feature_nodes)
TINY = {
    "llama-jumprelu": ("llama", "jumprelu", "", PROMPT, None),
    "llama-topk": ("llama", "topk", "", PROMPT, None),
    "llama-skip": ("llama", "jumprelu", "skip", PROMPT, None),
    "llama-greedy": ("llama", "jumprelu", "", PROMPT, 60),
    "llama-long": ("llama", "jumprelu", "", LONG, None),
    "qwen2": ("qwen2", "jumprelu", "", PROMPT, None),
    "qwen3-skip": ("qwen3", "jumprelu", "skip", PROMPT, None),
    "gemma2": ("gemma2", "jumprelu", "", PROMPT, None),
    "gpt2-skip": ("gpt2", "jumprelu", "skip", PROMPT, None),
    "llama-clt": ("llama", "jumprelu", "clt", PROMPT, None),
    "gemma2-clt": ("gemma2", "relu", "clt", PROMPT, 80),
}
DEMO = {"demo-dallas": PROMPT, "demo-couplet": "poem : a dog sat by the cat ,"}


def _arrays(graph) -> tuple[dict, dict]:
    m = graph.sparse_adjacency
    nodes = graph.nodes
    arrays = {
        "indptr": m.indptr.astype(np.int64),
        "indices": m.indices.astype(np.int64),
        "data": m.data,
        "activation": nodes["activation"].to_numpy(dtype=np.float64),
        "influence": nodes["influence"].to_numpy(dtype=np.float64),
        "probability": graph.logits["probability"].to_numpy(dtype=np.float64),
        "logit": graph.logits["logit"].to_numpy(dtype=np.float64),
    }
    text = {
        col: [
            None
            if v is None or v is pd.NA or v != v
            else (int(v) if col in ("layer", "position", "feature") else v)
            for v in nodes[col].astype(object).tolist()
        ]
        for col in ("node_id", "kind", "layer", "position", "token", "feature", "label")
    }
    # token and logit ids carry the token id since graph format 3 (``t:P0:1``, ``l:P10:231``): compare them in
    # the older form, since the token ids are compared below and in ``token_ids``
    text["node_id"] = [
        f"t:P{p}" if k == "token" else f"l:{t}" if k == "logit" else n
        for n, k, p, t in zip(text["node_id"], text["kind"], text["position"], text["token"])
    ]
    text["logit_tokens"] = graph.logits["token"].tolist()
    text["logit_ids"] = [int(t) for t in graph.logits["token_id"]]
    return arrays, text


def save(folder: str) -> None:
    """Build every case's graph with the attribution_nb importable here and write it to ``folder``."""
    import torch

    import attribution_nb as anb
    from attribution_nb.demo import tiny_model

    print(f"code: {os.path.dirname(anb.__file__)}", flush=True)
    torch.set_num_threads(2)
    os.makedirs(folder, exist_ok=True)
    graphs = {}
    for name, (family, activation, kind, prompt, max_nodes) in TINY.items():
        model = tiny_model(
            family,
            seed=3,
            activation=activation,
            skip=kind == "skip",
            cross_layer=kind == "clt",
            d_features=128,
        )
        graphs[name] = anb.attribute(
            model, prompt, progress=False, batch_size=16, max_feature_nodes=max_nodes
        )
    demo = anb.load_model()
    for name, prompt in DEMO.items():
        graphs[name] = anb.attribute(demo, prompt, progress=False)
    for name, graph in graphs.items():
        arrays, text = _arrays(graph)
        np.savez(os.path.join(folder, f"{name}.npz"), **arrays)
        with open(os.path.join(folder, f"{name}.json"), "w", encoding="utf-8") as f:
            json.dump(text, f)
        print(f"saved {name}: {len(graph.nodes)} nodes, {graph.n_edges} edges", flush=True)


def compare(a: str, b: str) -> bool:
    same_all = True
    for name in [*TINY, *DEMO]:
        with (
            np.load(os.path.join(a, f"{name}.npz")) as fa,
            np.load(os.path.join(b, f"{name}.npz")) as fb,
        ):
            diff = [
                k
                for k in fa.files
                if not (fa[k].dtype == fb[k].dtype and np.array_equal(fa[k], fb[k]))
            ]
            n_edges = len(fb["data"])
        with (
            open(os.path.join(a, f"{name}.json"), encoding="utf-8") as fa,
            open(os.path.join(b, f"{name}.json"), encoding="utf-8") as fb,
        ):
            ta, tb = json.load(fa), json.load(fb)
        diff += [k for k in ta if ta[k] != tb.get(k)]
        same_all &= not diff
        print(
            f"{name:<14} {n_edges:>8} edges  " + ("identical" if not diff else f"DIFFERENT: {diff}")
        )
    return same_all


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", help="git revision to compare with (checked out as a worktree)")
    parser.add_argument("--save", help="only write this code's graphs to this folder")
    parser.add_argument(
        "--compare", nargs=2, metavar=("A", "B"), help="only compare two saved folders"
    )
    args = parser.parse_args(argv)
    if args.save:
        save(args.save)
        return 0
    if args.compare:
        return 0 if compare(*args.compare) else 1
    if not args.base:
        parser.error("give --base REV (or --save DIR)")
    rev = subprocess.run(
        ["git", "rev-parse", "--short", args.base],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    work = os.path.join(HERE, ".work")
    tree = os.path.join(work, f"base-{rev}")
    if not os.path.isdir(tree):
        subprocess.run(["git", "worktree", "add", "--detach", tree, rev], cwd=ROOT, check=True)
    out_base, out_here = os.path.join(work, f"graphs-{rev}"), os.path.join(work, "graphs-here")
    env = dict(os.environ, PYTHONPATH=tree)
    me = os.path.abspath(__file__)
    subprocess.run([sys.executable, me, "--save", out_base], cwd=tree, env=env, check=True)
    subprocess.run([sys.executable, me, "--save", out_here], cwd=ROOT, check=True)
    same = compare(out_base, out_here)
    print(f"graphs {'bit-identical to' if same else 'DIFFER from'} {args.base} ({rev})")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
