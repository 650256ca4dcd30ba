"""A graph's claims tested by perturbation, as one call.

A graph proposes hypotheses: this group of features drives the answer, that group feeds this
one.  :func:`validate` turns them into interventions and compares what the graph predicts with
what the model does:

* **target** claims: inhibiting a group moves the target's (demeaned) logit.  The graph predicts
  the change by propagating the removed activations through its edges: an edge ``A[j, i]`` is
  ``a_i`` times the direct effect of feature ``i`` on ``j``'s pre-activation, so a change ``Δa_i``
  moves ``j``'s pre-activation by ``A[j, i] / a_i · Δa_i``; a feature's activation follows its
  pre-activation (slope 1 while it stays active, never below 0), layer after layer, and the logit
  reads the result.  ``mode="frozen"`` (attention, norms and the other features held) keeps only
  the direct edges: there the prediction is exact.
* **feeds** claims: for groups A and B where B can see A (a later layer, a position not before
  A's), inhibiting A changes B's summed activation by the propagated amount; where no path of the
  graph leads from A to B the graph predicts no change.  Checked in free mode.

``agrees`` says whether the observed change has the predicted sign, or both are within
``tolerance`` of the largest change of their kind (so "no change" agrees only with about none).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from .checks import as_float
from .interventions import (
    as_how,
    check_mode,
    clamped_activation,
    demeaned_logit_change,
    free_activations,
    intervened_logits,
    parse_interventions,
)
from .replacement import ReplacementCore


def default_groups(graph, n: int = 6) -> dict[str, list[str]]:
    """The graph's supernodes, or else its ``n`` most influential features grouped by (layer, position)."""
    if graph.supernodes:
        return {k: list(v) for k, v in graph.supernodes.items()}
    top = graph.top_features(4 * n)
    groups: dict[str, list[str]] = {}
    for r in top.itertuples():
        key = f"L{r.layer} · {graph.tokens[r.position]!s} (P{r.position})"
        if key in groups or len(groups) < n:
            groups.setdefault(key, []).append(r.node_id)
    return groups


def propagate(graph, clamped: dict[int, float], frozen: bool = False) -> np.ndarray:
    """The change of every node's activation the graph predicts when the nodes in ``clamped``
    (index → new activation) are set; features respond through the edges (not with ``frozen``)."""
    A = graph.sparse_adjacency.tocsr()
    kinds = graph.kinds
    act = graph.nodes["activation"].to_numpy(dtype=np.float64)
    is_feature = kinds == "feature"
    per_unit = np.divide(1.0, act, out=np.zeros_like(act), where=is_feature & (act != 0))
    W = sp.csr_array(A.multiply(per_unit[None, :]))  # pre-activation change per unit of each source
    delta0 = np.zeros(len(kinds))
    for i, value in clamped.items():
        delta0[i] = value - act[i]
    fixed = np.zeros(len(kinds), dtype=bool)
    fixed[list(clamped)] = True
    free = is_feature & ~fixed
    delta = delta0.copy()
    if frozen:
        return delta
    for _ in range(graph.n_layers + 1):  # one layer further each round
        pre = W @ delta
        new = delta0.copy()
        new[free] = np.maximum(pre[free], -act[free])
        if np.allclose(new, delta, rtol=0, atol=1e-12):
            break
        delta = new
    return delta


def _logit_changes(graph, delta: np.ndarray, rows) -> np.ndarray:
    """What the logit nodes at ``rows`` read from the activation changes ``delta``: an edge is the
    source's activation times its slope, so a change Δa moves the logit by edge · Δa / a."""
    A = graph.sparse_adjacency.tocsr()
    act = graph.nodes["activation"].to_numpy(dtype=np.float64)
    per_unit = np.divide(
        1.0,
        act,
        out=np.zeros_like(act),
        where=np.isin(graph.kinds, ("feature", "error")) & (act != 0),
    )
    return np.asarray(A[rows] @ (per_unit * delta), dtype=np.float64)


def predicted_logit_changes(graph, clamps: dict, frozen: bool = True) -> np.ndarray:
    """The change of each logit node's (demeaned) logit, in ``graph.logits`` order, that the graph
    predicts for ``clamps`` ({node id: intervention}). Frozen: the direct edges only, edge ×
    (a′/a − 1) summed over the clamped nodes — exact in frozen mode, where the logits are linear in
    the clamped activations; else features respond through the edges (:func:`propagate`)."""
    act = graph.nodes["activation"].to_numpy(dtype=np.float64)
    clamped = {}
    for node_id, how in clamps.items():
        i = graph.index(node_id)
        clamped[i] = clamped_activation(float(act[i]), as_how(node_id, how))
    delta = propagate(graph, clamped, frozen=frozen)
    return _logit_changes(graph, delta, [graph.index(n) for n in graph.logits.node_id])


def _same_model(graph, model: ReplacementCore) -> None:
    """The graph came from this model: its name, layer count and prompt tokens agree (else a ValueError)."""
    tokens = model.tokenize(graph.token_ids).tolist()
    same_tokens = model.prompt_strings(tokens) == list(graph.tokens)
    if (
        graph.n_layers != model.n_layers
        or (graph.model_name and model.name and graph.model_name != model.name)
        or not same_tokens
    ):
        raise ValueError(
            f"this graph was made with model {graph.model_name!r} ({graph.n_layers} layers, tokens "
            f"{graph.tokens[:4]}…), not with {model.name!r} ({model.n_layers} layers): validate it with its own model"
        )


def validate(
    graph,
    model: ReplacementCore,
    groups: dict | None = None,
    *,
    how: float = 0.0,
    mode: str = "free",
    target: str | None = None,
    tolerance: float = 0.02,
) -> pd.DataFrame:
    """Test the graph's claims about ``groups`` (name → feature node ids; default
    :func:`default_groups`) by setting each group's activations to ``how`` (0: ablation).

    Returns one row per claim: ``claim`` ("target" or "feeds"), ``group``, ``affects`` (the target
    token or the fed group), ``predicted`` and ``observed`` changes (logit, or summed activation),
    ``agrees``.  ``target``: a token logit node of the graph (default: the top logit)."""
    check_mode(mode)
    _same_model(graph, model)
    how = as_float("how", how, -1e6, 1e6)
    tolerance = as_float("tolerance", tolerance, 0.0, 1.0)
    groups = _checked_groups(graph, groups)
    target = graph.logits.node_id.iloc[0] if target is None else target
    t = graph.node(target)
    if t.kind != "logit" or pd.isna(t.token_id):
        raise ValueError(f"target must be a token logit node of the graph, got {target!r}")
    rows = []
    clean = _observe(model, graph, {}, mode)
    for name, members in groups.items():
        clamped = {graph.index(m): how for m in members}
        delta = propagate(graph, clamped, frozen=mode == "frozen")
        observed = _observe(model, graph, {tuple(members): how}, mode)
        predicted = float(_logit_changes(graph, delta, [graph.index(target)])[0])
        seen = demeaned_logit_change(clean["logits"], observed["logits"], [int(t.token_id)])[0]
        rows.append(("target", name, str(t.token), predicted, float(seen)))
        if mode == "frozen":
            continue
        for other, others in groups.items():
            if other == name or not _can_see(graph, members, others):
                continue
            idx = [graph.index(m) for m in others]
            predicted_b = float(delta[idx].sum())
            seen_b = sum(observed["acts"](m) - clean["acts"](m) for m in others)
            rows.append(("feeds", name, other, predicted_b, float(seen_b)))
    table = pd.DataFrame(rows, columns=["claim", "group", "affects", "predicted", "observed"])
    table["agrees"] = [
        _agrees(p, o, tolerance, scale)
        for p, o, scale in zip(table.predicted, table.observed, _scales(table))
    ]
    return table


def _checked_groups(graph, groups) -> dict:
    """``groups`` as {name: [feature node ids]} (default: :func:`default_groups`), refused by name
    where a group is empty or holds a node that is not a feature."""
    groups = (
        default_groups(graph)
        if groups is None
        else {str(k): list(v) for k, v in dict(groups).items()}
    )
    if not groups:
        raise ValueError(
            "no groups to test: name some (groups={'name': [node ids]}) or give the graph supernodes"
        )
    for name, members in groups.items():
        kinds = [graph.node(m).kind for m in members]
        if not members or any(k != "feature" for k in kinds):
            raise ValueError(
                f"group {name!r} must list feature nodes only, got kinds {sorted(set(kinds)) or 'none'}"
            )
    return groups


def _scales(table: pd.DataFrame) -> list[float]:
    """Per claim kind: the largest |value|, the yardstick of "no change"."""
    big = table.groupby("claim")[["predicted", "observed"]].apply(
        lambda d: float(np.abs(d.to_numpy()).max())
    )
    return [float(big[c]) for c in table.claim]


def _agrees(predicted: float, observed: float, tolerance: float, scale: float) -> bool:
    """Both about the same (within ``tolerance`` of the scale), or both of the same sign."""
    if abs(predicted - observed) <= tolerance * max(scale, 1e-12):
        return True
    tiny = 1e-9 * max(scale, 1e-12)
    return bool(
        abs(predicted) > tiny and abs(observed) > tiny and np.sign(predicted) == np.sign(observed)
    )


def _can_see(graph, sources: list[str], targets: list[str]) -> bool:
    """Whether some member of ``targets`` lies downstream of some member of ``sources``."""
    src = graph.nodes.set_index("node_id").loc[sources]
    dst = graph.nodes.set_index("node_id").loc[targets]
    return bool(
        any(
            (dl > sl) and (dp >= sp_)
            for sl, sp_ in zip(src.layer, src.position)
            for dl, dp in zip(dst.layer, dst.position)
        )
    )


def _observe(model, graph, interventions: dict, mode: str) -> dict:
    """Last-position logits and (free mode) feature activations after ``interventions``."""
    tokens = (
        model.tokenize(graph.prompt)
        if graph.token_ids is None
        else torch.as_tensor(graph.token_ids)
    )
    if mode == "frozen":
        z = (
            intervened_logits(model, tokens, interventions, mode="frozen")[1]
            if interventions
            else model.logits(tokens)
        )
        return {"logits": z, "acts": None}
    ops = parse_interventions(model, interventions, len(tokens))
    logits, acts = free_activations(model, tokens, ops)

    def activation(node_id: str) -> float:
        n = graph.node(node_id)
        return float(acts[int(n.layer)][int(n.position), int(n.feature)])

    return {"logits": logits[-1], "acts": activation}


def validation_figure(table: pd.DataFrame):
    """Predicted against observed change, one point per claim, with the diagonal (plotly)."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for claim, colour in (("target", "#f58518"), ("feeds", "#4c78a8")):
        part = table[table.claim == claim]
        if len(part):
            fig.add_trace(
                go.Scatter(
                    x=part.predicted,
                    y=part.observed,
                    mode="markers",
                    name=claim,
                    marker=dict(
                        color=colour, size=10, symbol=["circle" if a else "x" for a in part.agrees]
                    ),
                    text=[f"{g} → {a}" for g, a in zip(part.group, part.affects)],
                    hovertemplate="%{text}<br>predicted %{x:.3g}<br>observed %{y:.3g}",
                )
            )
    lim = float(np.abs(table[["predicted", "observed"]].to_numpy()).max()) if len(table) else 1.0
    fig.add_trace(
        go.Scatter(
            x=[-lim, lim],
            y=[-lim, lim],
            mode="lines",
            name="observed = predicted",
            line=dict(color="#999", dash="dot"),
        )
    )
    fig.update_layout(
        xaxis_title="predicted by the graph",
        yaxis_title="observed in the model",
        title="the graph's claims, tested (× = disagrees)",
        height=420,
    )
    return fig


__all__ = [
    "default_groups",
    "predicted_logit_changes",
    "propagate",
    "validate",
    "validation_figure",
]
