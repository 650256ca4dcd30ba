"""The graph file: one safetensors file (the sparse adjacency and the numeric columns as
tensors, the tables and metadata as JSON in its header).  Nothing is unpickled on load; the
write is atomic (a temporary file, then one rename).

A file is checked before it is trusted: the header's layout (offsets, sizes, dtypes) before any
tensor is read, and a non-graph file is refused then; a SHA-256 checksum over the tensors and the
tables (stored in the header) must match; the node table must agree with its ids (kind, layer,
position, feature, token id), edges must be finite and run forward (from a lower layer, at the
same or an earlier position), probabilities must lie in [0, 1].  Every failure is a
``ValueError`` that names the file and what is wrong.
"""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from ..ids import KINDS, NodeId
from ..io import read_safetensors_numpy, save_safetensors

FORMAT = "attribution_nb.graph"
#: 3: token and logit node ids carry the token id (``t:P0:1``, ``l:P10:231``), a ``token_id`` column.
#: Version 2 files (``t:P0``, ``l:austin``) are converted when read.
FORMAT_VERSION = 3
READS = (2, 3)
NODE_COLUMNS = [
    "node_id",
    "kind",
    "layer",
    "position",
    "token",
    "token_id",
    "feature",
    "activation",
    "influence",
    "label",
]
_TEXT_COLUMNS = ["node_id", "kind", "layer", "position", "token", "token_id", "feature", "label"]


def save_graph(graph, path: str | os.PathLike) -> None:
    """Write ``graph`` (an :class:`AttributionGraph`) to ``path``."""
    m = graph.sparse_adjacency
    if not m.has_sorted_indices:  # (the reader refuses unsorted rows: duplicates hide in them)
        m = m.sorted_indices()
    tensors = {
        "indptr": torch.from_numpy(m.indptr.astype(np.int64)),
        "indices": torch.from_numpy(m.indices.astype(np.int32)),
        "data": torch.from_numpy(np.ascontiguousarray(m.data)),
        "activation": torch.tensor(graph.nodes["activation"].to_numpy(dtype=np.float64)),
        "influence": torch.tensor(graph.nodes["influence"].to_numpy(dtype=np.float64)),
        "probability": torch.tensor(graph.logits["probability"].to_numpy(dtype=np.float64)),
        "logit": torch.tensor(graph.logits["logit"].to_numpy(dtype=np.float64)),
    }
    nodes = graph.nodes[_TEXT_COLUMNS]
    meta = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "prompt": graph.prompt,
        "tokens": graph.tokens,
        "token_ids": graph.token_ids,
        "n_layers": graph.n_layers,
        "model_name": graph.model_name,
        "n_nodes": len(graph.nodes),
        "adjacency_dtype": str(m.dtype),
        "nodes": {
            col: [None if pd.isna(v) else v for v in nodes[col].tolist()] for col in nodes.columns
        },
        "logits": {
            "token": graph.logits["token"].tolist(),
            "token_id": [None if pd.isna(t) else int(t) for t in graph.logits["token_id"]],
        },
        "info": graph.info,
        "supernodes": graph.supernodes,
    }
    meta["checksum"] = _checksum({k: v.numpy() for k, v in tensors.items()}, meta)
    save_safetensors(tensors, path, metadata={FORMAT: json.dumps(meta)})


def _checksum(arrays: dict, meta: dict) -> str:
    """SHA-256 over every tensor's name, dtype, shape and bytes, and the metadata without its checksum."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}:{a.dtype.str}:{a.shape}".encode())
        h.update(a.tobytes())
    h.update(
        json.dumps({k: v for k, v in meta.items() if k != "checksum"}, sort_keys=True).encode()
    )
    return h.hexdigest()


def read_graph(path: str | os.PathLike) -> dict:
    """The constructor arguments of the graph saved at ``path`` (checked: see the module docstring)."""
    tensors, header = read_safetensors_numpy(path, require=FORMAT, what="attribution_nb graph")
    try:
        meta = json.loads(header[FORMAT])
    except json.JSONDecodeError as err:
        raise ValueError(f"{os.fspath(path)}: the graph's metadata is not JSON ({err})") from None
    try:
        return _parse(path, meta, tensors)
    except (KeyError, TypeError, IndexError, AttributeError, OverflowError, ValueError) as err:
        if isinstance(err, ValueError) and str(err).startswith(os.fspath(path)):
            raise
        raise ValueError(
            f"{os.fspath(path)}: not a valid attribution_nb graph file ({type(err).__name__}: {err})"
        ) from None


def _parse(path, meta: dict, tensors: dict) -> dict:
    if not isinstance(meta, dict) or meta.get("version") not in READS:
        version = meta.get("version") if isinstance(meta, dict) else None
        raise ValueError(
            f"{os.fspath(path)} has graph format version {version!r}; "
            f"this attribution_nb reads versions {READS}"
        )
    if "checksum" not in meta and meta["version"] >= 3:
        raise ValueError(
            f"{os.fspath(path)}: the graph has no checksum, so it cannot be verified (every file this "
            f"package writes has one): it was edited or written by other code"
        )
    if "checksum" in meta and meta["checksum"] != _checksum(tensors, meta):
        raise ValueError(
            f"{os.fspath(path)}: checksum mismatch: the file was changed or damaged after it was written"
        )
    if meta["version"] == 2:
        _from_version_2(meta)
    check_header(path, meta)
    n = meta["n_nodes"]
    nodes = pd.DataFrame(meta["nodes"])
    nodes["feature"] = nodes["feature"].astype("Int64")
    nodes["token_id"] = nodes["token_id"].astype("Int64")
    for column in ("activation", "influence"):
        nodes[column] = _column(path, tensors, column, n)
    nodes = nodes[NODE_COLUMNS]
    adjacency = _adjacency(path, tensors, n)
    n_logits = int((nodes["kind"] == "logit").sum())
    logits = pd.DataFrame(
        {
            "token": meta["logits"]["token"],
            "token_id": pd.array(meta["logits"]["token_id"], dtype="Int64"),
            "probability": _column(path, tensors, "probability", n_logits),
            "logit": _column(path, tensors, "logit", n_logits),
        }
    )
    logits["node_id"] = nodes["node_id"][nodes["kind"] == "logit"].to_numpy()
    _check_tables(path, meta, nodes, logits, adjacency)
    return dict(
        prompt=meta["prompt"],
        tokens=meta["tokens"],
        token_ids=meta["token_ids"],
        nodes=nodes,
        adjacency=adjacency,
        logits=logits,
        n_layers=meta["n_layers"],
        model_name=meta["model_name"],
        info=meta["info"],
        supernodes=meta["supernodes"],
    )


def _ints(values, low: int, high: int, none_ok: bool = False) -> bool:
    return isinstance(values, list) and all(
        (v is None and none_ok) or (type(v) is int and low <= v < high) for v in values
    )


def check_header(path, meta: dict) -> None:
    """The header's fields have the types and sizes a graph needs, before any table is built."""

    def fail(why: str) -> ValueError:
        return ValueError(f"{os.fspath(path)}: {why}")

    for key, kind in (
        ("prompt", str),
        ("tokens", list),
        ("token_ids", list),
        ("n_nodes", int),
        ("n_layers", int),
        ("model_name", str),
        ("nodes", dict),
        ("logits", dict),
        ("info", dict),
        ("supernodes", dict),
    ):
        if type(meta.get(key)) is not kind:
            raise fail(f"{key!r} must be a {kind.__name__}, got {type(meta.get(key)).__name__}")
    n, T = meta["n_nodes"], len(meta["tokens"])
    if (
        not 0 < n < 1 << 31
        or not 0 < meta["n_layers"] <= 10_000
        or not all(isinstance(t, str) for t in meta["tokens"])
    ):
        raise fail(f"n_nodes {n}, n_layers {meta['n_layers']} or the tokens are out of range")
    if not _ints(meta["token_ids"], 0, 1 << 31) or len(meta["token_ids"]) != T:
        raise fail(f"token_ids must be {T} integers in [0, 2**31), one per token")
    why = _node_table_problem(meta) or _logits_problem(meta)
    if why:
        raise fail(why)
    ids = set(meta["nodes"]["node_id"])
    for name, members in meta["supernodes"].items():
        if not isinstance(members, list) or not members or any(m not in ids for m in members):
            raise fail(f"supernode {name!r} names nodes the graph does not have (or none)")


def _node_table_problem(meta: dict) -> str | None:
    """What is wrong with the header's node table (columns, types, ranges, tokens), or None."""
    nodes, n, T = meta["nodes"], meta["n_nodes"], len(meta["tokens"])
    if set(nodes) != set(_TEXT_COLUMNS) or any(
        not isinstance(v, list) or len(v) != n for v in nodes.values()
    ):
        return f"the node table must have the columns {_TEXT_COLUMNS}, each of {n} values"
    checks = {
        "node_id": all(isinstance(v, str) for v in nodes["node_id"]),
        "kind": all(v in KINDS for v in nodes["kind"]),
        "layer": _ints(nodes["layer"], -1, meta["n_layers"] + 1),
        "position": _ints(nodes["position"], 0, T),
        "token": all(isinstance(v, str) for v in nodes["token"]),
        "token_id": _ints(nodes["token_id"], 0, 1 << 31, none_ok=True),
        "feature": _ints(nodes["feature"], 0, 1 << 31, none_ok=True),
        "label": all(v is None or isinstance(v, str) for v in nodes["label"]),
    }
    bad = [k for k, ok in checks.items() if not ok]
    if bad:
        return f"node column(s) {bad} hold values of the wrong type or out of range"
    wrong = [
        i
        for i, (k, p, t) in enumerate(zip(nodes["kind"], nodes["position"], nodes["token"]))
        if k != "logit" and t != meta["tokens"][p]
    ]
    if wrong:
        w = wrong[0]
        return (
            f"node {nodes['node_id'][w]!r} shows token {nodes['token'][w]!r}, but its position "
            f"holds {meta['tokens'][nodes['position'][w]]!r}"
        )
    return None


def _logits_problem(meta: dict) -> str | None:
    """What is wrong with the header's logits table and the logit nodes' tokens, or None."""
    nodes, logits = meta["nodes"], meta["logits"]
    if [t for k, t in zip(nodes["kind"], nodes["token"]) if k == "logit"] != logits.get("token"):
        return "the logit nodes' tokens and the logits table disagree"
    if (
        set(logits) != {"token", "token_id"}
        or not all(isinstance(t, str) for t in logits["token"])
        or not _ints(logits["token_id"], 0, 1 << 31, none_ok=True)
        or len(logits["token"]) != len(logits["token_id"])
    ):
        return "the logits table must have token strings and token ids (or null), one per logit"
    return None


def _column(path, tensors: dict, name: str, n: int) -> np.ndarray:
    a = tensors.get(name)
    if a is None or a.dtype != np.float64 or a.shape != (n,):
        got = "missing" if a is None else f"{a.dtype} {a.shape}"
        raise ValueError(
            f"{os.fspath(path)}: tensor {name!r} must be float64 of shape ({n},), got {got}"
        )
    return a


def _check_tables(
    path, meta: dict, nodes: pd.DataFrame, logits: pd.DataFrame, adjacency: sp.csr_array
) -> None:
    """The node table agrees with its ids; edges are finite and run forward; probabilities are in range."""

    def fail(why: str) -> ValueError:
        return ValueError(f"{os.fspath(path)}: {why}")

    L, T = int(meta["n_layers"]), len(meta["tokens"])
    if len(meta["token_ids"]) != T or not all(isinstance(t, int) for t in meta["token_ids"]):
        raise fail(f"token_ids must be {T} integers, one per token")
    bad_kind = set(nodes["kind"]) - set(KINDS)
    if bad_kind:
        raise fail(f"unknown node kinds {sorted(bad_kind)}")
    if not nodes["node_id"].is_unique:
        raise fail("node ids are not unique")
    for row in nodes.itertuples(index=False):
        _check_node(fail, row, L, T)
    probs = logits["probability"].to_numpy()
    values = logits["logit"].to_numpy()
    unknown = (
        np.isnan(values).all() and meta["info"].get("imported_from") is not None
    )  # (a graph JSON has no logit values)
    if not (
        np.isfinite(probs).all()
        and ((probs >= 0) & (probs <= 1)).all()
        and (unknown or np.isfinite(values).all())
    ):
        raise fail("logit probabilities must be in [0, 1] and logits finite")

    def ids(column) -> list:
        return [None if pd.isna(t) else int(t) for t in column]

    if ids(logits["token_id"]) != ids(nodes["token_id"][nodes["kind"] == "logit"]):
        raise fail("the logits table and the logit nodes disagree on token ids")
    _check_edges(fail, meta, nodes, adjacency)


def _check_edges(fail, meta: dict, nodes: pd.DataFrame, adjacency: sp.csr_array) -> None:
    """Edges finite, sorted and unique in each row, running forward, into features and logits only."""
    if not np.isfinite(adjacency.data).all():
        raise fail("the adjacency holds non-finite edge weights")
    kinds = nodes["kind"].to_numpy()
    has_inputs = np.diff(adjacency.indptr) > 0
    if (has_inputs & np.isin(kinds, ["error", "token"])).any():
        raise fail(
            f"node {nodes['node_id'].iloc[int(np.flatnonzero(has_inputs & np.isin(kinds, ['error', 'token']))[0])]} "
            f"has incoming edges; error and token nodes have none"
        )
    if len(adjacency.indices) and (kinds[adjacency.indices] == "logit").any():
        raise fail("a logit node is the source of an edge; logits have no outgoing edges")
    starts = np.zeros(len(adjacency.indices), dtype=bool)
    starts[adjacency.indptr[:-1][has_inputs]] = True
    if (
        len(adjacency.indices) > 1
        and (np.diff(adjacency.indices.astype(np.int64))[~starts[1:]] <= 0).any()
    ):
        raise fail(
            "the adjacency's entries are not sorted and unique within each row (duplicate edges)"
        )
    unknown_acts = (
        meta["info"].get("imported_from") is not None
    )  # (a graph JSON lacks error and token activations)
    if not np.isfinite(nodes["influence"]).all() or not (
        unknown_acts or np.isfinite(nodes["activation"]).all()
    ):
        raise fail("node activations and influences must be finite")
    if not (kinds == "logit").any():
        raise fail("the graph has no logit node")
    layer, pos = nodes["layer"].to_numpy(), nodes["position"].to_numpy()
    rows = np.repeat(np.arange(adjacency.shape[0]), np.diff(adjacency.indptr))
    cols = adjacency.indices
    backward = (layer[cols] >= layer[rows]) | (pos[cols] > pos[rows])
    if backward.any():
        i = int(np.flatnonzero(backward)[0])
        raise fail(
            f"edge {nodes['node_id'].iloc[cols[i]]} → {nodes['node_id'].iloc[rows[i]]} does not run forward"
        )


def _check_node(fail, row, L: int, T: int) -> None:
    try:
        node = NodeId.parse(row.node_id)
    except ValueError as err:
        raise fail(str(err)) from None

    def num(v):
        return None if v is None or v is pd.NA else int(v)

    expect = (
        row.layer if row.kind in ("feature", "error") else None,
        row.position,
        num(row.feature),
        num(row.token_id),
    )
    layer_ok = {
        "feature": 0 <= row.layer < L,
        "error": 0 <= row.layer < L,
        "token": row.layer == -1,
        "logit": row.layer == L,
    }
    got = (node.layer, node.position, node.feature, node.token_id)
    if (
        node.kind != row.kind
        or got != expect
        or not layer_ok[row.kind]
        or not 0 <= row.position < T
    ):
        raise fail(
            f"node {row.node_id!r} disagrees with its row (kind {row.kind}, layer {row.layer}, "
            f"position {row.position}, feature {row.feature}, token id {row.token_id}) or lies outside "
            f"{L} layers × {T} positions"
        )


def _from_version_2(meta: dict) -> None:
    """Rewrite a version 2 header in place: ``t:P{p}`` → ``t:P{p}:{id}`` (the prompt's token ids),
    ``l:{token}`` → ``l:P{T-1}:{id}`` (the logits table's ids, in node order), supernodes too."""
    nodes, ids = meta["nodes"], meta["token_ids"]
    logit_ids = iter(meta["logits"]["token_id"])
    renamed, token_id = {}, []
    for nid, kind, pos in zip(nodes["node_id"], nodes["kind"], nodes["position"]):
        tid = ids[pos] if kind == "token" else next(logit_ids) if kind == "logit" else None
        token_id.append(tid)
        if kind in ("token", "logit"):
            renamed[nid] = f"{nid[0]}:P{pos}:{tid}"
    nodes["node_id"] = [renamed.get(nid, nid) for nid in nodes["node_id"]]
    nodes["token_id"] = token_id
    meta["supernodes"] = {
        name: [renamed.get(nid, nid) for nid in members]
        for name, members in (meta.get("supernodes") or {}).items()
    }


def _adjacency(path, tensors: dict, n: int) -> sp.csr_array:
    for key, dtypes in (
        ("indptr", (np.int64, np.int32)),
        ("indices", (np.int32, np.int64)),
        ("data", (np.float32, np.float64)),
    ):
        if key not in tensors:
            raise ValueError(
                f"{os.fspath(path)} has no {key!r} tensor; it is not a complete graph file"
            )
        if tensors[key].dtype not in dtypes or tensors[key].ndim != 1:
            raise ValueError(
                f"{os.fspath(path)}: tensor {key!r} has dtype {tensors[key].dtype} and {tensors[key].ndim} "
                f"dimension(s); expected one of {[np.dtype(d).name for d in dtypes]}, 1-D"
            )
    indptr, indices = tensors["indptr"], tensors["indices"]
    if (
        len(indptr) != n + 1
        or indptr[0] != 0
        or indptr[-1] != len(indices)
        or np.any(np.diff(indptr) < 0)
        or (len(indices) and (indices.min() < 0 or indices.max() >= n))
        or len(tensors["data"]) != len(indices)
    ):
        raise ValueError(f"{os.fspath(path)} has an inconsistent sparse adjacency for {n} nodes")
    if indptr[-1] < 2**31:
        indptr = indptr.astype(np.int32)
    return sp.csr_array((tensors["data"], indices, indptr), shape=(n, n))


def sniff(path: str | os.PathLike) -> str:
    """What the file at ``path`` looks like from its first bytes: ``"json"`` for a JSON object,
    else ``"safetensors"`` (the reader then checks it).  Files of other known kinds are named in a
    ``ValueError``: a PyTorch or numpy zip, a pickle, HTML."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such file: {path}")
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(64)
    n = int.from_bytes(head[:8], "little") if len(head) >= 9 else -1
    if 0 < n <= size - 8 and head[8:9] == b"{":
        return "safetensors"
    text = head.lstrip()
    if text[:1] == b"{":
        return "json"
    kinds = [
        (
            b"PK\x03\x04",
            "a zip archive (a PyTorch .pt such as circuit-tracer's Graph.to_pt, or a numpy .npz); "
            "attribution_nb never unpickles: write it as JSON with circuit-tracer's create_graph_files and load that",
        ),
        (b"\x80", "a Python pickle; attribution_nb never unpickles"),
        (
            b"<",
            "an HTML or XML document (a page written by to_html is not loadable; load the .graph file)",
        ),
    ]
    for magic, what in kinds:
        if text.startswith(magic):
            raise ValueError(f"{path} is {what}")
    return "safetensors"
