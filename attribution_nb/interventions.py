"""Interventions: clamp, scale, ablate or steer features and error nodes, then re-run.

An intervention names *where* (a feature at a layer and position, or at every position; a
supernode, i.e. a group of node ids; an error node) and *what*:

* a number: set the activation to it (``0`` ablates);
* ``Multiply(m)``: multiply the activation (``Multiply(-2)`` inhibits);
* ``Steer(s)``: add ``s`` times the feature's decoder direction to the residual stream.

Two modes.  **free**: a normal forward pass in which each clamped MLP output becomes
``true output + Σ (new − old activation) · W_dec[f]``, so every later feature responds.
**frozen**: attention patterns and norm scales stay as on the prompt and feature
activations are held fixed, so only direct effects propagate (what the graph claims);
computed exactly as ``Δlogits = W_U · J · Δwrites`` from the frozen model's Jacobian.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import pandas as pd
import torch

_FEATURE_ID = re.compile(r"^f:L(\d+):P(\d+):(\d+)$")
_ERROR_ID = re.compile(r"^e:L(\d+):P(\d+)$")


@dataclass(frozen=True)
class Multiply:
    """Multiply a feature's activation by ``factor`` (``Multiply(-2)`` is the papers' −2× inhibition)."""
    factor: float


@dataclass(frozen=True)
class Steer:
    """Add ``scale`` × the feature's decoder direction at the position(s)."""
    scale: float


@dataclass(frozen=True)
class _Op:
    kind: str          # "feature" or "error"
    layer: int
    position: int | None   # None: every position
    feature: int | None
    how: object        # float (set), Multiply, Steer, or "ablate" for errors


def _parse_key(key) -> list[tuple[str, int, int | None, int | None]]:
    if isinstance(key, str):
        m = _FEATURE_ID.match(key)
        if m:
            return [("feature", int(m[1]), int(m[2]), int(m[3]))]
        m = _ERROR_ID.match(key)
        if m:
            return [("error", int(m[1]), int(m[2]), None)]
        if key.startswith(("t:", "l:")):
            kind = "token" if key.startswith("t:") else "logit"
            raise ValueError(f"cannot clamp {key!r}: it is a {kind} node; only features and error nodes can be clamped")
        raise ValueError(f"unknown node id {key!r}; expected 'f:L<layer>:P<pos>:<feature>' or 'e:L<layer>:P<pos>'")
    if isinstance(key, tuple) and len(key) == 3 and all(k is None or isinstance(k, int) for k in key):
        layer, pos, feat = key
        return [("feature", layer, pos, feat)]
    if isinstance(key, (tuple, list, frozenset)):   # a supernode: a group of node ids
        return [p for k in key for p in _parse_key(k)]
    raise ValueError(f"cannot read intervention target {key!r}: give a node id, a (layer, position, feature) "
                     "tuple (position None for every position), or a tuple of node ids (a supernode)")


def parse_interventions(model, interventions, n_positions: int) -> list[_Op]:
    """Validate and normalise ``{target: value}`` (or a list of pairs) into operations."""
    items = interventions.items() if isinstance(interventions, dict) else list(interventions or [])
    ops = []
    for key, how in items:
        if isinstance(how, str):
            if how != "ablate":
                raise ValueError(f"unknown intervention {how!r}; use a number, 'ablate', Multiply(m) or Steer(s)")
            how = 0.0
        elif isinstance(how, (int, float)):
            how = float(how)
        elif not isinstance(how, (Multiply, Steer)):
            raise ValueError(f"unknown intervention {how!r}; use a number, 'ablate', Multiply(m) or Steer(s)")
        value = how if isinstance(how, float) else getattr(how, "factor", getattr(how, "scale", None))
        if not math.isfinite(value):
            raise ValueError(f"intervention value for {key!r} must be finite, got {value}")
        for kind, layer, pos, feat in _parse_key(key):
            if not 0 <= layer < model.n_layers:
                raise ValueError(f"layer {layer} in {key!r} is out of range: the model has {model.n_layers} layers")
            if pos is not None and not 0 <= pos < n_positions:
                raise ValueError(f"position {pos} in {key!r} is out of range: the prompt has {n_positions} tokens")
            if kind == "feature":
                n_feat = model.transcoders[layer].d_features
                if not 0 <= feat < n_feat:
                    raise ValueError(f"feature {feat} in {key!r} is out of range: layer {layer} has {n_feat} features")
            elif how != 0.0:
                raise ValueError(f"error node {key!r} can only be ablated (0 or 'ablate'), got {how!r}")
            ops.append(_Op(kind, layer, pos, feat, how))
    return ops


def write_deltas(transcoders, layer: int, ops: list[_Op], x: torch.Tensor, out: torch.Tensor,
                 error: torch.Tensor | None = None, cross_layer: bool = False) -> dict[int, torch.Tensor]:
    """Changes [T, d] to MLP outputs caused by the operations on layer ``layer``, given its MLP
    input ``x`` [T, d] and output ``out``: ``{layer: Δ}``, plus ``{later layer: Δ}`` for a
    cross-layer transcoder, whose features also write to later layers.

    Operations apply in order to a working copy of the activations (a later clamp of the same
    feature overrides an earlier one); the change is ``(new − old activations) @ W_dec``.
    ``error`` is the layer's error node (default ``out − reconstruction``, which is exact
    only for per-layer transcoders; ``cross_layer`` says whether any transcoder of the set
    writes to later layers).  ``transcoders`` maps layers to transcoders (a
    :class:`TranscoderSet`, or a dict of the layers that matter).
    """
    tc = transcoders[layer]
    acts = tc.encode(x)
    new = acts.clone()
    delta = torch.zeros_like(out)
    result = {layer: delta}
    for op in ops:
        if op.layer != layer:
            continue
        pos = slice(None) if op.position is None else op.position
        if op.kind == "error":
            if error is None:
                if cross_layer:
                    raise ValueError(f"ablating error node(s) of layer {layer} in free mode is not supported with "
                                     "cross-layer transcoders (the error depends on earlier layers' features); "
                                     "use mode='frozen'")
                error = out - tc(x)
            delta[pos] -= error[pos]
        elif isinstance(op.how, Steer):
            delta[pos] += op.how.scale * tc.W_dec[op.feature]
            for j in range(tc.n_later):
                later = result.setdefault(layer + 1 + j, torch.zeros_like(out))
                later[pos] += op.how.scale * tc.W_dec_later[op.feature, j]
        elif isinstance(op.how, Multiply):
            new[pos, op.feature] = new[pos, op.feature] * op.how.factor
        else:
            new[pos, op.feature] = op.how
    changed = (new != acts).any(0).nonzero().flatten()
    if len(changed):
        diff = (new - acts)[:, changed]
        delta += diff @ tc.W_dec[changed]
        for j in range(tc.n_later):
            result[layer + 1 + j] = result.get(layer + 1 + j, 0) + diff @ tc.W_dec_later[changed, j]
    return result


@torch.no_grad()
def free_logits(model, tokens: torch.Tensor, ops: list[_Op]) -> torch.Tensor:
    """Logits [T, V] of a normal forward pass with the interventions in place."""
    import nnsight
    from .model import _get, rms_normalize
    a = model.adapter
    layers_hit = sorted({op.layer for op in ops})
    # the block names only these (not ``model``): a remote request carries what it names
    tcs = {l: model.transcoders[l] for l in layers_hit}
    cross_layer = any(tc.n_later for tc in model.transcoders)
    layers, unembed, n_layers = _get(model.nn, a.layers), _get(model.nn, a.unembed), model.n_layers
    with model._trace(tokens[None]):
        pending = {}                    # cross-layer writes waiting for their layer
        for l in range(layers_hit[0], n_layers) if layers_hit else []:
            if l not in layers_hit and l not in pending:
                continue
            if l in layers_hit:
                mlp_in = _get(layers[l], a.mlp_in)
                x = rms_normalize(mlp_in.input, mlp_in._module) if a.mlp_in_normalized else mlp_in.input
            out_env = _get(layers[l], a.mlp_out)
            out = out_env.output
            delta = pending.pop(l, None)
            if l in layers_hit:
                deltas = write_deltas(tcs, l, ops, x[0], out[0], cross_layer=cross_layer)
                own = deltas.pop(l)
                delta = own if delta is None else delta + own
                for later, d in deltas.items():
                    pending[later] = d if later not in pending else pending[later] + d
            out_env.output = out + delta[None]
        logits = nnsight.save(unembed.output[0].cpu())
    return model.softcap(logits.to(model.device))


def frozen_logits(model, tokens: torch.Tensor, ops: list[_Op], batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Last-position logits [V] before, and after the interventions in the frozen model
    (direct effects only: before + W_U · J · Δwrites, then the model's soft-cap if any)."""
    import nnsight
    cap = model.capture(tokens)
    d = cap.mlp_in.shape[-1]
    deltas = {}
    for layer in sorted({op.layer for op in ops}):
        for l, change in write_deltas(model.transcoders, layer, ops, cap.mlp_in[layer], cap.mlp_out[layer],
                                      cap.errors[layer]).items():
            deltas[l] = change if l not in deltas else deltas[l] + change
    # what the linear trace needs (a remote request carries exactly this)
    slim = cap.for_linear_trace()
    envoy, adapter, skips, batch = model.nn, model.adapter, model.skip_weights(), min(batch_size, d)
    if model.remote:
        with model.session():
            logit_change = nnsight.save(frozen_logit_change(envoy, adapter, skips, slim, deltas, batch))
    else:
        logit_change = frozen_logit_change(envoy, adapter, skips, slim, deltas, batch)
    before = cap.logits[-1]
    raw_after = cap.raw_logits + logit_change.to(cap.raw_logits.device, before.dtype)
    return before, model.softcap(raw_after)


def frozen_logit_change(envoy, adapter, skips, cap, deltas: dict, batch: int) -> torch.Tensor:
    """``W_U · J · Δwrites`` [V] (float64, on the CPU): the last position's change of logits when
    the MLP outputs change by ``deltas`` ({layer: [T, d]}) in the frozen model, J from
    backward passes through :func:`~attribution_nb.model.linear_trace` (``batch`` rows of J
    per pass).  Names only its arguments, so it also runs inside a remote session."""
    from .model import _get, linear_trace
    W_U = _get(envoy, adapter.unembed).weight
    device = W_U.device
    if cap.embed.device != device:
        cap = cap.for_linear_trace(device)
        skips = [None if w is None else w.to(device) for w in skips]
        deltas = {l: x.to(device) for l, x in deltas.items()}
    T, d = cap.embed.shape
    trace = linear_trace(envoy, adapter, skips, cap, batch)
    change = torch.zeros(d, dtype=torch.float64, device=device)
    eye = torch.eye(d, dtype=cap.embed.dtype, device=device)
    for s in range(0, d, batch):
        e = min(s + batch, d)
        loss = (trace.unembed_in[: e - s, T - 1] * eye[s:e]).sum()
        grads = torch.autograd.grad(loss, [trace.write_leaves[l] for l in deltas], retain_graph=True,
                                    allow_unused=True)
        for g, (l, delta) in zip(grads, deltas.items()):
            if g is not None:
                change[s:e] += (g[: e - s] * delta[None]).sum((1, 2)).double()
    return (W_U.double() @ change).cpu()


def intervention_table(model, before: torch.Tensor, after: torch.Tensor, top_k: int) -> pd.DataFrame:
    """Top tokens before and after, sorted by the change in probability."""
    p0, p1 = torch.softmax(before.double(), -1), torch.softmax(after.double(), -1)
    ids = torch.cat([p0.topk(top_k).indices, p1.topk(top_k).indices]).unique()
    df = pd.DataFrame({"token": model.token_strings(ids), "token_id": ids.tolist(),
                       "p_before": p0[ids].numpy(), "p_after": p1[ids].numpy(),
                       "logit_before": before[ids].double().numpy(), "logit_after": after[ids].double().numpy()})
    df["p_change"] = df.p_after - df.p_before
    return df.sort_values("p_change", key=abs, ascending=False).reset_index(drop=True)
