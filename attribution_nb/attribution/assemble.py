"""Graph assembly: the kept rows as one CSR adjacency, and the node and logit tables."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..graph import NODE_COLUMNS, AttributionGraph
from ..ids import NodeId
from .rows import ActiveFeatures, SourceLayout


@dataclass
class AttributionRun:
    """What one :func:`~attribution_nb.attribute` call has found, phase by phase: the capture,
    its active features and targets (1), the source layout and the rows' store (2-4), which
    features got rows and which are kept without (4), and the notes for ``graph.info``.
    :func:`assemble` reads it whole."""

    model: Any
    prompt: Any
    cap: Any  # the clean capture (features at a BOS position folded into its errors)
    active: ActiveFeatures
    goals: list  # the targets
    layout: SourceLayout | None = None
    store: Any = None  # RowStore
    visited: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # features with rows
    rowless: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # kept without rows
    info: dict = field(default_factory=dict)


def assemble(run: AttributionRun) -> AttributionGraph:
    """Nodes = kept features (in active order) + error nodes + token nodes + target nodes
    (logits and custom targets, kind ``logit``).  Features in ``rowless`` are nodes without
    incoming edges (sources only); other unvisited features are left out."""
    model, cap, layout = run.model, run.cap, run.layout
    assert layout is not None, "assemble() reads a run whose rows are computed"
    order = np.sort(np.concatenate([run.visited, run.rowless]))
    logits = _logit_table(run.goals)
    nodes = node_table(model, cap, run.active.take(torch.from_numpy(order)), logits)
    tokens = cap.tokens
    graph = AttributionGraph(
        prompt=run.prompt
        if isinstance(run.prompt, str)
        else model.tokenizer.decode(tokens.tolist()),
        tokens=model.prompt_strings(tokens),
        token_ids=tokens.tolist(),
        nodes=nodes,
        adjacency=_adjacency(run, layout, order),
        logits=logits,
        n_layers=layout.n_layers,
        model_name=model.name,
        info=run.info,
    )
    graph.nodes["influence"] = graph.influence()
    return graph


def _adjacency(run: AttributionRun, layout: SourceLayout, order: np.ndarray):
    """The kept rows as one CSR matrix over the kept nodes: the features of ``order``, the
    error and token nodes (always kept, no rows), the targets."""
    n_logits = len(run.goals)
    n_fixed = layout.n_errors + layout.n_positions
    has_row = set(run.visited.tolist())
    n_keep = len(order)
    col_map = np.full(layout.n_sources, -1, dtype=np.int32)
    col_map[order] = np.arange(n_keep)
    col_map[layout.n_features :] = np.arange(n_keep, n_keep + n_fixed)
    row_keys = (
        [i if i in has_row else None for i in order.tolist()]
        + [None] * n_fixed
        + [("logit", i) for i in range(n_logits)]
    )
    return run.store.csr(row_keys, n_keep + n_fixed + n_logits, col_map)


def _logit_table(goals: list) -> pd.DataFrame:
    """One row per target: its token (or name), id, probability, logit, node id and position."""
    customs = iter(range(len(goals)))
    logits = pd.DataFrame(
        {
            "token": [g.name for g in goals],
            "token_id": pd.array([g.token_id for g in goals], dtype="Int64"),
            "probability": np.array([g.weight for g in goals], dtype=np.float64),
            "logit": np.array([g.value for g in goals], dtype=np.float64),
            "node_id": [
                NodeId.for_logit(g.position, g.token_id)
                if g.token_id is not None
                else NodeId.for_target(g.position, next(customs))
                for g in goals
            ],
        }
    )
    logits["position"] = [g.position for g in goals]
    return logits


def node_table(model, cap, kept: ActiveFeatures, logits_df: pd.DataFrame) -> pd.DataFrame:
    """One row per node, in adjacency order (columns as in ``graph.NODE_COLUMNS``)."""
    L, T, _ = cap.mlp_in.shape
    toks = model.prompt_strings(cap.tokens)
    parts = (
        _feature_nodes(kept, toks, model.feature_labels),
        _error_nodes(cap, toks, SourceLayout(len(kept), L, T)),
        _token_nodes(cap, toks),
        _target_nodes(logits_df, L),
    )
    nodes = pd.concat([pd.DataFrame(d) for d in parts], ignore_index=True)
    nodes["feature"] = nodes["feature"].astype("Int64")
    nodes["token_id"] = nodes["token_id"].astype("Int64")  # token and logit nodes only
    nodes["layer"] = nodes["layer"].astype(np.int64)
    nodes["position"] = nodes["position"].astype(np.int64)
    nodes["influence"] = 0.0
    return nodes[NODE_COLUMNS]


def _feature_nodes(kept: ActiveFeatures, toks: list, labels: dict) -> dict:
    layer_l, pos_l, feat_l = kept.layer.tolist(), kept.position.tolist(), kept.index.tolist()
    return {
        "node_id": [NodeId.for_feature(l, p, f) for l, p, f in zip(layer_l, pos_l, feat_l)],
        "kind": ["feature"] * len(layer_l),
        "layer": layer_l,
        "position": pos_l,
        "token": [toks[p] for p in pos_l],
        "feature": feat_l,
        "activation": kept.activation.double().tolist(),
        "label": [labels.get((l, f), "") for l, f in zip(layer_l, feat_l)],
    }


def _error_nodes(cap, toks: list, layout: SourceLayout) -> dict:
    err_l, err_p = layout.error_cells()
    n = layout.n_errors
    return {
        "node_id": [NodeId.for_error(l, p) for l, p in zip(err_l, err_p)],
        "kind": ["error"] * n,
        "layer": err_l,
        "position": err_p,
        "token": [toks[p] for p in err_p],
        "feature": [None] * n,
        "activation": cap.errors.norm(dim=-1).flatten().double().tolist(),
        "label": [""] * n,
    }


def _token_nodes(cap, toks: list) -> dict:
    tok_ids = [int(t) for t in cap.tokens.tolist()]
    T = len(tok_ids)
    return {
        "node_id": [NodeId.for_token(p, tok_ids[p]) for p in range(T)],
        "kind": ["token"] * T,
        "layer": [-1] * T,
        "position": list(range(T)),
        "token": toks,
        "token_id": tok_ids,
        "feature": [None] * T,
        "activation": cap.embed.norm(dim=-1).double().tolist(),
        "label": [""] * T,
    }


def _target_nodes(logits_df: pd.DataFrame, n_layers: int) -> dict:
    """The targets' nodes (``logits_df`` loses its position column: the nodes keep it)."""
    n = len(logits_df)
    return {
        "node_id": logits_df["node_id"].tolist(),
        "kind": ["logit"] * n,
        "layer": [n_layers] * n,
        "position": logits_df.pop("position").tolist(),
        "token": logits_df["token"].tolist(),
        "token_id": [None if pd.isna(t) else int(t) for t in logits_df["token_id"]],
        "feature": [None] * n,
        "activation": logits_df["logit"].tolist(),
        "label": [""] * n,
    }
