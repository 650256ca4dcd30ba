"""Graph assembly: the kept rows as one CSR adjacency, and the node and logit tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from ..graph import NODE_COLUMNS, AttributionGraph
from ..ids import NodeId
from .rows import ActiveFeatures, SourceLayout


def assemble(model, prompt, cap, active: ActiveFeatures, visited: np.ndarray, store, layout: SourceLayout,
             goals: list, info: dict, rowless: np.ndarray | None = None) -> AttributionGraph:
    """Nodes = kept features (in active order) + error nodes + token nodes + target nodes
    (logits and custom targets, kind ``logit``).  Features in ``rowless`` are nodes without
    incoming edges (sources only); other unvisited features are left out."""
    n_logits = len(goals)
    n_fixed = layout.n_errors + layout.n_positions           # error and token nodes: always kept
    has_row = set(visited.tolist())
    order = np.sort(np.concatenate([visited, rowless if rowless is not None else np.zeros(0, np.int64)]))
    n_keep = len(order)
    col_map = np.full(layout.n_sources, -1, dtype=np.int32)
    col_map[order] = np.arange(n_keep)
    col_map[layout.n_features:] = np.arange(n_keep, n_keep + n_fixed)
    row_keys = [i if i in has_row else None for i in order.tolist()] + [None] * n_fixed \
        + [("logit", i) for i in range(n_logits)]
    adjacency = store.csr(row_keys, n_keep + n_fixed + n_logits, col_map)
    customs = iter(range(n_logits))
    logits = pd.DataFrame({"token": [g.name for g in goals],
                           "token_id": pd.array([g.token_id for g in goals], dtype="Int64"),
                           "probability": np.array([g.weight for g in goals], dtype=np.float64),
                           "logit": np.array([g.value for g in goals], dtype=np.float64),
                           "node_id": [NodeId.for_logit(g.position, g.token_id) if g.token_id is not None
                                       else NodeId.for_target(g.position, next(customs)) for g in goals]})
    logits["position"] = [g.position for g in goals]
    nodes = node_table(model, cap, active.take(torch.from_numpy(order)), logits)
    tokens = cap.tokens
    graph = AttributionGraph(
        prompt=prompt if isinstance(prompt, str) else model.tokenizer.decode(tokens.tolist()),
        tokens=model.prompt_strings(tokens), token_ids=tokens.tolist(), nodes=nodes, adjacency=adjacency,
        logits=logits, n_layers=layout.n_layers, model_name=model.name, info=info)
    graph.nodes["influence"] = graph.influence()
    return graph


def node_table(model, cap, kept: ActiveFeatures, logits_df: pd.DataFrame) -> pd.DataFrame:
    """One row per node, in adjacency order (columns as in ``graph.NODE_COLUMNS``)."""
    L, T, _ = cap.mlp_in.shape
    toks = model.prompt_strings(cap.tokens)
    tok_ids = [int(t) for t in cap.tokens.tolist()]
    labels = model.feature_labels
    layer_l, pos_l, feat_l = kept.layer.tolist(), kept.position.tolist(), kept.index.tolist()
    feature_rows = {
        "node_id": [NodeId.for_feature(l, p, f) for l, p, f in zip(layer_l, pos_l, feat_l)],
        "kind": ["feature"] * len(layer_l), "layer": layer_l, "position": pos_l,
        "token": [toks[p] for p in pos_l], "feature": feat_l, "activation": kept.activation.double().tolist(),
        "label": [labels.get((l, f), "") for l, f in zip(layer_l, feat_l)],
    }
    err_l, err_p = SourceLayout(len(kept), L, T).error_cells()
    error_rows = {
        "node_id": [NodeId.for_error(l, p) for l, p in zip(err_l, err_p)], "kind": ["error"] * (L * T),
        "layer": err_l, "position": err_p, "token": [toks[p] for p in err_p], "feature": [None] * (L * T),
        "activation": cap.errors.norm(dim=-1).flatten().double().tolist(), "label": [""] * (L * T),
    }
    token_rows = {
        "node_id": [NodeId.for_token(p, tok_ids[p]) for p in range(T)], "kind": ["token"] * T, "layer": [-1] * T,
        "position": list(range(T)), "token": toks, "token_id": tok_ids, "feature": [None] * T,
        "activation": cap.embed.norm(dim=-1).double().tolist(), "label": [""] * T,
    }
    n_log = len(logits_df)
    logit_rows = {
        "node_id": logits_df["node_id"].tolist(), "kind": ["logit"] * n_log,
        "layer": [L] * n_log, "position": logits_df.pop("position").tolist(), "token": logits_df["token"].tolist(),
        "token_id": [None if pd.isna(t) else int(t) for t in logits_df["token_id"]], "feature": [None] * n_log,
        "activation": logits_df["logit"].tolist(), "label": [""] * n_log,
    }
    nodes = pd.concat([pd.DataFrame(d) for d in (feature_rows, error_rows, token_rows, logit_rows)],
                      ignore_index=True)
    nodes["feature"] = nodes["feature"].astype("Int64")
    nodes["token_id"] = nodes["token_id"].astype("Int64")       # token and logit nodes only
    nodes["layer"] = nodes["layer"].astype(np.int64)
    nodes["position"] = nodes["position"].astype(np.int64)
    nodes["influence"] = 0.0
    return nodes[NODE_COLUMNS]
