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

These are functions of a :class:`~attribution_nb.replacement.ReplacementCore`;
:class:`attribution_nb.ReplacementModel` offers them as methods (``model.intervene`` …).
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import nnsight
import numpy as np
import pandas as pd
import torch

from .architectures import get_module
from .backend import model_device, to_device
from .checks import as_float, as_int
from .ids import NodeId
from .replacement import ReplacementCore
from .tracing import TraceInputs, linear_trace, transcoder_reads, writes_dot

#: clamps and factors beyond this overflow float32 arithmetic in the model
MAX_VALUE = 1e6


@dataclass(frozen=True)
class Multiply:
    """Multiply a feature's activation by ``factor`` (``Multiply(-2)`` is the papers' −2× inhibition)."""

    factor: float

    def __post_init__(self):
        object.__setattr__(
            self, "factor", as_float("Multiply's factor", self.factor, -MAX_VALUE, MAX_VALUE)
        )


@dataclass(frozen=True)
class Steer:
    """Add ``scale`` × the feature's decoder direction at the position(s)."""

    scale: float

    def __post_init__(self):
        object.__setattr__(
            self, "scale", as_float("Steer's scale", self.scale, -MAX_VALUE, MAX_VALUE)
        )


@dataclass(frozen=True)
class Op:
    """One normalised intervention (see :func:`parse_interventions`)."""

    kind: str  # "feature" or "error"
    layer: int
    position: int | None  # None: every position
    feature: int | None
    how: object  # float (set), Multiply, Steer, or "ablate" for errors


def parse_key(key) -> list[tuple[str, int, int | None, int | None]]:
    """``(kind, layer, position, feature)`` of each node an intervention target names."""
    if isinstance(key, str):
        kind = NodeId.kind_of(key)
        if kind in ("token", "logit"):
            raise ValueError(
                f"cannot clamp {key!r}: it is a {kind} node; only features and error nodes can be clamped"
            )
        try:
            node = NodeId.parse(key)
        except ValueError:
            raise ValueError(
                f"unknown node id {key!r}; expected 'f:L<layer>:P<pos>:<feature>' or "
                "'e:L<layer>:P<pos>'"
            ) from None
        return [(node.kind, node.layer, node.position, node.feature)]  # type: ignore[list-item]
    if isinstance(key, tuple) and len(key) == 3 and all(k is None or _integral(k) for k in key):
        layer, pos, feat = (None if k is None else int(k) for k in key)
        return [("feature", layer, pos, feat)]  # type: ignore[list-item]
    if isinstance(key, (tuple, list, frozenset)) and all(
        isinstance(k, str | tuple | list) for k in key
    ):
        return [p for k in key for p in parse_key(k)]  # a supernode: a group of node ids
    raise ValueError(
        f"cannot read intervention target {key!r}: give a node id, a (layer, position, feature) "
        "tuple (position None for every position), or a tuple of node ids (a supernode)"
    )


def _integral(k) -> bool:
    """An int, a numpy integer or a 0-d integer tensor (not a bool)."""
    k = k.item() if getattr(k, "ndim", None) == 0 and hasattr(k, "item") else k
    return isinstance(k, numbers.Integral) and not isinstance(k, bool)


def _items(interventions) -> list:
    if isinstance(interventions, dict):
        return list(interventions.items())
    if isinstance(interventions, (str, bytes, torch.Tensor, np.ndarray)) or not hasattr(
        interventions, "__iter__"
    ):
        raise ValueError(
            f"interventions must be a dict {{target: value}} or a list of (target, value) pairs, "
            f"got {interventions!r}"
        )
    items = list(interventions)
    bad = [p for p in items if not (isinstance(p, (tuple, list)) and len(p) == 2)]
    if bad:
        raise ValueError(f"interventions must be (target, value) pairs, got {bad[0]!r}")
    return items


#: the clamps a name stands for (the widget's ablate, −2× and 2× buttons)
CLAMP_NAMES = {"ablate": 0.0, "-2x": Multiply(-2.0), "2x": Multiply(2.0)}


def as_how(key, how, *, value_name: str | None = None, refusal: str | None = None):
    """An intervention's value: a name of :data:`CLAMP_NAMES`, a finite number (set), a
    :class:`Multiply` or a :class:`Steer`; anything else is a ValueError naming ``key`` and the value
    (``value_name`` names a number out of range, ``refusal`` replaces the message for an unknown name)."""
    if isinstance(how, (Multiply, Steer)):
        return how
    if isinstance(how, str):
        if how not in CLAMP_NAMES:
            raise ValueError(
                refusal
                or f"unknown intervention {how!r}; use a number, 'ablate', Multiply(m) or Steer(s)"
            )
        return CLAMP_NAMES[how]
    try:
        return as_float(value_name or f"intervention value for {key!r}", how, -MAX_VALUE, MAX_VALUE)
    except ValueError as err:
        raise ValueError(f"{err}; use a number, 'ablate', Multiply(m) or Steer(s)") from None


def clamped_activation(activation: float, how) -> float:
    """The activation a node takes under ``how`` (after :func:`as_how`): a value sets it,
    ``Multiply(m)`` scales it, ``Steer(s)`` adds ``s`` units of its own write."""
    if isinstance(how, Multiply):
        return activation * how.factor
    if isinstance(how, Steer):
        return activation + how.scale
    return float(how)


def demeaned_logit_change(before: torch.Tensor, after: torch.Tensor, token_ids) -> np.ndarray:
    """The change of the logits of ``token_ids`` minus the change of the mean logit (float64)."""
    d = after.double() - before.double()
    return (d[torch.as_tensor(np.asarray(token_ids, dtype=np.int64))] - d.mean()).cpu().numpy()


def parse_interventions(model, interventions, n_positions: int) -> list[Op]:
    """Validate and normalise ``{target: value}`` (or a list of pairs) into operations."""
    ops = []
    for key, how in _items({} if interventions is None else interventions):
        how = as_how(key, how)
        for kind, layer, pos, feat in parse_key(key):
            if layer is None or not 0 <= layer < model.n_layers:
                raise ValueError(
                    f"layer {layer} in {key!r} is out of range: the model has {model.n_layers} layers"
                )
            if pos is not None and not 0 <= pos < n_positions:
                raise ValueError(
                    f"position {pos} in {key!r} is out of range: the prompt has {n_positions} tokens"
                )
            if kind == "feature":
                n_feat = model.transcoders[layer].d_features
                if feat is None or not 0 <= feat < n_feat:
                    raise ValueError(
                        f"feature {feat} in {key!r} is out of range: layer {layer} has {n_feat} features"
                    )
            elif how != 0.0:
                raise ValueError(
                    f"error node {key!r} can only be ablated (0 or 'ablate'), got {how!r}"
                )
            ops.append(Op(kind, layer, pos, feat, how))
    return ops


def write_deltas(
    transcoders,
    layer: int,
    ops: list[Op],
    x: torch.Tensor,
    out: torch.Tensor,
    error: torch.Tensor | None = None,
    cross_layer: bool = False,
) -> dict[int, torch.Tensor]:
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
                    raise ValueError(
                        f"ablating error node(s) of layer {layer} in free mode is not supported with "
                        "cross-layer transcoders (the error depends on earlier layers' features); "
                        "use mode='frozen'"
                    )
                error = out - tc(x)
            delta[pos] -= error[pos]
        elif isinstance(op.how, Steer):
            for j, direction in enumerate(tc.direction_writes(op.feature)):
                target = result.setdefault(layer + j, torch.zeros_like(out))
                target[pos] += op.how.scale * direction
        elif isinstance(op.how, Multiply):
            new[pos, op.feature] = new[pos, op.feature] * op.how.factor
        else:
            new[pos, op.feature] = op.how
    changed = (new != acts).any(0).nonzero().flatten()
    if len(changed):
        writes = tc.change_writes(changed, (new - acts)[:, changed])
        delta += writes[0]
        for j, write in enumerate(writes[1:], start=1):
            result[layer + j] = result.get(layer + j, 0) + write
    return result


@torch.no_grad()
def free_logits(model: ReplacementCore, tokens: torch.Tensor, ops: list[Op]) -> torch.Tensor:
    """Logits [T, V] of a normal forward pass with the interventions in place."""
    return free_run(model, tokens, ops)[0]


def free_activations(
    model: ReplacementCore, tokens: torch.Tensor, ops: list[Op]
) -> tuple[torch.Tensor, list]:
    """Logits [T, V] and every layer's transcoder activations [T, F] of a normal forward pass with
    the interventions in place (the activations each layer's transcoder reads there, before the
    layer's own interventions are applied to its output)."""
    logits, reads = free_run(model, tokens, ops, record=True)
    with torch.no_grad():
        acts = [
            tc.encode(x.to(tc.W_enc.device, tc.W_enc.dtype))
            for tc, x in zip(model.transcoders, reads)
        ]
    return logits, acts


def free_run(model: ReplacementCore, tokens: torch.Tensor, ops: list[Op], record: bool = False):
    """Logits [T, V] of a normal forward pass with the interventions in place and, with
    ``record``, what each layer's transcoder reads [T, d] (else None)."""
    arch = model.architecture
    layers_hit = sorted({op.layer for op in ops})
    # the block names only these (not ``model``): a remote request carries what it names
    tcs = {l: model.transcoders[l] for l in layers_hit}
    cross_layer = model.transcoders.cross_layer
    layers, unembed, n_layers = (
        get_module(model.nn, arch.layers),
        get_module(model.nn, arch.unembed),
        model.n_layers,
    )
    reads = None
    with model.trace(tokens[None]):
        pending: dict[int, torch.Tensor] = {}  # cross-layer writes waiting for their layer
        if record:
            reads = nnsight.save([])
        start = 0 if record else (layers_hit[0] if layers_hit else n_layers)
        for l in range(start, n_layers):
            if l not in layers_hit and l not in pending and not record:
                continue
            if l in layers_hit or record:
                mlp_in = get_module(layers[l], arch.mlp_in)
                x = transcoder_reads(arch, mlp_in._module, mlp_in.input)
                if reads is not None:
                    reads.append(x[0].cpu())
            out_env = get_module(layers[l], arch.mlp_out)
            out = out_env.output
            delta = pending.pop(l, None)
            if l in layers_hit:
                deltas = write_deltas(tcs, l, ops, x[0], out[0], cross_layer=cross_layer)
                own = deltas.pop(l)
                delta = own if delta is None else delta + own
                for later, d in deltas.items():
                    pending[later] = d if later not in pending else pending[later] + d
            if delta is not None:
                out_env.output = out + delta[None]
        logits = nnsight.save(unembed.output[0].cpu())
    return model.softcap(logits.to(model.device)), reads


def frozen_logits(
    model: ReplacementCore, tokens: torch.Tensor, ops: list[Op], batch_size: int = 64
) -> tuple[torch.Tensor, torch.Tensor]:
    """Last-position logits [V] before, and after the interventions in the frozen model
    (direct effects only: before + W_U · J · Δwrites, then the model's soft-cap if any)."""
    cap = model.capture(tokens)
    d = cap.mlp_in.shape[-1]
    deltas: dict[int, torch.Tensor] = {}
    for layer in sorted({op.layer for op in ops}):
        for l, change in write_deltas(
            model.transcoders, layer, ops, cap.mlp_in[layer], cap.mlp_out[layer], cap.errors[layer]
        ).items():
            deltas[l] = change if l not in deltas else deltas[l] + change
    # what the linear trace needs (a remote request carries exactly this)
    args = (
        model.nn,
        model.architecture,
        model.transcoders.skip_weights(),
        cap.trace_inputs(),
        deltas,
        min(batch_size, d),
    )
    logit_change = model.backend.run(model.nn, frozen_logit_change, *args)
    before = cap.logits[-1]
    raw_after = cap.raw_logits + logit_change.to(cap.raw_logits.device, before.dtype)
    return before, model.softcap(raw_after)


def frozen_logit_change(
    envoy, arch, skips, cap: TraceInputs, deltas: dict, batch: int
) -> torch.Tensor:
    """``W_U · J · Δwrites`` [V] (float64, on the CPU): the last position's change of logits when
    the MLP outputs change by ``deltas`` ({layer: [T, d]}) in the frozen model, J from
    backward passes through :func:`~attribution_nb.tracing.linear_trace` (``batch`` rows of J
    per pass).  Names only its arguments, so it also runs inside a remote session."""
    W_U = get_module(envoy, arch.unembed).weight
    device = model_device(envoy)
    cap, skips, deltas = cap.to(device), to_device(skips, device), to_device(deltas, device)
    T, d = cap.embed.shape
    trace = linear_trace(envoy, arch, skips, cap, batch)
    change = torch.zeros(d, dtype=torch.float64, device=device)
    eye = torch.eye(d, dtype=cap.embed.dtype, device=device)
    for s in range(0, d, batch):
        e = min(s + batch, d)
        loss = (trace.unembed_in[: e - s, T - 1] * eye[s:e]).sum()
        leaves = [trace.write_leaves[l] for l in deltas]
        grads = torch.autograd.grad(loss, leaves, retain_graph=True, allow_unused=True)
        writes = [(k, slice(None), delta) for k, delta in enumerate(deltas.values())]
        change[s:e] += writes_dot(grads, writes, e - s).to(device)
    return (W_U.double() @ change).cpu()


def intervention_table(
    model: ReplacementCore, before: torch.Tensor, after: torch.Tensor, top_k: int
) -> pd.DataFrame:
    """Top tokens before and after, sorted by the change in probability."""
    p0, p1 = torch.softmax(before.double(), -1), torch.softmax(after.double(), -1)
    top_k = min(top_k, p0.shape[-1])  # (asking for more than the vocabulary shows all of it)
    ids = torch.cat([p0.topk(top_k).indices, p1.topk(top_k).indices]).unique()
    df = pd.DataFrame(
        {
            "token": model.token_strings(ids),
            "token_id": ids.tolist(),
            "p_before": p0[ids].numpy(),
            "p_after": p1[ids].numpy(),
            "logit_before": before[ids].double().numpy(),
            "logit_after": after[ids].double().numpy(),
        }
    )
    df["p_change"] = df.p_after - df.p_before
    return df.sort_values("p_change", key=abs, ascending=False).reset_index(drop=True)


# -- what ReplacementModel offers as methods ------------------------------------------------
def check_mode(mode) -> str:
    """``mode`` if it is ``"free"`` (a normal forward pass) or ``"frozen"`` (attention and norms as on the prompt)."""
    if mode not in ("free", "frozen"):
        raise ValueError(f"mode must be 'free' or 'frozen', got {mode!r}")
    return mode


def intervened_logits(model: ReplacementCore, prompt, interventions, mode: str = "free"):
    """Last-position logits [V] before and after ``interventions``."""
    check_mode(mode)
    tokens = model.tokenize(prompt)
    ops = parse_interventions(model, interventions, len(tokens))
    if mode == "frozen":  # its clean capture already holds the logits before
        return frozen_logits(model, tokens, ops)
    return model.logits(tokens), free_logits(model, tokens, ops)[-1]


def intervene(
    model: ReplacementCore, prompt, interventions, mode: str = "free", top_k: int = 10
) -> pd.DataFrame:
    """The top tokens before and after the interventions (see ``ReplacementModel.intervene``)."""
    top_k = as_int("top_k", top_k, minimum=1)
    before, after = intervened_logits(model, prompt, interventions, mode)
    return intervention_table(model, before, after, top_k)


def swap_interventions(
    model: ReplacementCore, remove, source_prompt, add, *, position: int | None = None
) -> dict:
    """The clamps of a supernode swap: ``remove`` ablated, ``add`` set to their activations on
    ``source_prompt``, at ``position`` (default: where the ``remove`` features sit)."""
    removed = [p for key in remove for p in parse_key(key)]
    if position is None:
        positions = {p[2] for p in removed}
        if len(positions) != 1 or None in positions:
            shown = sorted(p for p in positions if p is not None) + (
                ["every position"] if None in positions else []
            )
            raise ValueError(f"the removed features sit at positions {shown}; give position=")
        position = positions.pop()
    src_tokens = model.tokenize(source_prompt)
    cap = model.capture(src_tokens)
    clamps: dict = {key: 0.0 for key in remove}
    for key in add:
        for kind, layer, pos, feat in parse_key(key):
            if kind != "feature" or pos is None or not 0 <= pos < len(src_tokens):
                raise ValueError(
                    f"cannot take {key!r} from the source prompt: give feature node ids of its graph"
                )
            clamps[(layer, position, feat)] = float(cap.activations[layer][pos, feat])
    return clamps


@torch.no_grad()
def generate(
    model: ReplacementCore,
    prompt,
    interventions=None,
    max_new_tokens: int = 20,
    *,
    every_position: bool = False,
    temperature: float = 0.0,
    seed: int = 0,
    stop: str | None = None,
) -> dict:
    """Continuations of ``prompt`` with and without ``interventions`` (free mode)."""
    max_new_tokens = as_int("max_new_tokens", max_new_tokens, minimum=0)
    temperature = as_float("temperature", temperature, 0.0)
    seed = as_int("seed", seed, 0, 2**63 - 1)
    tokens = model.tokenize(prompt)
    ops = parse_interventions(model, {} if interventions is None else interventions, len(tokens))
    if not every_position:  # "every position" clamps stop at the prompt's end
        ops = [o for o in ops if o.position is not None] + [
            Op(o.kind, o.layer, p, o.feature, o.how)
            for o in ops
            if o.position is None
            for p in range(len(tokens))
        ]
    return {
        name: _continue(model, tokens, use, max_new_tokens, temperature, seed, stop)
        for name, use in (("before", []), ("after", ops))
    }


def _continue(model, tokens, ops, max_new_tokens, temperature, seed, stop) -> str:
    gen = torch.Generator().manual_seed(seed)
    ids = tokens.clone()
    for _ in range(max_new_tokens):
        if model.max_length is not None and len(ids) >= model.max_length:
            break
        logits = free_logits(model, ids, ops)[-1] if ops else model.logits(ids)
        if temperature > 0:
            nxt = torch.multinomial(
                torch.softmax(logits.double() / temperature, -1), 1, generator=gen
            )
        else:
            nxt = logits.argmax()[None]
        ids = torch.cat([ids, nxt.to(ids.device)])
        if stop is not None and model.tokenizer.decode([int(nxt)]) == stop:
            break
    return model.tokenizer.decode(ids[len(tokens) :].tolist())
