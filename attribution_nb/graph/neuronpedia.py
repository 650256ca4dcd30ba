"""Export a graph to the JSON that Neuronpedia and circuit-tracer's local graph server read.

The file has ``metadata`` (slug, scan, prompt tokens, prompt, node threshold), ``qParams``
(pinned ids, supernodes as ``[name, id, id, …]``), ``nodes`` and ``links``.  Node ids follow
that format: ``{layer}_{feature}_{pos}`` for features, ``err_{layer}_{pos}`` for error
nodes (circuit-tracer's ``0_{layer}_{pos}`` collides with layer-0 features), ``E_{token_id}_{pos}``
for tokens and ``{n_layers + 1}_{token_id}_{pos}`` for logits.  ``influence`` is the cumulative
influence share circuit-tracer writes.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re

import numpy as np
import pandas as pd

from ..io import encodable, read_json, write_text
from .feature_pages import cantor, cantor_unpair, feature_pages  # noqa: F401  (cantor_unpair: imported from here)
from .maths import entry_rows

FEATURE_TYPES = {
    "feature": "cross layer transcoder",
    "error": "mlp reconstruction error",
    "token": "embedding",
    "logit": "logit",
}


def cumulative_shares(influence) -> np.ndarray:
    """Each node's cumulative influence share, as circuit-tracer's ``prune_graph`` writes it: nodes
    ranked by influence (largest first), the running sum of influence over the total.  The most
    influential node has the smallest share; the viewer keeps nodes whose share is ≤ its slider."""
    infl = np.asarray(influence, dtype=np.float64)
    order = np.argsort(-infl, kind="stable")
    total = infl.sum()
    out = np.zeros_like(infl)
    out[order] = np.cumsum(infl[order]) / total if total > 0 else 1.0
    return out


def export_ids(nodes: pd.DataFrame, n_layers: int) -> list[str]:
    """Node ids in the viewer's form: ``{layer}_{feature}_{pos}`` for features, ``E_{token_id}_{pos}``
    for tokens, ``{n_layers + 1}_{token_id}_{pos}`` for logits (circuit-tracer's forms), and
    ``err_{layer}_{pos}`` for error nodes: circuit-tracer writes ``0_{layer}_{pos}``, which is also the
    id of layer 0's feature ``layer`` at that position.  (The viewer uses ids only as keys; it
    tells kinds apart by ``feature_type``.)"""
    ids = []
    for kind, layer, pos, feature, token_id in zip(
        nodes.kind, nodes.layer, nodes.position, nodes.feature, nodes.token_id
    ):
        if kind == "feature":
            ids.append(f"{int(layer)}_{int(feature)}_{int(pos)}")
        elif kind == "error":
            ids.append(f"err_{int(layer)}_{int(pos)}")
        elif kind == "token":
            ids.append(f"E_{int(token_id)}_{int(pos)}")
        else:
            ids.append(f"{n_layers + 1}_{int(token_id)}_{int(pos)}")
    seen: set[str] = set()
    twice = [i for i in ids if i in seen or seen.add(i)]  # type: ignore[func-returns-value]
    if twice:
        raise ValueError(
            f"the export would give two nodes the id {twice[0]!r}; refusing to write an ambiguous graph"
        )
    return ids


def graph_json(
    graph,
    *,
    slug: str | None = None,
    scan: str | None = None,
    node_threshold: float = 0.8,
    edge_threshold: float = 0.98,
    prune: bool = True,
) -> dict:
    """The graph (pruned at the thresholds unless ``prune=False``) as a Neuronpedia graph dict.

    ``influence`` is each node's cumulative influence share over the graph given here (as
    circuit-tracer writes it, see :func:`cumulative_shares`); logits have none."""
    return _export(
        graph,
        slug=slug,
        scan=scan,
        node_threshold=node_threshold,
        edge_threshold=edge_threshold,
        prune=prune,
    )[0]


def _refuse_custom_targets(g) -> None:
    """Neuronpedia's graphs have token logits only: a custom target is refused by name."""
    for n in g.nodes.itertuples(index=False):
        if n.kind == "logit" and (n.token_id is None or n.token_id is pd.NA):
            raise ValueError(
                f"Neuronpedia's graphs have token logits only; the custom target {n.token!r} "
                f"({n.node_id}) has no such form (save the graph, or export a graph of token targets)"
            )


def _json_nodes(g, ids: list, share: dict, token_prob: dict) -> list[dict]:
    """The graph's nodes in the viewer's form (``ids``: their export ids, in order)."""
    nodes = []
    L = g.n_layers
    top_logit = g.logits.node_id.iloc[0]
    for n, node_id in zip(g.nodes.itertuples(index=False), ids):
        pos = int(n.position)
        label = encodable(n.label, f"the label of {n.node_id}") if isinstance(n.label, str) else ""
        node = {
            "node_id": node_id,
            "feature_type": FEATURE_TYPES[n.kind],
            "ctx_idx": pos,
            "run_idx": 0,
            "reverse_ctx_idx": 0,
            "token_prob": 0.0,
            "is_target_logit": False,
            "clerp": label,
            "influence": float(share[n.node_id]),
            "activation": None,
        }
        if n.kind == "feature":
            layer, f = int(n.layer), int(n.feature)
            node.update(
                feature=cantor(layer, f),
                layer=str(layer),
                jsNodeId=f"{layer}_{f}-0",
                activation=float(n.activation),
            )
        elif n.kind == "error":
            node.update(feature=-1, layer=str(int(n.layer)), jsNodeId=f"{int(n.layer)}_{pos}-0")
        elif n.kind == "token":
            node.update(feature=pos, layer="E", jsNodeId=f"E_{int(n.token_id)}-{pos}")
        else:
            vocab, p = int(n.token_id), float(token_prob[n.node_id])
            node.update(
                feature=vocab,
                layer=str(L + 1),
                jsNodeId=f"L_{vocab}-{pos}",
                token_prob=p,
                influence=None,
                is_target_logit=bool(n.node_id == top_logit),
                clerp=f'Output "{n.token}" (p={p:.3f})',
            )
        nodes.append(node)
    return nodes


def _export(
    graph,
    *,
    slug: str | None = None,
    scan: str | None = None,
    node_threshold: float = 0.8,
    edge_threshold: float = 0.98,
    prune: bool = True,
):
    """``(graph JSON dict, the graph it holds)``."""
    g = graph.prune(node_threshold, edge_threshold) if prune else graph
    slug = (
        check_slug(slug)
        if slug is not None
        else re.sub(r"[^a-z0-9]+", "-", graph.prompt.lower()).strip("-")[:60] or "graph"
    )
    encodable(graph.prompt, "the prompt")
    L = graph.n_layers
    share = dict(zip(graph.nodes.node_id, cumulative_shares(graph.nodes.influence.to_numpy())))
    token_prob = dict(zip(g.logits.node_id, g.logits.probability))
    _refuse_custom_targets(g)
    ids = export_ids(g.nodes, L)
    nodes = _json_nodes(g, ids, share, token_prob)
    m = g.sparse_adjacency
    targets = entry_rows(m)
    links = [
        {"source": ids[s], "target": ids[t], "weight": float(w)}
        for s, t, w in zip(m.indices, targets, m.data)
    ]
    index = dict(zip(g.nodes.node_id, ids))
    supernodes = [
        [encodable(name, "a supernode's name"), *[index[i] for i in members if i in index]]
        for name, members in g.supernodes.items()
    ]
    return {
        "metadata": {
            "slug": slug,
            "scan": scan or graph.model_name or "attribution_nb",
            "transcoder_list": [],
            "prompt_tokens": [encodable(t, "a prompt token") for t in graph.tokens],
            "prompt": graph.prompt,
            "node_threshold": node_threshold if prune else graph.info.get("node_threshold"),
            "schema_version": 1,
        },
        "qParams": {
            "pinnedIds": [],
            "supernodes": supernodes,
            "linkType": "both",
            "clickedId": "",
            "sg_pos": "",
        },
        "nodes": nodes,
        "links": links,
    }, g


#: a slug names one file in the folder: letters, digits, ``-``, ``_`` and ``.`` (not first), at most 100
_SLUG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$")


def check_slug(slug) -> str:
    """``slug`` if it can name a file inside the graph folder, else a ``ValueError`` naming it."""
    if not isinstance(slug, str) or not _SLUG.fullmatch(slug) or slug == "graph-metadata":
        raise ValueError(
            f"slug must be letters, digits, '-', '_' or '.' (not first), at most 100 characters, and not "
            f"'graph-metadata' (it names a file in the folder), got {slug!r}"
        )
    return slug


def write_graph_files(
    graph, folder: str | os.PathLike, *, model=None, features: bool = False, **kwargs
) -> str:
    """Write ``{slug}.json`` and add it to ``graph-metadata.json`` in ``folder`` (the layout
    circuit-tracer's local server serves); returns the graph file's path.

    With ``features=True`` (and the ``model`` the graph came from), also write one page per
    feature of the exported graph under ``features/{scan}/`` (see
    :mod:`attribution_nb.graph.feature_pages`) and name the scan ``./graph_data/features/{scan}``,
    the form that makes circuit-tracer's viewer read them from this folder rather than a remote host.

    The index is read, changed and written under an exclusive lock on the folder, so processes
    exporting to one folder at once never lose each other's entries; a damaged index is reported
    (by name) before anything is written.
    """
    if features and model is None:
        raise ValueError(
            "features=True needs model= (the model the graph came from: its contexts and unembedding)"
        )
    if model is not None and not features:
        raise ValueError(
            "model= is used only with features=True (feature pages); pass both, or neither"
        )
    scan_name = kwargs.pop("scan", None) or graph.model_name or "attribution_nb"
    if features:
        check_slug(scan_name)
        kwargs["scan"] = f"./graph_data/features/{scan_name}"
    else:
        kwargs["scan"] = scan_name
    data, kept = _export(graph, **kwargs)
    folder = os.fspath(folder)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"{data['metadata']['slug']}.json")
    meta_path = os.path.join(folder, "graph-metadata.json")
    text = json.dumps(data)
    pages = {}
    if features:
        pages = feature_pages(kept, model, scan=scan_name)
    with _locked(folder):
        listing: dict = {"graphs": []}
        if os.path.exists(meta_path):
            listing = read_json(meta_path, "graph index (graph-metadata.json)")
            if not isinstance(listing.get("graphs", []), list):
                raise ValueError(
                    f"{meta_path}: 'graphs' must be a list, got {type(listing['graphs']).__name__}"
                )
        listing["graphs"] = [
            g
            for g in listing.get("graphs", [])
            if not (isinstance(g, dict) and g.get("slug") == data["metadata"]["slug"])
        ]
        listing["graphs"].append(data["metadata"])
        if pages:
            page_dir = os.path.join(folder, "features", scan_name)
            os.makedirs(page_dir, exist_ok=True)
            for index, page in pages.items():
                write_text(os.path.join(page_dir, f"{index}.json"), json.dumps(page))
        write_text(path, text)
        write_text(meta_path, json.dumps(listing, indent=1))
    return path


@contextlib.contextmanager
def _locked(folder: str):
    """An exclusive ``flock`` on the folder itself (no lock file is left behind)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
