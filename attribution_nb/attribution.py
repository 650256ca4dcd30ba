"""Attribution: exact direct effects in the local replacement model, batched on nnsight.

The algorithm, for one prompt:

1. **Capture.** One clean forward pass records every MLP's input and output. Each
   transcoder encodes its MLP input; ``error = true output − reconstruction`` is held
   fixed, so the replacement model reproduces the model's logits exactly.
2. **Linearise.** A second trace runs ``batch_size`` copies of the prompt with attention
   patterns and norm scales frozen, token embeddings replaced by a leaf tensor and each
   MLP output replaced by a constant leaf (decoder outputs + b_dec + error) plus the
   transcoder's skip term.  The residual stream is now linear in its sources.
3. **Logit rows.** For each target logit, the gradient of its demeaned logit
   (unembedding row minus the mean row, read at the unembedding input) at each leaf,
   dotted with what each source writes there, is that source's direct effect.  Copy ``b``
   of the batch carries target ``b``, so one backward pass gives ``batch_size`` rows.
4. **Feature rows.** The same, for each feature's pre-activation (its encoder vector
   read at its layer's MLP input).  With ``max_feature_nodes``, features are visited in
   order of their influence on the logits estimated from the rows so far, and the graph
   keeps the visited ones.
5. **Graph.** Rows for features and logits, columns for features, error nodes and token
   nodes; tokens and errors have no incoming edges.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from tqdm.auto import tqdm

from .graph import AttributionGraph, normalize_rows
from .model import ReplacementModel, linear_trace


def _logit_targets(model: ReplacementModel, logits: torch.Tensor, targets, max_n_logits: int,
                   desired_logit_prob: float) -> list[int]:
    if targets is not None:
        if isinstance(targets, (str, int)):
            targets = [targets]
        ids = []
        vocab = logits.shape[-1]
        for t in targets:
            tid = model.token_id(t) if isinstance(t, str) else int(t)
            if not 0 <= tid < vocab:
                raise ValueError(f"target token id {tid} is outside the vocabulary [0, {vocab})")
            ids.append(tid)
        if not ids:
            raise ValueError("targets is empty; give at least one token, or None for the top logits")
        return list(dict.fromkeys(ids))
    if max_n_logits < 1:
        raise ValueError(f"max_n_logits must be at least 1, got {max_n_logits}")
    probs = torch.softmax(logits.double(), -1)
    top = probs.topk(min(max_n_logits, len(probs)))
    n = int((top.values.cumsum(0) < desired_logit_prob).sum()) + 1
    return top.indices[: min(n, max_n_logits)].tolist()


#: prompts at least this long run feature rows on prefix traces (eight prefix lengths)
PREFIX_MIN_TOKENS = 64


class _Rows:
    """Computes rows of the adjacency (direct effects on a batch of targets) by backward passes.

    Sources are numbered in "active order": features sorted by (layer, position, index),
    then error nodes (layer-major), then token nodes.  A target at layer ``l`` and position
    ``p`` can only see sources below ``l`` at positions ``≤ p``: only those are computed
    and stored, one small matmul per (layer, position) block of features.
    """

    def __init__(self, model: ReplacementModel, cap, feat_layer, feat_pos, feat_idx, feat_act, batch: int):
        L, T, d = cap.mlp_in.shape
        self.L, self.T = L, T
        self.batch = batch
        # what the linear trace needs, and nothing more (a remote request carries this object)
        self.envoy, self.adapter, self.skips = model.nn, model.adapter, model.skip_weights()
        self.cap = cap.for_linear_trace()
        self.trace, self.length = None, None     # traced on first use (on the server, for a remote model)
        # prefix lengths a batch may run on: a target at position p only needs positions ≤ p
        self.buckets = sorted({math.ceil(T * k / 8) for k in range(1, 9)}) if T >= PREFIX_MIN_TOKENS else [T]
        self.layer_slices, self.decoder_out, self.pos_bounds, self.decoder_later = [], [], [], []
        start = 0
        for l, tc in enumerate(model.transcoders):
            n_l = int((feat_layer == l).sum())
            sl = slice(start, start + n_l)
            self.layer_slices.append(sl)
            # float32 products whatever the model's dtype (half precision loses too much in the sums)
            act = feat_act[sl].to(tc.W_dec.device)
            self.decoder_out.append((tc.W_dec[feat_idx[sl]].float() * act[:, None]).detach())
            # cross-layer transcoders: what each feature writes to each later layer, [n_l, n_later, d]
            self.decoder_later.append(None if not tc.n_later else
                                      (tc.W_dec_later[feat_idx[sl]].float() * act[:, None, None]).detach())
            # features of layer l at position p are columns pos_bounds[l][p]:pos_bounds[l][p + 1]
            self.pos_bounds.append((start + torch.searchsorted(feat_pos[sl], torch.arange(T + 1))).tolist())
            start += n_l
        self.n_features = start
        self.n_sources = start + L * T + T
        self.src_layer = torch.cat([feat_layer, torch.arange(L).repeat_interleave(T), torch.full((T,), -1)])
        self.src_pos = torch.cat([feat_pos, torch.arange(T).repeat(L), torch.arange(T)])

    def _move_to_model(self) -> None:
        """Put the products' operands where the model is (a remote server's GPU, say)."""
        device = next(self.envoy._module.parameters()).device
        if self.cap.embed.device == device:
            return
        to = lambda x: None if x is None else x.to(device)
        self.cap = self.cap.for_linear_trace(device)
        self.skips = [to(w) for w in self.skips]
        self.decoder_out = [to(x) for x in self.decoder_out]
        self.decoder_later = [to(x) for x in self.decoder_later]

    def retrace(self, length: int) -> None:
        """The frozen model on the prompt's first ``length`` tokens, ``batch`` copies."""
        self.trace = linear_trace(self.envoy, self.adapter, self.skips, self.cap, self.batch, length)
        self.length = length

    def run(self, batches, logits: bool = False) -> tuple[list, torch.Tensor | None]:
        """Every batch's rows (see ``__call__``) and, with ``logits``, the replacement model's
        last-position logits (from the full-length trace).  A remote model runs this inside one
        nnsight session on the server, so only the sparse rows travel back."""
        self._move_to_model()
        pieces = [self(layers, positions, vectors) for layers, positions, vectors in batches]
        if not logits:
            return pieces, None
        if self.length != self.T:
            self.retrace(self.T)
        return pieces, self.trace.logits[0, -1].detach().cpu()

    @torch.no_grad()
    def _edges_from_grads(self, grads, layers, positions) -> torch.Tensor:
        n = len(layers)
        g_embed, g_writes = grads[0], grads[1:]
        out = torch.zeros(n, self.n_sources, dtype=torch.float32)      # on the CPU
        top_layer, top_pos = int(layers.max()), int(positions.max())
        errors = self.cap.errors
        for l in range(min(top_layer, self.L)):
            g = g_writes[l]
            if g is None:
                continue
            g = g[:n, : top_pos + 1].float()
            bounds, dec, off = self.pos_bounds[l], self.decoder_out[l], self.layer_slices[l].start
            later = self.decoder_later[l]
            # later layers this layer's features write to that a target in the batch can see
            later_layers = [] if later is None else [
                (j, g_writes[l + 1 + j][:n, : top_pos + 1].float()) for j in range(later.shape[1])
                if l + 1 + j < top_layer and g_writes[l + 1 + j] is not None]
            for p in range(top_pos + 1):
                a, b = bounds[p], bounds[p + 1]
                if a < b:
                    block = g[:, p] @ dec[a - off:b - off].T
                    for j, g_later in later_layers:
                        block = block + g_later[:, p] @ later[a - off:b - off, j].T
                    out[:, a:b] = block.float()
            base = self.n_features + l * self.T
            out[:, base:base + top_pos + 1] = torch.einsum("ntd,td->nt", g, errors[l, : top_pos + 1].float())
        if g_embed is not None:
            base = self.n_features + self.L * self.T
            out[:, base:base + top_pos + 1] = torch.einsum("ntd,td->nt", g_embed[:n, : top_pos + 1].float(),
                                                           self.cap.embed[: top_pos + 1].float())
        return out

    def __call__(self, layers: torch.Tensor, positions: torch.Tensor, vectors: torch.Tensor):
        """Sparse rows for ≤ batch targets: target b reads ``vectors[b]`` at ``positions[b]``
        of layer ``layers[b]``'s MLP input (``layers[b] == L`` means the unembedding input).

        Returns ``(counts, columns, values)``: entries per row, then the rows' source
        columns (ascending, int32) and direct effects (float32), row after row."""
        n = len(layers)
        need = int(positions.max()) + 1
        length = next(b for b in self.buckets if b >= need)
        if length != self.length:               # a shorter (or the full) prefix: cheaper backward passes
            self.retrace(length)
        batch_idx = torch.arange(n)
        loss = 0.0
        for layer in layers.unique().tolist():
            sel = layers == layer
            x = self.trace.unembed_in if layer == self.L else self.trace.mlp_in[layer]
            loss = loss + (x[batch_idx[sel], positions[sel]] * vectors[sel].to(x.device, x.dtype)).sum()
        grads = torch.autograd.grad(loss, self.trace.leaves, retain_graph=True, allow_unused=True)
        out = self._edges_from_grads(grads, layers, positions)
        mask = (self.src_layer[None] < layers[:, None]) & (self.src_pos[None] <= positions[:, None]) & (out != 0)
        cols = mask.nonzero()[:, 1].to(torch.int32).numpy()
        return mask.sum(1).numpy(), cols, out[mask].numpy()


class _RowStore:
    """Sparse rows as they arrive (in any order), assembled into CSR at the end."""

    def __init__(self):
        self.pieces = []          # (counts, cols, vals)
        self.where = {}           # row key -> (piece, start, stop)

    def add(self, keys, piece) -> None:
        counts, cols, vals = piece
        ends = np.cumsum(counts)
        k = len(self.pieces)
        self.pieces.append(piece)
        for key, stop, c in zip(keys, ends.tolist(), counts.tolist()):
            self.where[key] = (k, stop - c, stop)

    def csr(self, row_keys, n_cols: int, col_map: np.ndarray | None = None, dtype=np.float32) -> sp.csr_array:
        """Rows ``row_keys`` (None = an empty row) over ``n_cols`` columns; ``col_map`` renumbers
        columns (−1 drops one) and must keep their order."""
        counts = np.zeros(len(row_keys), dtype=np.int64)
        spans = []                      # (piece, start, stop), consecutive rows merged
        for i, key in enumerate(row_keys):
            if key is None:
                continue
            k, a, b = self.where[key]
            counts[i] = b - a
            if spans and spans[-1][0] == k and spans[-1][2] == a:
                spans[-1][2] = b
            else:
                spans.append([k, a, b])
        cols = [self.pieces[k][1][a:b] for k, a, b in spans]
        vals = [self.pieces[k][2][a:b] for k, a, b in spans]
        indices = np.concatenate(cols) if cols else np.zeros(0, dtype=np.int32)
        data = np.concatenate(vals).astype(dtype, copy=False) if vals else np.zeros(0, dtype=dtype)
        if col_map is not None:
            indices = col_map[indices]
            keep = indices >= 0
            if not keep.all():
                ends = np.cumsum(counts)
                kept_before_end = np.concatenate([[0], np.cumsum(keep)])[ends]
                counts = np.diff(np.concatenate([[0], kept_before_end]))
                indices, data = indices[keep], data[keep]
        indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32 if len(indices) < 2**31 else np.int64)
        return sp.csr_array((data, indices, indptr), shape=(len(row_keys), n_cols))


def attribute(model: ReplacementModel, prompt, *, targets=None, max_n_logits: int = 10,
              desired_logit_prob: float = 0.95, batch_size: int = 32, max_feature_nodes: int | None = 8192,
              progress: bool | None = None) -> AttributionGraph:
    """Build the attribution graph of ``prompt`` (see the module docstring for the algorithm).

    Args:
        model: a :class:`ReplacementModel`.
        prompt: a string (tokenized with the model's tokenizer, BOS included) or token ids.
        targets: logit targets as token strings or ids; default: the top logits until their
            cumulative probability reaches ``desired_logit_prob``, at most ``max_n_logits``.
        batch_size: targets per backward pass (and copies of the prompt in the linear trace).
        max_feature_nodes: keep at most this many features, the most influential ones.
        progress: show a progress bar (default: when there are more than 8 backward passes).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if max_feature_nodes is not None and max_feature_nodes < 0:
        raise ValueError(f"max_feature_nodes must be non-negative or None, got {max_feature_nodes}")
    t0 = time.perf_counter()
    timings = {}
    tokens = model.tokenize(prompt)
    cap = model.capture(tokens)
    if not torch.isfinite(cap.logits[-1]).all():
        raise ValueError("the model's logits are not finite for this prompt")
    target_ids = _logit_targets(model, cap.logits[-1], targets, max_n_logits, desired_logit_prob)
    L, T, _ = cap.mlp_in.shape

    # active features, ordered by (layer, position, feature)
    found = [(l, *acts.nonzero().T) for l, acts in enumerate(cap.activations)]
    # bookkeeping lives on the CPU whatever the model's device; the products run on the model's
    feat_layer = torch.cat([torch.full_like(p, l) for l, p, _ in found]).cpu()
    feat_pos = torch.cat([p for _, p, _ in found]).cpu()
    feat_idx = torch.cat([f for _, _, f in found]).cpu()
    feat_act = torch.cat([cap.activations[l][p, f] for l, p, f in found]).float().cpu()
    n_active = len(feat_layer)
    n_keep = n_active if max_feature_nodes is None else min(max_feature_nodes, n_active)
    timings["capture"] = time.perf_counter() - t0

    n_rows = len(target_ids) + n_keep
    batch = min(batch_size, n_rows)
    n_passes = math.ceil(len(target_ids) / batch) + math.ceil(n_keep / batch)
    show = progress if progress is not None else n_passes > 8
    bar = tqdm(total=n_rows, desc="attribution rows", disable=not show, leave=False)

    t1 = time.perf_counter()
    rows = _Rows(model, cap, feat_layer, feat_pos, feat_idx, feat_act, batch)
    store = _RowStore()

    def run(keys, layers, positions, vectors, logits: bool = False):
        """Rows for these targets, ``batch`` at a time: here one backward pass after another,
        or, for a remote model, all of them in one request.  With ``logits``, also returns the
        replacement model's last-position logits."""
        jobs = [(keys[s:s + batch], (layers[s:s + batch], positions[s:s + batch], vectors[s:s + batch]))
                for s in range(0, len(keys), batch)]
        if model.remote:
            import nnsight
            todo = [job for _, job in jobs]
            with model.session():
                result = nnsight.save(rows.run(todo, logits))
            pieces, last = result
            rows.trace = rows.length = None     # (nnsight's local simulation runs on this very object)
            bar.update(len(keys))
        else:
            pieces, last = [], None
            for i, (_, job) in enumerate(jobs):
                piece, last = rows.run([job], logits and i == len(jobs) - 1)
                pieces += piece
                bar.update(len(job[0]))
        for (k, _), piece in zip(jobs, pieces):
            store.add(k, piece)
        return last

    if not model.remote:      # (a remote model traces on the server, inside each request)
        rows.retrace(T)
    timings["linear_trace"] = time.perf_counter() - t1

    # logit rows: demeaned unembedding directions at the last position
    t2 = time.perf_counter()
    n_logits = len(target_ids)
    last = run([("logit", i) for i in range(n_logits)], torch.full((n_logits,), L), torch.full((n_logits,), T - 1),
               model.demeaned_unembedding(target_ids), logits=True)
    timings["logit_rows"] = time.perf_counter() - t2
    replacement_diff = float((model.softcap(last.to(cap.logits.device)) - cap.logits[-1]).abs().max())

    # feature rows, most influential first when only some are kept
    t3 = time.perf_counter()
    probs_all = torch.softmax(cap.logits[-1].double(), -1).cpu()
    probs = probs_all[target_ids].numpy()
    visited = np.zeros(0, dtype=np.int64)
    score, refreshed = None, -1
    # all features: by prefix bucket, then layer, then position, so prefix traces only grow;
    # the greedy order jumps between positions, so it keeps the full trace
    if n_keep < n_active:
        rows.buckets = [T]
    bucket_of = np.searchsorted(np.array(rows.buckets), feat_pos.numpy() + 1)
    sweep = np.lexsort((feat_pos.numpy(), feat_layer.numpy(), bucket_of))
    while len(visited) < n_keep:
        if n_keep == n_active:      # in sweep order: a batch at a time here, all in one request remotely
            chosen = sweep[len(visited):] if model.remote else sweep[len(visited):len(visited) + batch]
        else:
            # re-estimate influences while few rows are known, then each time they grow by a
            # quarter; in between the ranking stands, so the rows up to the next refresh are
            # chosen (and, remotely, computed) together
            if len(visited) < 4 * batch or len(visited) >= 1.25 * refreshed:
                score = _feature_influence(store, probs, visited, n_active, rows.n_sources)
                refreshed = len(visited)
            score[visited] = -1.0
            n_round = batch if len(visited) < 4 * batch else \
                batch * math.ceil((1.25 * refreshed - len(visited)) / batch)
            chosen = np.argsort(-score, kind="stable")[:min(n_round, n_keep - len(visited))]
        c = torch.from_numpy(chosen)
        enc = torch.stack([model.transcoders[int(l)].W_enc[:, int(f)] for l, f in zip(feat_layer[c], feat_idx[c])])
        run(chosen.tolist(), feat_layer[c], feat_pos[c], enc)
        visited = np.concatenate([visited, chosen])
    bar.close()
    timings["feature_rows"] = time.perf_counter() - t3

    # assemble: nodes = kept features (in active order) + errors + tokens + logits
    t4 = time.perf_counter()
    order = np.sort(visited)
    n_nodes = n_keep + L * T + T + n_logits
    col_map = np.full(rows.n_sources, -1, dtype=np.int32)
    col_map[order] = np.arange(n_keep)
    col_map[n_active:] = np.arange(n_keep, n_keep + L * T + T)
    row_keys = order.tolist() + [None] * (L * T + T) + [("logit", i) for i in range(n_logits)]
    adjacency = store.csr(row_keys, n_nodes, col_map)
    del store
    order = torch.from_numpy(order)
    timings["assemble"] = time.perf_counter() - t4

    logits_df = pd.DataFrame({"token": model.token_strings(target_ids), "token_id": target_ids,
                              "probability": probs_all[target_ids].numpy(),
                              "logit": cap.logits[-1, target_ids].double().cpu().numpy()})
    nodes = _node_table(model, cap, feat_layer[order], feat_pos[order], feat_idx[order], feat_act[order], logits_df)
    graph = AttributionGraph(
        prompt=prompt if isinstance(prompt, str) else model.tokenizer.decode(tokens.tolist()),
        tokens=model.token_strings(tokens), token_ids=tokens.tolist(), nodes=nodes, adjacency=adjacency,
        logits=logits_df, n_layers=L, model_name=model.name,
        info={"n_active_features": n_active, "max_feature_nodes": max_feature_nodes, "batch_size": batch,
              "timings": timings,
              "replacement_logits_max_abs_diff": replacement_diff})
    graph.nodes["influence"] = graph.influence().numpy()
    timings["total"] = time.perf_counter() - t0
    return graph


def _feature_influence(store: _RowStore, probs: np.ndarray, visited: np.ndarray, n_active: int,
                       n_sources: int) -> np.ndarray:
    """Influence of every active feature on the logits, from the rows computed so far."""
    n_l = len(probs)
    keys = [("logit", i) for i in range(n_l)] + visited.tolist()
    rows = normalize_rows(store.csr(keys, n_sources, dtype=np.float64))[:, :n_active].tocsr()
    row_of = np.full(n_active, -1, dtype=np.int64)
    row_of[visited] = np.arange(len(visited)) + n_l
    known = row_of >= 0
    x = np.zeros(len(keys))
    x[:n_l] = probs
    total = np.zeros(n_active)
    rows_t = rows.T
    for _ in range(len(keys) + 1):
        src = rows_t @ x
        total += src
        x = np.zeros(len(keys))
        x[row_of[known]] = src[known]
        if not x.any():
            break
    return total


def _node_table(model, cap, layer, pos, feat, act, logits_df) -> pd.DataFrame:
    L, T, _ = cap.mlp_in.shape
    toks = model.token_strings(cap.tokens)
    labels = model.feature_labels
    layer_l, pos_l, feat_l = layer.tolist(), pos.tolist(), feat.tolist()
    feature_rows = {
        "node_id": [f"f:L{l}:P{p}:{f}" for l, p, f in zip(layer_l, pos_l, feat_l)],
        "kind": ["feature"] * len(layer_l), "layer": layer_l, "position": pos_l,
        "token": [toks[p] for p in pos_l], "feature": feat_l, "activation": act.double().tolist(),
        "label": [labels.get((l, f), "") for l, f in zip(layer_l, feat_l)],
    }
    err_l = [l for l in range(L) for _ in range(T)]
    err_p = [p for _ in range(L) for p in range(T)]
    error_rows = {
        "node_id": [f"e:L{l}:P{p}" for l, p in zip(err_l, err_p)], "kind": ["error"] * (L * T),
        "layer": err_l, "position": err_p, "token": [toks[p] for p in err_p], "feature": [None] * (L * T),
        "activation": cap.errors.norm(dim=-1).flatten().double().tolist(),
        "label": [""] * (L * T),
    }
    token_rows = {
        "node_id": [f"t:P{p}" for p in range(T)], "kind": ["token"] * T, "layer": [-1] * T,
        "position": list(range(T)), "token": toks, "feature": [None] * T,
        "activation": cap.embed.norm(dim=-1).double().tolist(), "label": [""] * T,
    }
    n_log = len(logits_df)
    logit_rows = {
        "node_id": [f"l:{t}" for t in logits_df["token"]], "kind": ["logit"] * n_log, "layer": [L] * n_log,
        "position": [T - 1] * n_log, "token": logits_df["token"].tolist(), "feature": [None] * n_log,
        "activation": logits_df["logit"].tolist(), "label": [""] * n_log,
    }
    parts = [pd.DataFrame(d) for d in (feature_rows, error_rows, token_rows, logit_rows)]
    nodes = pd.concat(parts, ignore_index=True)
    nodes["feature"] = nodes["feature"].astype("Int64")
    nodes["layer"] = nodes["layer"].astype(np.int64)
    nodes["position"] = nodes["position"].astype(np.int64)
    nodes.insert(7, "influence", 0.0)
    return nodes[["node_id", "kind", "layer", "position", "token", "feature", "activation", "influence", "label"]]
