"""Export a graph to the JSON that Neuronpedia and circuit-tracer's local graph server read.

The file has ``metadata`` (slug, scan, prompt tokens, prompt, node threshold), ``qParams``
(pinned ids, supernodes as ``[name, id, id, …]``), ``nodes`` and ``links``.  Node ids follow
that format: ``{layer}_{feature}_{pos}`` for features, ``0_{layer}_{pos}`` for error
nodes, ``E_{token_id}_{pos}`` for tokens and ``{n_layers + 1}_{token_id}_{pos}`` for logits.
"""

from __future__ import annotations

import json
import os
import re

import pandas as pd

from ..io import write_text
from .maths import entry_rows

FEATURE_TYPES = {"feature": "cross layer transcoder", "error": "mlp reconstruction error", "token": "embedding",
                 "logit": "logit"}


def _cantor(x: int, y: int) -> int:
    return (x + y) * (x + y + 1) // 2 + y


def graph_json(graph, *, slug: str | None = None, scan: str | None = None,
               node_threshold: float = 0.8, edge_threshold: float = 0.98, prune: bool = True) -> dict:
    """The graph (pruned at the thresholds unless ``prune=False``) as a Neuronpedia graph dict."""
    g = graph.prune(node_threshold, edge_threshold) if prune else graph
    slug = check_slug(slug) if slug is not None else \
        re.sub(r"[^a-z0-9]+", "-", graph.prompt.lower()).strip("-")[:60] or "graph"
    L = graph.n_layers
    token_prob = dict(zip(g.logits.node_id, g.logits.probability))
    top_logit = g.logits.node_id.iloc[0]
    ids, nodes = [], []
    for n in g.nodes.itertuples(index=False):
        pos = int(n.position)
        node = {"feature_type": FEATURE_TYPES[n.kind], "ctx_idx": pos, "run_idx": 0, "reverse_ctx_idx": 0,
                "token_prob": 0.0, "is_target_logit": False, "clerp": n.label if isinstance(n.label, str) else "",
                "influence": float(n.influence), "activation": float(n.activation)}
        if n.kind == "feature":
            layer, f = int(n.layer), int(n.feature)
            node.update(node_id=f"{layer}_{f}_{pos}", feature=_cantor(layer, f), layer=str(layer),
                        jsNodeId=f"{layer}_{f}-0")
        elif n.kind == "error":
            node.update(node_id=f"0_{int(n.layer)}_{pos}", feature=-1, layer=str(int(n.layer)),
                        jsNodeId=f"{int(n.layer)}_{pos}-0", activation=None)
        elif n.kind == "token":
            vocab = int(n.token_id)
            node.update(node_id=f"E_{vocab}_{pos}", feature=pos, layer="E", jsNodeId=f"E_{vocab}-{pos}",
                        activation=None)
        else:
            if n.token_id is None or n.token_id is pd.NA:
                raise ValueError(f"Neuronpedia's graphs have token logits only; the custom target {n.token!r} "
                                 f"({n.node_id}) has no such form (save the graph, or export a graph of token targets)")
            vocab = int(n.token_id)
            p = float(token_prob[n.node_id])
            node.update(node_id=f"{L + 1}_{vocab}_{pos}", feature=vocab, layer=str(L + 1), jsNodeId=f"L_{vocab}-{pos}",
                        token_prob=p, is_target_logit=bool(n.node_id == top_logit), activation=None,
                        clerp=f'Output "{n.token}" (p={p:.3f})')
        ids.append(node["node_id"])
        nodes.append(node)
    m = g.sparse_adjacency
    targets = entry_rows(m)
    links = [{"source": ids[s], "target": ids[t], "weight": float(w)} for s, t, w in zip(m.indices, targets, m.data)]
    index = dict(zip(g.nodes.node_id, ids))
    supernodes = [[name, *[index[i] for i in members if i in index]] for name, members in g.supernodes.items()]
    return {
        "metadata": {"slug": slug, "scan": scan or graph.model_name or "attribution_nb", "transcoder_list": [],
                     "prompt_tokens": list(graph.tokens), "prompt": graph.prompt,
                     "node_threshold": node_threshold if prune else None, "schema_version": 1},
        "qParams": {"pinnedIds": [], "supernodes": supernodes, "linkType": "both", "clickedId": "", "sg_pos": ""},
        "nodes": nodes,
        "links": links,
    }


#: a slug names one file in the folder: letters, digits, ``-``, ``_`` and ``.`` (not first), at most 100
_SLUG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$")


def check_slug(slug) -> str:
    """``slug`` if it can name a file inside the graph folder, else a ``ValueError`` naming it."""
    if not isinstance(slug, str) or not _SLUG.match(slug) or slug == "graph-metadata":
        raise ValueError(f"slug must be letters, digits, '-', '_' or '.' (not first), at most 100 characters, and not "
                         f"'graph-metadata' (it names a file in the folder), got {slug!r}")
    return slug


def write_graph_files(graph, folder: str | os.PathLike, **kwargs) -> str:
    """Write ``{slug}.json`` and update ``graph-metadata.json`` in ``folder`` (the layout
    circuit-tracer's local server serves); returns the graph file's path."""
    data = graph_json(graph, **kwargs)
    folder = os.fspath(folder)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"{data['metadata']['slug']}.json")
    write_text(path, json.dumps(data))
    meta_path = os.path.join(folder, "graph-metadata.json")
    listing: dict = {"graphs": []}
    if os.path.exists(meta_path):
        with open(meta_path) as f:
            listing = json.load(f)
    listing["graphs"] = [g for g in listing.get("graphs", []) if g.get("slug") != data["metadata"]["slug"]]
    listing["graphs"].append(data["metadata"])
    write_text(meta_path, json.dumps(listing, indent=1))
    return path
