"""The row engine: rows of the adjacency (direct effects on a batch of targets) by backward
passes through the frozen linear trace, and the runner that feeds it batches.

Sources are numbered in "active order": features sorted by (layer, position, index), then
error nodes (layer-major), then token nodes.  A target at layer ``l`` and position ``p`` can
only see sources below ``l`` at positions ``≤ p``: only those are computed and stored, one
batched matmul per layer (:class:`Segments`).

A :class:`RowEngine` is what a remote request carries (see :mod:`attribution_nb.backend`):
the envoy, the architecture, the skip matrices, a slimmed capture and the active features'
decoder writes, nothing more.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..backend import model_device, to_device
from ..ids import NodeId
from ..tracing import LinearTrace, linear_trace

#: prompts at least this long may run feature rows on prefix traces (eight prefix lengths), when
#: there are rows enough to fill RETRACE_PASSES passes per prefix
PREFIX_MIN_TOKENS = 8
#: prefix lengths are these fractions of the prompt (in eighths)
PREFIX_STEPS = 8
#: a prefix trace holds up to this many times the batch's copies (as many tokens as the full
#: trace: its matmuls stay as large, so a shorter prefix costs less work at the same speed)
PREFIX_MAX_BATCH_GROWTH = 4
#: building a prefix trace costs about this many backward passes on it (a Qwen3-0.6B at 17 tokens:
#: 0.8 s against 0.2 s), so a handful of targets rides on a longer trace instead
RETRACE_PASSES = 4


@dataclass(frozen=True)
class ActiveFeatures:
    """The active features of a capture in active order (on the CPU, whatever the model's device)."""

    layer: torch.Tensor  # [n] int
    position: torch.Tensor  # [n] int
    index: torch.Tensor  # [n] int, the feature's index in its transcoder
    activation: torch.Tensor  # [n] float32

    @classmethod
    def of(cls, activations: list[torch.Tensor]) -> ActiveFeatures:
        found = [(l, *acts.nonzero().T) for l, acts in enumerate(activations)]
        return cls(
            torch.cat([torch.full_like(p, l) for l, p, _ in found]).cpu(),
            torch.cat([p for _, p, _ in found]).cpu(),
            torch.cat([f for _, _, f in found]).cpu(),
            torch.cat([activations[l][p, f] for l, p, f in found]).float().cpu(),
        )

    def __len__(self) -> int:
        return len(self.layer)

    def take(self, order) -> ActiveFeatures:
        return ActiveFeatures(
            self.layer[order], self.position[order], self.index[order], self.activation[order]
        )


@dataclass(frozen=True)
class SourceLayout:
    """The order of a run's source nodes, owned here: the active features (in active order), then
    one error node per layer × position (layer-major), then one token node per position. The row
    engine, the adaptive sweep, the graph's assembly and the attention tables index sources so."""

    n_features: int
    n_layers: int
    n_positions: int

    @property
    def n_errors(self) -> int:
        return self.n_layers * self.n_positions

    @property
    def n_sources(self) -> int:
        return self.n_features + self.n_errors + self.n_positions

    def error_cells(self) -> tuple[list[int], list[int]]:
        """(layers, positions) of the error nodes, in order."""
        L, T = self.n_layers, self.n_positions
        return [la for la in range(L) for _ in range(T)], [p for _ in range(L) for p in range(T)]

    def columns(self, active: ActiveFeatures) -> tuple[torch.Tensor, torch.Tensor]:
        """Each source's layer (−1 for tokens) and position."""
        L, T = self.n_layers, self.n_positions
        return (
            torch.cat([active.layer, torch.arange(L).repeat_interleave(T), torch.full((T,), -1)]),
            torch.cat([active.position, torch.arange(T).repeat(L), torch.arange(T)]),
        )

    def kinds(self, n_targets: int = 0) -> np.ndarray:
        """Each source's kind, then ``n_targets`` target ("logit") nodes."""
        return np.array(
            ["feature"] * self.n_features
            + ["error"] * self.n_errors
            + ["token"] * self.n_positions
            + ["logit"] * n_targets,
            dtype=object,
        )

    def ids(self, active: ActiveFeatures, token_ids) -> np.ndarray:
        """Each source's node id."""
        errors = zip(*self.error_cells())
        return np.array(
            [
                NodeId.for_feature(int(la), int(p), int(f))
                for la, p, f in zip(active.layer, active.position, active.index)
            ]
            + [NodeId.for_error(la, p) for la, p in errors]
            + [NodeId.for_token(p, int(token_ids[p])) for p in range(self.n_positions)],
            dtype=object,
        )


@dataclass(frozen=True)
class Segments:
    """What one layer's sources write, laid out for batched products: at each position its
    active features, then its error node, cut into segments of ``K`` entries (zero-padded).
    The direct effects of them all on a batch of targets are then one batched matmul per
    written layer, instead of a small matmul per position and an einsum for the errors (at
    64 tokens those were a sixth of ``attribute``).  ``K`` is the mean number of entries per
    position, so the padding adds at most as much again."""

    position: torch.Tensor  # [S] each segment's position, ascending
    writes: list[torch.Tensor]  # per written layer (own first) [S, K, d] float32
    columns: torch.Tensor  # [S·K] each entry's source column in the graph, −1 for padding
    ends: list[int]  # ends[p]: the segments at positions ≤ p are the first ends[p]

    @classmethod
    def of(
        cls,
        writes: list[torch.Tensor],
        counts: torch.Tensor,
        errors: torch.Tensor,
        first_column: int,
        error_column: int,
    ) -> Segments:
        """``writes``: the layer's features' writes (active order) per written layer;
        ``counts`` [T]: features per position; ``errors`` [T, d]: the layer's error nodes,
        whose columns are ``error_column + position``."""
        counts = counts.cpu()
        T, device = len(counts), writes[0].device
        entries = counts + 1  # the features, then the error
        K = max(1, math.ceil(int(entries.sum()) / T))
        per_pos = (entries + K - 1) // K
        first_seg = torch.cat([torch.zeros(1, dtype=torch.long), per_pos.cumsum(0)[:-1]])
        pos = torch.repeat_interleave(torch.arange(T), entries)
        rank = (
            torch.arange(len(pos))
            - torch.cat([torch.zeros(1, dtype=torch.long), entries.cumsum(0)[:-1]])[pos]
        )
        slot = (first_seg[pos] + rank // K) * K + rank % K
        is_error = rank == entries[pos] - 1
        S = int(per_pos.sum())
        columns = torch.full((S * K,), -1, dtype=torch.long)
        columns[slot[~is_error]] = first_column + torch.arange(int(counts.sum()))
        columns[slot[is_error]] = error_column + torch.arange(T)
        padded = []
        for j, w in enumerate(writes):
            p = torch.zeros(S * K, w.shape[-1], dtype=torch.float32, device=device)
            p[slot[~is_error].to(device)] = w.float()
            if j == 0:  # errors write to their own layer only
                p[slot[is_error].to(device)] = errors.float().to(device)
            padded.append(p.view(S, K, -1))
        return cls(
            torch.repeat_interleave(torch.arange(T), per_pos).to(device),
            padded,
            columns,
            per_pos.cumsum(0).tolist(),
        )

    def products(self, reach: list, top_pos: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(columns, effects [n, len(columns)])``: the direct effects of the entries at
        positions ≤ ``top_pos``, each its write to layer ``l + j`` dotted with ``g`` [n, ≥
        top_pos + 1, d] at its position, summed over ``(j, g)`` in ``reach`` (own layer first)."""
        S = self.ends[top_pos]
        n = reach[0][1].shape[0]
        at = self.position[:S]
        acc = torch.zeros(S, self.writes[0].shape[1], n, device=self.writes[0].device)
        for j, g in reach:
            g_seg = g.float().transpose(0, 1).index_select(0, at)  # [S, n, d]
            acc.baddbmm_(self.writes[j][:S], g_seg.transpose(1, 2))  # [S, K, n] (the fast layout)
        cols = self.columns[: S * self.writes[0].shape[1]]
        keep = cols >= 0
        return cols[keep], acc.permute(2, 0, 1).reshape(n, -1)[:, keep.to(acc.device)].cpu()


class RowEngine:
    """Computes sparse rows (see the module docstring) for ≤ ``batch`` targets per backward pass."""

    def __init__(
        self,
        model,
        cap,
        active: ActiveFeatures,
        batch: int,
        *,
        read_attention: bool = False,
        buckets: list[int] | None = None,
    ):
        """``read_attention``: targets read the residual before a layer's attention, not its MLP
        input; ``buckets``: the prefix lengths a batch may run on (default: steps of the prompt)."""
        L, T, d = cap.mlp_in.shape
        self.L, self.T, self.batch = L, T, batch
        # what the linear trace needs, and nothing more (a remote request carries this object)
        self.envoy, self.arch, self.skips = (
            model.nn,
            model.architecture,
            model.transcoders.skip_weights(),
        )
        self.cap = cap.trace_inputs()
        self.trace: LinearTrace | None = (
            None  # traced on first use (on the server, for a remote model)
        )
        self.read_attention = read_attention
        self.length: int | None = None
        # prefix lengths a batch may run on: a target at position p only needs positions ≤ p
        many = int(active.layer.numel()) >= PREFIX_STEPS * RETRACE_PASSES * batch
        self.buckets = buckets or (
            sorted({math.ceil(T * k / PREFIX_STEPS) for k in range(1, PREFIX_STEPS + 1)})
            if T >= PREFIX_MIN_TOKENS and many
            else [T]
        )
        self.layer_starts, self.writes = [], []
        self._segments: list[Segments] | None = None  # built from the writes where the model is
        start = 0
        for l, tc in enumerate(model.transcoders):
            n_l = int((active.layer == l).sum())
            sl = slice(start, start + n_l)
            self.layer_starts.append(start)
            # float32 products whatever the model's dtype (half precision loses too much in the sums)
            writes = tc.feature_writes(active.index[sl], active.activation[sl].to(tc.W_dec.device))
            tc.drop_pages()  # a mapped file: the rows read (and the kernel's read-around) go back
            # with the number of the layer's features at each position (for the segments)
            self.writes.append((writes, torch.bincount(active.position[sl], minlength=T)))
            start += n_l
        self.n_features = start
        self.layout = SourceLayout(start, L, T)
        self.n_sources = self.layout.n_sources
        self.src_layer, self.src_pos = self.layout.columns(active)

    def _move_to_model(self) -> None:
        """Put the products' operands where the model is (a remote server's GPU, say)."""
        device = model_device(self.envoy)
        if self.cap.embed.device != device:
            self.cap = self.cap.to(device)
            self.skips, self.writes = to_device(self.skips, device), to_device(self.writes, device)

    def __getstate__(self) -> dict:
        # a request carries the compact writes; the server builds its segments again
        return {**self.__dict__, "_segments": None}

    @property
    def segments(self) -> list[Segments]:
        """The writes as :class:`Segments`, built on first use (a remote request carries the
        compact writes: the padding can make segments twice their size)."""
        if self._segments is None:
            self._segments = [
                Segments.of(
                    w, c, self.cap.errors[l], self.layer_starts[l], self.n_features + l * self.T
                )
                for l, (w, c) in enumerate(self.writes)
            ]
        return self._segments

    def bucket(self, positions) -> np.ndarray:
        """The prefix length each target position runs on (the shortest bucket holding it)."""
        buckets = np.asarray(self.buckets)
        return buckets[np.searchsorted(buckets, np.asarray(positions) + 1)]

    def batch_for(self, length: int) -> int:
        """Targets per backward pass on a prefix of ``length`` tokens: ``batch`` copies of the
        full prompt hold as many tokens as ``batch · T / length`` copies of the prefix (so the
        trace's memory and its matmuls' sizes stay those of the full trace), at most
        :data:`PREFIX_MAX_BATCH_GROWTH` × ``batch``."""
        return min(
            self.batch * PREFIX_MAX_BATCH_GROWTH, max(self.batch, self.batch * self.T // length)
        )

    def retrace(self, length: int) -> None:
        """The frozen model on the prompt's first ``length`` tokens, :meth:`batch_for` copies (the
        previous trace dropped first: two traces at once would double the peak memory)."""
        self.trace = None
        copies = self.batch_for(length)
        self.trace = linear_trace(self.envoy, self.arch, self.skips, self.cap, copies, length)
        self.length = length

    def forget_trace(self) -> None:
        self.trace, self.length = None, None

    def _traced(self) -> LinearTrace:
        assert self.trace is not None, "retrace() first"
        return self.trace

    def run(self, batches, logits: bool = False) -> tuple[list, torch.Tensor | None]:
        """Every batch's rows (see ``__call__``) and, with ``logits``, the replacement model's
        last-position logits (from the full-length trace).  A remote model runs this inside one
        nnsight session on the server, so only the sparse rows travel back."""
        self._move_to_model()
        pieces = [self(*batch) for batch in batches]
        if not logits:
            return pieces, None
        if self.length != self.T:
            self.retrace(self.T)
        return pieces, self._traced().logits[0, -1].detach().cpu()

    @torch.no_grad()
    def _edges_from_grads(self, grads, layers, positions) -> torch.Tensor:
        n = len(layers)
        g_embed, g_writes = grads[0], grads[1:]
        out = torch.zeros(n, self.n_sources, dtype=torch.float32)  # on the CPU
        top_layer, top_pos = int(layers.max()), int(positions.max())
        for l in range(min(top_layer, self.L)):
            if g_writes[l] is None:
                continue
            # the layers this layer's sources write to that a target in the batch can see
            reach = [
                (j, g_writes[l + j][:n, : top_pos + 1])
                for j in range(len(self.segments[l].writes))
                if l + j < top_layer and g_writes[l + j] is not None
            ]
            cols, effects = self.segments[l].products(reach, top_pos)
            out[:, cols] = effects
        if g_embed is not None:
            base = self.n_features + self.L * self.T
            g = g_embed[:n, : top_pos + 1].float()
            out[:, base : base + top_pos + 1] = (
                (g * self.cap.embed[: top_pos + 1].float()).sum(-1).cpu()
            )
        return out

    def __call__(
        self,
        layers: torch.Tensor,
        positions: torch.Tensor,
        vectors: torch.Tensor,
        length: int | None = None,
    ):
        """Sparse rows for ≤ batch targets: target b reads ``vectors[b]`` at ``positions[b]``
        of layer ``layers[b]``'s MLP input (``layers[b] == L`` means the unembedding input), on a
        trace of the prompt's first ``length`` tokens (default: the shortest bucket holding them).

        Returns ``(counts, columns, values)``: entries per row, then the rows' source
        columns (ascending, int32) and direct effects (float32), row after row."""
        n = len(layers)
        need = int(positions.max()) + 1
        length = int(self.bucket(need - 1)) if length is None else int(length)
        if length < need:
            raise ValueError(
                f"a target at position {need - 1} is outside a trace of {length} tokens"
            )
        if length != self.length:  # a shorter (or the full) prefix: cheaper backward passes
            self.retrace(length)
        if n > self.batch_for(length):
            raise ValueError(f"{n} targets for a trace of {self.batch_for(length)} prompt copies")
        batch_idx = torch.arange(n)
        trace = self._traced()
        parts = []
        for layer in layers.unique().tolist():
            sel = layers == layer
            x = (
                trace.unembed_in
                if layer == self.L
                else trace.attn_in[layer]
                if self.read_attention
                else trace.mlp_in[layer]
            )
            parts.append(
                (x[batch_idx[sel], positions[sel]] * vectors[sel].to(x.device, x.dtype)).sum()
            )
        loss = sum(parts[1:], parts[0])
        grads = torch.autograd.grad(loss, trace.leaves, retain_graph=True, allow_unused=True)
        out = self._edges_from_grads(grads, layers, positions)
        if not torch.isfinite(out).all():  # (before any more rows are computed)
            b = int((~torch.isfinite(out)).any(1).nonzero()[0])
            raise ValueError(
                f"non-finite direct effects into the target at layer {int(layers[b])}, position "
                f"{int(positions[b])} (layer {self.L} is the logits); check the model's dtype and weights"
            )
        mask = (
            (self.src_layer[None] < layers[:, None])
            & (self.src_pos[None] <= positions[:, None])
            & (out != 0)
        )
        cols = mask.nonzero()[:, 1].to(torch.int32).numpy()
        return mask.sum(1).numpy(), cols, out[mask].numpy()


class RowRunner:
    """Feeds targets to a :class:`RowEngine` in jobs (as many targets as one backward pass on their
    prefix takes), grouped into requests as the backend says (one job at a time here; all in one
    request remotely), and files the rows."""

    def __init__(self, backend, engine: RowEngine, store, bar=None):
        """``bar``: a progress bar (``update(n)``), or None."""
        self.backend, self.engine, self.store, self.bar = backend, engine, store, bar

    def lengths(self, positions) -> np.ndarray:
        """The prefix length each target runs on: its own bucket's, except that in a call holding
        several, a length whose targets would fill fewer backward passes than a new trace costs
        (:data:`RETRACE_PASSES`) runs on the next longer one (the current trace is free)."""
        need = self.engine.bucket(np.asarray(positions))
        out = need.copy()
        carrier = None
        for length in sorted(set(need.tolist()), reverse=True):
            here = need == length
            few = here.sum() < RETRACE_PASSES * self.engine.batch_for(length)
            if length != self.engine.length and carrier is not None and few:
                out[here] = carrier
            else:
                carrier = length
        return out

    def order(self, lengths: np.ndarray) -> np.ndarray:
        """The order to run targets in: those on the current trace first, then by prefix length,
        longest first (each length traced once)."""
        return np.lexsort((-lengths, lengths != (self.engine.length or -1)))

    def jobs(self, lengths: np.ndarray) -> list[slice]:
        """Backward passes for targets in this order: a pass runs on the prefix its first target
        needs and takes up to that length's batch of the targets after it, while they fit in it
        (a shorter target fills a longer pass's room: its trace then need not be built)."""
        out: list[slice] = []
        start = 0
        while start < len(lengths):
            length = lengths[start]
            end = min(start + self.engine.batch_for(int(length)), len(lengths))
            stop = start + 1
            while stop < end and lengths[stop] <= length:
                stop += 1
            out.append(slice(start, stop))
            start = stop
        return out

    def __call__(self, keys: list, layers, positions, vectors, logits: bool = False):
        """Rows for these targets (in :meth:`order`); with ``logits``, also the replacement model's
        last-position logits. ``vectors`` is a tensor [n, d] or a function of an index tensor
        giving those rows (built a request at a time, so a long sweep never holds all its
        encoder vectors at once)."""
        lengths = self.lengths(positions)
        order = self.order(lengths)
        jobs = [torch.from_numpy(order[s]) for s in self.jobs(lengths[order])]
        groups = self.backend.requests(jobs)
        last = None
        for i, group in enumerate(groups):
            want = logits and i == len(groups) - 1
            batches = [
                (
                    layers[j],
                    positions[j],
                    vectors(j) if callable(vectors) else vectors[j],
                    int(lengths[j[0]]),
                )
                for j in group
            ]
            pieces, found = self.backend.run(self.engine.envoy, self.engine.run, batches, want)
            self.backend.request_done(self.engine)
            last = found if want else last
            for j, piece in zip(group, pieces):
                self.store.add([keys[k] for k in j.tolist()], piece)
            if self.bar is not None:
                self.bar.update(sum(len(j) for j in group))
        return last
