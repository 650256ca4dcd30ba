"""The graph file: one safetensors file (the sparse adjacency and the numeric columns as
tensors, the tables and metadata as JSON in its header).  Nothing is unpickled on load; the
write is atomic (a temporary file, then one rename)."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from ..io import read_safetensors_numpy, save_safetensors

FORMAT = "attribution_nb.graph"
#: 3: token and logit node ids carry the token id (``t:P0:1``, ``l:P10:231``), a ``token_id`` column.
#: Version 2 files (``t:P0``, ``l:austin``) are converted when read.
FORMAT_VERSION = 3
READS = (2, 3)
NODE_COLUMNS = ["node_id", "kind", "layer", "position", "token", "token_id", "feature", "activation", "influence",
                "label"]
_TEXT_COLUMNS = ["node_id", "kind", "layer", "position", "token", "token_id", "feature", "label"]


def save_graph(graph, path: str | os.PathLike) -> None:
    """Write ``graph`` (an :class:`AttributionGraph`) to ``path``."""
    m = graph.sparse_adjacency
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
        "format": FORMAT, "version": FORMAT_VERSION, "prompt": graph.prompt, "tokens": graph.tokens,
        "token_ids": graph.token_ids, "n_layers": graph.n_layers, "model_name": graph.model_name,
        "n_nodes": len(graph.nodes), "adjacency_dtype": str(m.dtype),
        "nodes": {col: [None if pd.isna(v) else v for v in nodes[col].tolist()] for col in nodes.columns},
        "logits": {"token": graph.logits["token"].tolist(), "token_id": graph.logits["token_id"].tolist()},
        "info": graph.info, "supernodes": graph.supernodes,
    }
    save_safetensors(tensors, path, metadata={FORMAT: json.dumps(meta)})


def read_graph(path: str | os.PathLike) -> dict:
    """The constructor arguments of the graph saved at ``path``."""
    tensors, header = read_safetensors_numpy(path)
    if FORMAT not in header:
        raise ValueError(f"{os.fspath(path)} is a safetensors file but not an attribution_nb graph")
    meta = json.loads(header[FORMAT])
    if meta.get("version") not in READS:
        raise ValueError(f"{os.fspath(path)} has graph format version {meta.get('version')!r}; "
                         f"this attribution_nb reads versions {READS}")
    if meta["version"] == 2:
        _from_version_2(meta)
    n = meta["n_nodes"]
    nodes = pd.DataFrame(meta["nodes"])
    nodes["feature"] = nodes["feature"].astype("Int64")
    nodes["token_id"] = nodes["token_id"].astype("Int64")
    nodes["activation"] = tensors["activation"]
    nodes["influence"] = tensors["influence"]
    nodes = nodes[NODE_COLUMNS]
    adjacency = _adjacency(path, tensors, n)
    logits = pd.DataFrame({"token": meta["logits"]["token"], "token_id": meta["logits"]["token_id"],
                           "probability": tensors["probability"], "logit": tensors["logit"]})
    logits["node_id"] = nodes["node_id"][nodes["kind"] == "logit"].to_numpy()
    return dict(prompt=meta["prompt"], tokens=meta["tokens"], token_ids=meta["token_ids"], nodes=nodes,
                adjacency=adjacency, logits=logits, n_layers=meta["n_layers"], model_name=meta["model_name"],
                info=meta["info"], supernodes=meta["supernodes"])


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
    meta["supernodes"] = {name: [renamed.get(nid, nid) for nid in members]
                          for name, members in (meta.get("supernodes") or {}).items()}


def _adjacency(path, tensors: dict, n: int) -> sp.csr_array:
    for key in ("indptr", "indices", "data"):
        if key not in tensors:
            raise ValueError(f"{os.fspath(path)} has no {key!r} tensor; it is not a complete graph file")
    indptr, indices = tensors["indptr"], tensors["indices"]
    if len(indptr) != n + 1 or indptr[0] != 0 or indptr[-1] != len(indices) or np.any(np.diff(indptr) < 0) \
            or (len(indices) and (indices.min() < 0 or indices.max() >= n)) or len(tensors["data"]) != len(indices):
        raise ValueError(f"{os.fspath(path)} has an inconsistent sparse adjacency for {n} nodes")
    if indptr[-1] < 2**31:
        indptr = indptr.astype(np.int32)
    return sp.csr_array((tensors["data"], indices, indptr), shape=(n, n))
