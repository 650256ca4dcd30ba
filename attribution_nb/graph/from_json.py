"""Read a graph JSON written by circuit-tracer, Neuronpedia or :meth:`AttributionGraph.to_neuronpedia`.

The file holds a pruned graph: the nodes and links its writer kept, each node's cumulative
influence share, feature activations, token ids, the logits' probabilities and the
supernodes of ``qParams``.  What it cannot hold is said in ``graph.info``: the edges pruned
away (so :meth:`~AttributionGraph.prune` refuses; the graph's own influence is recomputed over
the kept edges), the logits' values, and error and token activations.

Node ids are read by ``feature_type`` and fields, not by their text: a feature is
``(layer, feature) = cantor_unpair(node["feature"])`` at ``ctx_idx``; a token's id comes from its
``E_{token_id}_{pos}`` id; a logit's token id is its ``feature``.  Two nodes with one id (as
circuit-tracer writes when an error node's ``0_{layer}_{pos}`` meets a layer-0 feature) make its
links ambiguous, and the file is refused by name.
"""

from __future__ import annotations

import math
import os
import re

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..ids import NodeId
from ..io import read_json
from .files import NODE_COLUMNS
from .feature_pages import cantor_unpair

KIND_OF = {
    "cross layer transcoder": "feature",
    "per layer transcoder": "feature",
    "unexplored node": "feature",
    "mlp reconstruction error": "error",
    "embedding": "token",
    "logit": "logit",
}
ORDER = {"feature": 0, "error": 1, "token": 2, "logit": 3}


def read_graph_json(source, *, name: str = "graph JSON") -> dict:
    """The constructor arguments of :class:`AttributionGraph` for a graph JSON (a path or a dict)."""
    if isinstance(source, dict):
        data, where = source, name
    else:
        where = os.fspath(source)
        data = read_json(where, "graph JSON")
    fail = lambda why: ValueError(f"{where}: {why}")  # noqa: E731
    tokens = _prompt_tokens(data, fail)
    rows, json_ids = _nodes(data["nodes"], tokens, fail)
    n_layers = _n_layers(rows, fail)
    for r in rows:
        if r["kind"] == "logit":
            r["layer"] = n_layers
    order = sorted(
        range(len(rows)),
        key=lambda i: (
            ORDER[rows[i]["kind"]],
            rows[i]["layer"],
            rows[i]["position"],
            rows[i]["feature"] if rows[i]["feature"] is not None else -1,
        ),
    )
    rows = [rows[i] for i in order]
    json_ids = [json_ids[i] for i in order]
    index = {j: i for i, j in enumerate(json_ids)}
    adjacency = _links(data["links"], index, len(rows), fail)
    token_ids = _token_ids(rows, len(tokens), fail)
    nodes = pd.DataFrame(rows, columns=NODE_COLUMNS + ["probability"])
    logits = _logit_table(nodes, fail)
    nodes = nodes.drop(columns="probability")
    for column in ("feature", "token_id"):
        nodes[column] = nodes[column].astype("Int64")
    ours = dict(zip(json_ids, nodes.node_id))
    supernodes, dropped = _supernodes(data.get("qParams") or {}, ours, fail)
    info = _import_info(data, where, ours)
    if dropped:
        info["supernode_members_dropped"] = dropped
    return dict(
        prompt=str(data["metadata"].get("prompt", "".join(tokens))),
        tokens=tokens,
        token_ids=token_ids,
        nodes=nodes,
        adjacency=adjacency,
        logits=logits.reset_index(drop=True),
        n_layers=n_layers,
        model_name=str(data["metadata"].get("scan") or ""),
        info=info,
        supernodes=supernodes,
    )


def _prompt_tokens(data: dict, fail) -> list[str]:
    """The prompt's tokens, once the file is known to be one graph (not an index)."""
    if "graphs" in data and "nodes" not in data:
        raise fail(
            "this is a folder's graph index (graph-metadata.json), not a graph: load one of the "
            "{slug}.json files it lists"
        )
    missing = [
        k
        for k in ("metadata", "nodes", "links")
        if not isinstance(data.get(k), dict if k == "metadata" else list)
    ]
    if missing:
        raise fail(
            f"not an attribution graph JSON: {', '.join(missing)} missing or of the wrong type "
            f"(keys: {sorted(data)[:8]})"
        )
    tokens = data["metadata"].get("prompt_tokens")
    if not (isinstance(tokens, list) and tokens and all(isinstance(t, str) for t in tokens)):
        raise fail("metadata.prompt_tokens must be a non-empty list of strings")
    return tokens


def _logit_table(nodes: pd.DataFrame, fail) -> pd.DataFrame:
    """The logits table from the logit nodes, most probable first (logit values are absent)."""
    logits = nodes[nodes.kind == "logit"]
    logits = pd.DataFrame(
        {
            "token": logits.token.tolist(),
            "token_id": pd.array(logits.token_id.tolist(), dtype="Int64"),
            "probability": logits.probability.astype(float).to_numpy(),
            "logit": np.full(len(logits), np.nan),
        }
    )
    if logits.empty:
        raise fail("the graph has no logit node")
    logits = logits.sort_values("probability", ascending=False, kind="stable")
    return logits


def _import_info(data: dict, where: str, ours: dict) -> dict:
    """``graph.info`` of an imported graph: where it came from and what the file does not hold."""
    meta = data["metadata"]
    info = {
        "imported_from": "graph JSON",
        "file": where,
        "writer_scan": meta.get("scan"),
        "node_threshold": meta.get("node_threshold"),
        "edges_complete": False,
        "absent": "the edges and nodes its writer pruned away; logit values; error and token activations",
        "influence": "recomputed over the kept edges (the file's cumulative shares are in info['file_influence'])",
        "file_influence": {
            ours[j]: s
            for j, s in ((n.get("node_id"), n.get("influence")) for n in data["nodes"])
            if j in ours and isinstance(s, int | float)
        },
    }
    return info


def _int(value, what: str, fail, low: int = 0) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | str)
        or not re.fullmatch(r"-?[0-9]+", str(value))
    ):
        raise fail(f"{what} must be an integer, got {value!r}")
    v = int(value)
    if v < low or v >= 1 << 40:
        raise fail(f"{what} is out of range: {value!r}")
    return v


def _nodes(items: list, tokens: list[str], fail) -> tuple[list[dict], list[str]]:
    T = len(tokens)
    rows, ids, seen = [], [], set()
    for k, n in enumerate(items):
        if not isinstance(n, dict) or not isinstance(n.get("node_id"), str):
            raise fail(f"node {k} has no string node_id")
        nid = n["node_id"]
        if nid in seen:
            raise fail(
                f"two nodes have the id {nid!r}: its links cannot be told apart (circuit-tracer gives an error "
                f"node and a layer-0 feature one id when the feature's index is below the layer count)"
            )
        seen.add(nid)
        kind = KIND_OF.get(str(n.get("feature_type")))
        if kind is None:
            raise fail(
                f"node {nid!r} has feature_type {n.get('feature_type')!r}; known: {sorted(KIND_OF)}"
            )
        pos = _int(n.get("ctx_idx"), f"node {nid!r}'s ctx_idx", fail)
        if pos >= T:
            raise fail(f"node {nid!r} is at position {pos}, past the prompt's {T} tokens")
        clerp: str = n["clerp"] if isinstance(n.get("clerp"), str) else ""
        act = n.get("activation")
        act = (
            float(act)
            if isinstance(act, int | float) and not isinstance(act, bool) and math.isfinite(act)
            else np.nan
        )
        row = {
            "kind": kind,
            "position": pos,
            "token": tokens[pos],
            "token_id": None,
            "feature": None,
            "activation": act,
            "influence": np.nan,
            "label": "",
            "probability": np.nan,
        }
        row.update(_kind_fields(n, nid, kind, pos, clerp, fail))
        rows.append(row)
        ids.append(nid)
    return rows, ids


def _kind_fields(n: dict, nid: str, kind: str, pos: int, clerp: str, fail) -> dict:
    """The fields of a node that depend on its kind: layer, feature or token id, our node id."""
    if kind == "feature":
        layer, feature = cantor_unpair(_int(n.get("feature"), f"node {nid!r}'s feature", fail))
        if str(n.get("layer")) != str(layer):
            raise fail(
                f"node {nid!r}: its feature {n.get('feature')} is layer {layer}'s feature {feature} "
                f"(Cantor pairing), but its layer says {n.get('layer')!r}"
            )
        return dict(
            layer=layer,
            feature=feature,
            label=clerp,
            node_id=NodeId.for_feature(layer, pos, feature),
        )
    elif kind == "error":
        layer = _int(n.get("layer"), f"node {nid!r}'s layer", fail)
        return dict(layer=layer, node_id=NodeId.for_error(layer, pos))
    elif kind == "token":
        m = re.fullmatch(r"E_(-?[0-9]+)_([0-9]+)", nid)
        if m is None or int(m.group(2)) != pos:
            raise fail(
                f"token node {nid!r} is not of the form E_{{token_id}}_{{position}} at ctx_idx {pos}"
            )
        token_id = _int(m.group(1), f"node {nid!r}'s token id", fail)
        return dict(layer=-1, token_id=token_id, node_id=NodeId.for_token(pos, token_id))
    else:
        token_id = _int(n.get("feature"), f"logit node {nid!r}'s feature (its token id)", fail)
        p = n.get("token_prob", 0.0)
        if not (isinstance(p, int | float) and 0 <= p <= 1):
            raise fail(f"logit node {nid!r} has token_prob {p!r}, not a probability")
        found = re.match(r'^Output "(.*)" \(p=', clerp, re.S)
        return dict(
            layer=_int(n.get("layer"), f"logit node {nid!r}'s layer", fail, 1) - 1,
            token_id=token_id,
            token=found.group(1) if found else str(token_id),
            probability=float(p),
            node_id=NodeId.for_logit(pos, token_id),
        )


def _n_layers(rows: list[dict], fail) -> int:
    logit_layers = {r["layer"] for r in rows if r["kind"] == "logit"}
    if len(logit_layers) > 1:
        raise fail(f"logit nodes sit at different layers {sorted(logit_layers)}")
    inner = [r["layer"] for r in rows if r["kind"] in ("feature", "error")]
    n = logit_layers.pop() if logit_layers else (max(inner) + 1 if inner else 1)
    if inner and max(inner) >= n:
        raise fail(
            f"a feature or error node at layer {max(inner)} is not below the logits' layer ({n + 1} in the file)"
        )
    return n


def _links(items: list, index: dict, n: int, fail) -> sp.csr_array:
    rows, cols, vals = [], [], []
    for k, link in enumerate(items):
        if not isinstance(link, dict):
            raise fail(f"link {k} is not an object")
        s, t, w = link.get("source"), link.get("target"), link.get("weight")
        if s not in index or t not in index:
            raise fail(f"link {k} ({s!r} → {t!r}) names a node the file does not have")
        if isinstance(w, bool) or not isinstance(w, int | float) or not math.isfinite(w):
            raise fail(f"link {k} ({s} → {t}) has weight {w!r}, not a finite number")
        rows.append(index[t])
        cols.append(index[s])
        vals.append(float(w))
    coo = sp.coo_array(
        (
            np.array(vals, dtype=np.float32),
            (np.array(rows, dtype=np.int64), np.array(cols, dtype=np.int64)),
        ),
        shape=(n, n),
    )
    m = sp.csr_array(coo)
    if m.nnz != len(vals):
        pairs = pd.DataFrame({"t": rows, "s": cols})
        dup = pairs[pairs.duplicated()].iloc[0]
        inv = {v: k for k, v in index.items()}
        raise fail(f"two links run {inv[int(dup.s)]!r} → {inv[int(dup.t)]!r}")
    m.sort_indices()
    return m


def _token_ids(rows: list[dict], T: int, fail) -> list[int]:
    ids: dict[int, int] = {}
    for r in rows:
        if r["kind"] == "token":
            ids[r["position"]] = r["token_id"]
    missing = [p for p in range(T) if p not in ids]
    if missing:
        raise fail(
            f"no token (embedding) node at positions {missing[:10]}: the prompt's token ids are unknown"
        )
    return [ids[p] for p in range(T)]


def _supernodes(qparams: dict, ours: dict, fail) -> tuple[dict, list]:
    out, dropped = {}, []
    for k, group in enumerate(qparams.get("supernodes") or []):
        if not (isinstance(group, list) and group and all(isinstance(x, str) for x in group)):
            raise fail(f"qParams.supernodes[{k}] must be [name, node_id, …] strings")
        name, *members = group
        out[name] = [ours[m] for m in members if m in ours]
        dropped += [m for m in members if m not in ours]
    return out, dropped
