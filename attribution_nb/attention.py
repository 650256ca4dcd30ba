"""QK attributions: why a head attends where it does.

A graph freezes attention patterns, so its edges say *that* information moved between
positions, not *why* a head looked there.  The pre-softmax score of head ``h`` of layer ``ℓ``
at (query ``q``, key ``k``) is ``s = scale · Q·K``, where ``Q`` is the head's query at ``q``
(the residual stream before the attention, through its norm with the scale frozen, the query
projection, the q-norm with its scale frozen if the family has one, and the rotary embedding)
and ``K`` its key at ``k``.  In the frozen replacement model both are affine in the sources —
features, error nodes and token embeddings — so ``Q = Σ_a u_a + u_0`` and ``K = Σ_b v_b + v_0``
(``u_0``, ``v_0``: the constant terms, biases carried through the frozen model), and

    s = Σ_a Σ_b scale · u_a·v_b      (a, b over the sources and the constant ``bias``).

:func:`attribute_attention` returns that sum as a table of (query-side node, key-side node,
contribution); its rows sum to the score exactly.  Each source's ``u_a`` comes from ``d_head``
gradient rows of the linear trace (the same machinery as the graph's edges), read at the
residual stream before layer ``ℓ``'s attention.  :func:`attention_scores` gives the whole
``[T, T]`` score matrix of a head through the same maps (its softmax is the head's pattern).

Gemma-2 soft-caps the scores (``c·tanh(s/c)``): the table explains ``s`` before the cap.
For a model whose weights live on a server the maps and :func:`edge_heads`' gradient work
run there (one request each), and the tables are made here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from .architectures import get_module, norm_eps
from .attribution import graph_capture
from .attribution.rows import ActiveFeatures, RowEngine, RowRunner
from .attribution.store import RowStore
from .backend import model_device, to_device
from .checks import as_int
from .ids import NodeId
from .tracing import attention_implementation, linear_trace, writes_dot


@dataclass
class HeadMaps:
    """The affine maps from the residual stream before layer ``layer``'s attention to one head's
    query and key at each position: ``Q[p] = Mq[p] @ r[p] + mq[p]`` (float64), the scale, and
    the clean residual ``r``."""

    layer: int
    head: int
    Mq: torch.Tensor  # [T, d_head, d]
    mq: torch.Tensor  # [T, d_head]
    Mk: torch.Tensor
    mk: torch.Tensor
    scale: float
    resid: torch.Tensor  # [T, d]

    def query(self, p: int, r: torch.Tensor | None = None) -> torch.Tensor:
        return self.Mq[p] @ (self.resid[p] if r is None else r) + self.mq[p]

    def key(self, p: int, r: torch.Tensor | None = None) -> torch.Tensor:
        return self.Mk[p] @ (self.resid[p] if r is None else r) + self.mk[p]


def _attention_module(model, layer: int):
    arch = model.architecture
    hf_layer = get_module(model.hf_model, arch.layers)[layer]
    return hf_layer, get_module(hf_layer, arch.queries_keys[0].rsplit(".", 1)[0])


def _attention_inputs(model, tokens: torch.Tensor, layer: int) -> torch.Tensor:
    """The clean residual stream before layer ``layer``'s attention, [T, d]."""
    arch = model.architecture
    with torch.no_grad(), model.trace(tokens[None]):
        layers = get_module(model.nn, arch.layers)
        saved = get_module(layers[layer], arch.norms[0]).input.save()
    return saved[0].detach().to("cpu", torch.float64)


def _norm_map(module, kind: str, r: torch.Tensor, plus_one: bool):
    """``x = N r + n`` for a norm with its scale frozen at the clean ``r`` [T, d]: N [T, d, d], n [T, d]."""
    T, d = r.shape
    eps = norm_eps(module)
    w = module.weight.detach().to("cpu", torch.float64)
    w = 1 + w if plus_one else w
    if kind == "layernorm":
        centre = torch.eye(d, dtype=torch.float64) - 1.0 / d
        scale = torch.rsqrt((r - r.mean(-1, keepdim=True)).pow(2).mean(-1) + eps)
        N = scale[:, None, None] * (w[:, None] * centre)[None]
        bias = (
            module.bias.detach().to("cpu", torch.float64)
            if module.bias is not None
            else torch.zeros(d)
        )
        return N, bias.expand(T, d).double()
    scale = torch.rsqrt(r.pow(2).mean(-1) + eps)
    return scale[:, None, None] * torch.diag(w)[None], torch.zeros(T, d, dtype=torch.float64)


def _projection(model, attn, which: int, head: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One head's query (``which=0``) or key (1) projection: W [d_head, d], b [d_head], float64."""
    arch, facts = model.architecture, model.attention
    part = "qk"[which]
    rows = facts.span(part, head if which == 0 else facts.kv_head(head))
    if facts.fused_qkv:  # GPT-2's Conv1D: x @ W + b, [queries | keys | values]
        layers = get_module(model.hf_model, arch.layers)
        mod = get_module(layers[attn.layer_idx], arch.queries_keys[0])
        return mod.weight.detach().double()[:, rows].T.cpu(), mod.bias.detach().double()[rows].cpu()
    mod = get_module(attn, arch.queries_keys[which].rsplit(".", 1)[1])
    W = mod.weight.detach().double()[rows]
    b = mod.bias.detach().double()[rows] if mod.bias is not None else torch.zeros(facts.head_dim)
    return W.cpu(), b.double().cpu()


def _rotary(model, attn, layer: int, T: int, hd: int):
    """cos, sin [T, d_head] of the rotary embedding at layer ``layer`` (None: no rotary)."""
    inner = getattr(model.hf_model, "model", None)
    rot = getattr(inner, "rotary_emb", None)
    if rot is None:
        return None
    device = next(iter(rot.buffers()), torch.zeros(0)).device  # (a server's GPU, say)
    x = torch.zeros(1, T, hd, dtype=torch.float32, device=device)
    positions = torch.arange(T, device=device)[None]
    types = getattr(model.hf_model.config, "layer_types", None)
    try:
        cos, sin = rot(x, positions, types[layer]) if types is not None else rot(x, positions)
    except TypeError:
        cos, sin = rot(x, positions)
    cos, sin = cos[0].double().cpu(), sin[0].double().cpu()
    if cos.shape[-1] != hd:
        raise ValueError(
            f"partial rotary embeddings ({cos.shape[-1]} of {hd} dimensions) are not supported"
        )
    return cos, sin


def _rotate(cos, sin, hd: int) -> torch.Tensor:
    """The rotary embedding at each position as a matrix [T, d_head, d_head] (``rotate_half``)."""
    half = hd // 2
    P = torch.zeros(hd, hd, dtype=torch.float64)
    P[:half, half:] = -torch.eye(half)
    P[half:, :half] = torch.eye(half)
    return torch.diag_embed(cos) + sin[:, :, None] * P[None]


@dataclass(frozen=True)
class _Weights:
    """What the map helpers read of a model: its Hugging Face modules and its architecture
    (here, or on a server inside a request, where ``hf_model`` is the envoy's module)."""

    hf_model: Any
    architecture: Any
    attention: Any = None  # its AttentionFacts, read from the modules where not given

    def __post_init__(self):
        if self.attention is None:
            object.__setattr__(self, "attention", self.architecture.attention(self.hf_model))


def head_maps(model, tokens: torch.Tensor, layer: int, head: int) -> HeadMaps:
    """The query and key maps of one head at every position (see :class:`HeadMaps`).  For a
    model whose weights live on a server, the maps are computed there (one request)."""
    resid = _attention_inputs(model, tokens, layer)
    parts = model.backend.run(
        model.nn, _maps_on_server, model.nn, model.architecture, resid, layer, head
    )
    Mq, mq, Mk, mk, scale = parts
    return HeadMaps(layer, head, Mq, mq, Mk, mk, scale, resid)


def _maps_on_server(envoy, arch, resid: torch.Tensor, layer: int, head: int) -> tuple:
    return _maps(_Weights(envoy._module, arch), resid, layer, head)


def _maps(model: _Weights, resid: torch.Tensor, layer: int, head: int) -> tuple:
    """``(Mq, mq, Mk, mk, scale)`` of :class:`HeadMaps` (float64, on the CPU)."""
    arch = model.architecture
    hf_layer, attn = _attention_module(model, layer)
    T = len(resid)
    plus_one = arch.norm_kind == "rms_plus_one"
    N, n = _norm_map(get_module(hf_layer, arch.norms[0]), arch.norm_kind, resid, plus_one)
    x = torch.einsum("tij,tj->ti", N, resid) + n
    maps = []
    facts = model.attention
    for which, norm_name in ((0, "q_norm"), (1, "k_norm")):
        W, b = _projection(model, attn, which, head)
        hd = W.shape[0]
        M = torch.einsum("hd,tde->the", W, N)  # [T, hd, d]
        m = n @ W.T + b
        if facts.qk_norms[which]:  # q/k norm, scale frozen at the clean run
            qk_norm = getattr(attn, norm_name)
            raw = x @ W.T + b
            Nq, _ = _norm_map(qk_norm, "rms", raw, plus_one)
            M, m = torch.einsum("tij,tje->tie", Nq, M), torch.einsum("tij,tj->ti", Nq, m)
        rot = _rotary(model, attn, layer, T, hd)
        if rot is not None:
            R = _rotate(rot[0], rot[1], hd)
            M, m = torch.einsum("tij,tje->tie", R, M), torch.einsum("tij,tj->ti", R, m)
        maps += [M.cpu(), m.cpu()]
    return (*maps, facts.scales[layer])


def _check_head(model, layer, head, T: int, query_pos=None, key_pos=None) -> tuple:
    L, n_heads = model.n_layers, model.attention.n_heads
    layer = as_int("layer", layer, minimum=0)
    head = as_int("head", head, minimum=0)
    if layer >= L:
        raise ValueError(f"layer must be in [0, {L}), got {layer}")
    if head >= n_heads:
        raise ValueError(f"head must be in [0, {n_heads}), got {head}")
    out = [layer, head]
    for name, p in (("query_pos", query_pos), ("key_pos", key_pos)):
        if p is None:
            continue
        p = as_int(name, p)
        if not -T <= p < T:
            raise ValueError(f"{name} must be in [-{T}, {T}) for this {T}-token prompt, got {p}")
        out.append(p % T)
    if len(out) == 4 and out[3] > out[2]:
        raise ValueError(
            f"key_pos {out[3]} is after query_pos {out[2]}: a causal head never attends forward"
        )
    return tuple(out)


def attention_scores(model, prompt, layer: int, head: int) -> torch.Tensor:
    """Pre-softmax scores [T, T] of one head (query rows, key columns; NaN above the diagonal),
    computed through the same maps as :func:`attribute_attention`.  (Before Gemma-2's soft-cap;
    a sliding-window layer masks far keys too, which this does not.)"""
    tokens = model.tokenize(prompt)
    layer, head = _check_head(model, layer, head, len(tokens))
    maps = head_maps(model, tokens, layer, head)
    T = len(tokens)
    Q = torch.stack([maps.query(p) for p in range(T)])
    K = torch.stack([maps.key(p) for p in range(T)])
    scores = maps.scale * Q @ K.T
    return scores.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("nan"))


def attention_heads(model, prompt, query_pos: int = -1, key_pos: int = 0) -> pd.DataFrame:
    """Every head's attention from ``query_pos`` to ``key_pos`` (its pattern weight and pre-softmax
    score), strongest first: where to look before :func:`attribute_attention`.  A graph edge
    from a source at ``key_pos`` to a node at ``query_pos`` can only travel through heads that
    attend there (at layers between the two)."""
    tokens = model.tokenize(prompt)
    T = len(tokens)
    _, _, q, k = _check_head(model, 0, 0, T, query_pos, key_pos)
    rows = []
    for layer in range(model.n_layers):
        for head in range(model.attention.n_heads):
            scores = attention_scores(model, tokens, layer, head)[q]
            cap = model.attention.softcap
            capped = torch.tanh(scores / cap) * cap if cap else scores
            weight = torch.softmax(capped[: q + 1], -1)[k]
            rows.append((layer, head, float(weight), float(scores[k])))
    table = pd.DataFrame(rows, columns=["layer", "head", "weight", "score"])
    return table.sort_values("weight", ascending=False, kind="stable").reset_index(drop=True)


def attribute_attention(
    model,
    prompt,
    layer: int,
    head: int,
    query_pos: int = -1,
    key_pos: int = 0,
    *,
    batch_size: int = 32,
    bos_features: bool = False,
) -> pd.DataFrame:
    """The pre-softmax score of head ``head`` of layer ``layer`` at (``query_pos``, ``key_pos``)
    as a sum over (query-side node, key-side node) pairs; see the module docstring.

    Returns a DataFrame sorted by |contribution|: ``query_node``, ``key_node`` (node ids as in a
    graph, or ``"bias"`` for a side's constant term), ``contribution``, and the sides' ``query_kind``,
    ``key_kind``; ``table.attrs`` holds the ``score`` (the rows' sum), the query and key vectors'
    norms and the arguments.  Sources are those of :func:`attribute`'s graph: the BOS position's
    features folded into its error nodes unless ``bos_features``.
    """
    tokens = model.tokenize(prompt)
    T = len(tokens)
    layer, head, q, k = _check_head(model, layer, head, T, query_pos, key_pos)
    batch_size = as_int("batch_size", batch_size, minimum=1)
    maps = head_maps(model, tokens, layer, head)
    U, u0, V, v0, ids, kinds = _source_sides(model, tokens, maps, q, k, batch_size, bos_features)
    a = np.flatnonzero(np.abs(U).sum(1) > 0)
    b = np.flatnonzero(np.abs(V).sum(1) > 0)
    left = np.vstack([U[a], u0[None]])
    right = np.vstack([V[b], v0[None]])
    C = maps.scale * left @ right.T
    q_ids, k_ids = np.append(ids[a], "bias"), np.append(ids[b], "bias")
    q_kinds, k_kinds = np.append(kinds[a], "bias"), np.append(kinds[b], "bias")
    i, j = np.meshgrid(np.arange(len(left)), np.arange(len(right)), indexing="ij")
    table = pd.DataFrame(
        {
            "query_node": q_ids[i.ravel()],
            "key_node": k_ids[j.ravel()],
            "contribution": C.ravel(),
            "query_kind": q_kinds[i.ravel()],
            "key_kind": k_kinds[j.ravel()],
        }
    )
    table = table.reindex(
        table.contribution.abs().sort_values(ascending=False, kind="stable").index
    )
    table = table.reset_index(drop=True)
    Q, K = maps.query(q).numpy(), maps.key(k).numpy()
    table.attrs.update(
        score=float(maps.scale * Q @ K),
        layer=layer,
        head=head,
        query_pos=q,
        key_pos=k,
        query_norm=float(np.linalg.norm(Q)),
        key_norm=float(np.linalg.norm(K)),
        scale=maps.scale,
    )
    return table


def _source_sides(
    model, tokens, maps: HeadMaps, q: int, k: int, batch_size: int, bos_features: bool
):
    """Each source's contribution to the query at ``q`` and to the key at ``k`` ([n_sources, d_head]
    each, from gradient rows of the linear trace), the constant terms, and the sources' ids."""
    cap, _ = graph_capture(model, tokens, bos_features)
    active = ActiveFeatures.of(cap.activations)
    hd = maps.Mq.shape[1]
    engine = RowEngine(
        model, cap, active, min(batch_size, 2 * hd), read_attention=True, buckets=[len(tokens)]
    )
    store = RowStore()
    runner = RowRunner(model.backend, engine, store)
    model.backend.prepare(engine)
    keys = [("q", j) for j in range(hd)] + [("k", j) for j in range(hd)]
    vectors = torch.cat([maps.Mq[q], maps.Mk[k]]).float()
    runner(keys, torch.full((2 * hd,), maps.layer), torch.tensor([q] * hd + [k] * hd), vectors)
    rows = store.csr(keys, engine.n_sources, dtype=np.float64).toarray()
    U, V = rows[:hd].T, rows[hd:].T
    u0 = maps.query(q).numpy() - U.sum(0)
    v0 = maps.key(k).numpy() - V.sum(0)
    return U, u0, V, v0, engine.layout.ids(active, tokens), engine.layout.kinds()


def _patterns(hf_model, tokens: torch.Tensor) -> list[torch.Tensor]:
    """The clean attention patterns [heads, T, T] of every layer (Hugging Face's eager attention),
    float64 on the model's device."""
    with torch.no_grad(), attention_implementation(hf_model.config, "eager"):
        device = next(hf_model.parameters()).device
        out = hf_model(tokens[None].to(device), output_attentions=True)
    return [a[0].detach().double() for a in out.attentions]


def _values(model, layer: int, kv_head: int) -> torch.Tensor:
    """One key-value head's value projection W_V [d_head, d] (float64, on the weights' device)."""
    arch, facts = model.architecture, model.attention
    mod = get_module(get_module(model.hf_model, arch.layers)[layer], arch.values)
    rows = facts.span("v", kv_head)
    weight = mod.weight.detach().double()
    return weight[:, rows].T if facts.fused_qkv else weight[rows]


def _source_writes(model, cap, node) -> list[tuple[int, int, torch.Tensor]]:
    """What a source node writes to the linear trace's leaves: ``(leaf, position, vector)``
    (leaf 0: the token embeddings; ``1 + ℓ``: layer ``ℓ``'s MLP write), float64."""
    if node.kind == "token":
        return [(0, node.position, cap.embed[node.position].double())]
    if node.kind == "error":
        return [(1 + node.layer, node.position, cap.errors[node.layer, node.position].double())]
    act = cap.activations[node.layer][node.position, node.feature].double()
    return [
        (1 + node.layer + j, node.position, act * w.detach().double())
        for j, w in enumerate(model.transcoders[node.layer].direction_writes(node.feature))
    ]


def _check_edge_ends(model, tokens, s, t, source: str, target: str) -> None:
    """The ids name nodes this prompt and model can have: a token node's token id is the prompt's,
    a logit sits at the last position, features exist, and the source's layer is below the target's."""
    T, L = len(tokens), model.n_layers
    if s.kind == "token" and int(tokens[s.position]) != s.token_id:
        raise ValueError(
            f"{source}: position {s.position} of this prompt holds token id {int(tokens[s.position])}, "
            f"not {s.token_id}"
        )
    if t.kind == "logit" and t.position != T - 1:
        raise ValueError(
            f"{target}: a logit node sits at the last position ({T - 1}) of this {T}-token prompt"
        )
    for node, text in ((s, source), (t, target)):
        if node.kind in ("feature", "error") and not 0 <= node.layer < L:
            raise ValueError(f"{text}: layer {node.layer} is outside the model's layers 0..{L - 1}")
        if (
            node.kind == "feature"
            and not 0 <= node.feature < model.transcoders[node.layer].d_features
        ):
            raise ValueError(
                f"{text}: layer {node.layer} has {model.transcoders[node.layer].d_features} features"
            )
    if t.kind == "feature" and s.kind in ("feature", "error") and s.layer >= t.layer:
        raise ValueError(
            f"{source} → {target}: the source's layer {s.layer} is not below the target's ({t.layer}), "
            f"so there is no such edge"
        )


def edge_heads(
    model, prompt, source: str, target: str, *, bos_features: bool = False
) -> pd.DataFrame:
    """Which attention heads carry the edge ``source → target`` (node ids of a graph of
    ``prompt``; the source at an earlier position than the target), and how much.

    In the frozen replacement model every path from the source's position to the target's
    ends with one last attention hop into the target's position; grouping the paths by that hop's
    head splits the edge exactly: ``loading(ℓ, h) = g · Σ_{p < q} A_h[q, p] · W_V,h · Δx_ℓ[p]``,
    where ``Δx_ℓ`` is what the source adds to the attention's input at layer ``ℓ`` (through every
    earlier path), ``A_h`` the frozen pattern and ``g`` the gradient of the target at head ``h``'s
    output at ``q``.  The loadings sum to the edge (``table.attrs["edge"]``) of the graph
    :func:`attribute` makes with the same ``bos_features``.  Targets: features and token logits.
    For a model whose weights live on a server, the gradient work runs there (one request)."""
    tokens = model.tokenize(prompt)
    s, t, q = _edge_ends(model, tokens, source, target)
    cap, _ = graph_capture(model, tokens, bos_features)
    if (
        t.kind == "logit"
    ):  # (a target reads after the top layer, or after its own layer's attention)
        read_layer, vector = None, model.demeaned_unembedding([t.token_id])[0]
    else:
        read_layer = int(t.layer or 0)
        vector = model.transcoders[read_layer].W_enc[:, int(t.feature or 0)].detach()
    loadings, weights = model.backend.run(
        model.nn,
        _loadings,
        model.nn,
        model.architecture,
        model.transcoders.skip_weights(),
        cap.trace_inputs(),
        read_layer,
        vector.cpu(),
        q,
        s.position,
        _source_writes(model, cap, s),
    )
    n_heads = weights.shape[1]
    rows = [
        (layer, head, float(loadings[layer * n_heads + head]), float(weights[layer, head]))
        for layer in range(weights.shape[0])
        for head in range(n_heads)
    ]
    table = pd.DataFrame(rows, columns=["layer", "head", "loading", "weight_to_source"])
    table = table.reindex(
        table.loading.abs().sort_values(ascending=False, kind="stable").index
    ).reset_index(drop=True)
    table.attrs.update(source=source, target=target, edge=float(table.loading.sum()))
    return table


def _edge_ends(model, tokens, source: str, target: str):
    """The parsed ends of an edge that attention can carry, and the target's position; refuses
    by name an edge that cannot cross positions forward in this prompt."""
    T = len(tokens)
    _check_head(model, 0, 0, T)
    s, t = NodeId.parse(source), NodeId.parse(target)
    if s.kind == "logit" or t.kind in ("token", "error"):
        raise ValueError(
            f"an edge runs from a feature, error or token node to a feature or logit node; "
            f"got {source} → {target}"
        )
    if t.kind == "logit" and t.token_id is None:
        raise ValueError(
            f"{target} is a custom target; head loadings are for features and token logits"
        )
    q = T - 1 if t.kind == "logit" else t.position
    if s.position is None or q is None or s.position >= q or q >= T:
        raise ValueError(
            f"{source} → {target} does not cross positions forward in this {T}-token prompt "
            f"(only edges from an earlier position travel through attention)"
        )
    _check_edge_ends(model, tokens, s, t, source, target)
    return s, t, q


def _loadings(
    envoy, arch, skips, inputs, read_layer, vector, q: int, p_source: int, writes, batch: int = 32
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`edge_heads`' numbers, computed where the model is (here, or on a server inside one
    request: only the envoy, the architecture and plain tensors come in): the loadings of every
    head below the target, flattened [top · n_heads], and their patterns' weight from ``q`` to
    the source's position [top, n_heads]."""
    weights = _Weights(envoy._module, arch)
    device = model_device(envoy)
    skips, writes, vector, inputs = (
        to_device(skips, device),
        to_device(writes, device),
        vector.to(device),
        inputs.to(device),
    )
    top = len(skips) if read_layer is None else read_layer + 1
    clean = linear_trace(envoy, arch, skips, inputs, 1)
    read = clean.unembed_in if read_layer is None else clean.mlp_in[read_layer]
    loss = (read[0, q] * vector.to(read.dtype)).sum()
    grads = torch.autograd.grad(loss, clean.heads[:top], allow_unused=True)
    patterns = _patterns(weights.hf_model, inputs.tokens)
    facts = weights.attention
    n_heads = facts.n_heads
    reads = []  # per head: what its value projection and the target's gradient read at each position
    for layer in range(top):
        for head in range(n_heads):
            W_V = _values(weights, layer, facts.kv_head(head))
            hd = W_V.shape[0]
            g = grads[layer]
            g_h = (
                torch.zeros(hd, dtype=torch.float64, device=device)
                if g is None
                else g[0, q, head * hd : (head + 1) * hd].detach().double()
            )
            reads.append((layer, head, W_V.T @ g_h))
    out = []
    for start in range(
        0, len(reads), batch
    ):  # the source's share of Σ_{p<q} A[q, p] · w·x_layer[p]
        chunk = reads[start : start + batch]
        trace = linear_trace(envoy, arch, skips, inputs, len(chunk))
        parts = []
        for b, (layer, head, w) in enumerate(chunk):
            x = trace.attn_x[layer][b, :q]  # [q, d]
            parts.append(patterns[layer][head, q, :q].to(x.dtype) @ (x @ w.to(x.dtype)))
        grads = torch.autograd.grad(sum(parts[1:], parts[0]), trace.leaves, allow_unused=True)
        out.append(writes_dot(grads, writes, len(chunk)).cpu())
    seen = torch.stack([patterns[layer][:, q, p_source] for layer in range(top)]).cpu()
    return torch.cat(out), seen


def attention_edges(model, graph, node_id: str, k: int = 5) -> pd.DataFrame:
    """The ``k`` strongest edges into ``node_id`` from earlier positions (the ones attention
    carries), each with the head that carries most of it (:func:`edge_heads`) and its share."""
    k = as_int("k", k, minimum=1)
    target = graph.node(node_id)
    q = len(graph.tokens) - 1 if target.kind == "logit" else int(target.position)
    incoming, _ = graph.edges_of(node_id)
    pos = graph.nodes.set_index("node_id").position
    incoming = incoming[pos[incoming.source].to_numpy() < q]
    incoming = incoming.reindex(incoming.weight.abs().sort_values(ascending=False).index).head(k)
    rows = []
    for source, weight in zip(incoming.source, incoming.weight):
        loads = edge_heads(
            model,
            graph.prompt,
            source,
            node_id,
            bos_features=not graph.info.get("bos_features_left_out", 0),
        )
        best = loads.iloc[0]
        rows.append(
            (
                source,
                float(weight),
                int(best["layer"]),
                int(best["head"]),
                float(best["loading"]),
                float(best["loading"]) / float(weight) if weight else float("nan"),
            )
        )
    return pd.DataFrame(rows, columns=["source", "weight", "layer", "head", "loading", "share"])
