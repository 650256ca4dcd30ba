"""The two traces attribution needs: a clean capture and the frozen linear trace.

* :func:`record` runs the model once and returns every MLP's true input (what the
  transcoder reads) and output, so that ``error = true MLP output − reconstruction`` can be
  held fixed (:class:`Capture`, filled in one go by the model).
* :func:`linear_trace` traces ``batch`` copies of the prompt with attention patterns and
  norm scales keeping their forward values but passing no gradient (see
  :mod:`attribution_nb.architectures.base`), token embeddings and MLP outputs replaced by
  leaf tensors: the residual stream is linear in its sources (token embeddings, feature
  decoder outputs, error nodes), and gradients at the leaves give direct effects.

Both read nothing but an nnsight envoy, an :class:`Architecture` and plain tensors, so they
run unchanged inside a remote nnsight request.
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass

import nnsight
import torch

from .architectures import Architecture, frozen_norm, get_module, rms_normalize


@dataclass(frozen=True)
class TraceInputs:
    """What :func:`linear_trace` and the edge products read of a capture (what a remote
    request carries)."""

    tokens: torch.Tensor  # [T]
    embed: torch.Tensor  # [T, d] what the token embeddings write to the residual stream
    mlp_in: torch.Tensor  # [L, T, d] transcoder inputs
    mlp_out: torch.Tensor  # [L, T, d] true MLP outputs
    errors: torch.Tensor  # [L, T, d] error nodes

    def to(self, device) -> TraceInputs:
        return TraceInputs(
            *(
                x.to(device)
                for x in (self.tokens, self.embed, self.mlp_in, self.mlp_out, self.errors)
            )
        )


@dataclass(frozen=True)
class Capture:
    """One clean forward pass and the transcoders' view of it: what attribution holds fixed."""

    tokens: torch.Tensor  # [T]
    embed: torch.Tensor  # [T, d]
    mlp_in: torch.Tensor  # [L, T, d] transcoder inputs
    mlp_out: torch.Tensor  # [L, T, d] true MLP outputs
    logits: torch.Tensor  # [T, V] the model's output (after a soft-cap, if any)
    unembed_in: torch.Tensor  # [T, d] input of the unembedding (after the final norm)
    raw_logits: torch.Tensor  # [V] last position before the soft-cap (linear in the sources)
    activations: list[torch.Tensor]  # per layer [T, F]
    reconstruction: torch.Tensor  # [L, T, d] decoders + b_dec + skip (+ cross-layer writes)
    errors: torch.Tensor  # [L, T, d] mlp_out − reconstruction

    def without_features_at(self, transcoders, position: int) -> Capture:
        """This capture with the features at ``position`` left out: their activations zeroed
        and what they wrote (to their own layer and, cross-layer, to later ones) moved into
        that position's error nodes, so the replacement model's output is unchanged."""
        activations = [a.clone() for a in self.activations]
        reconstruction = self.reconstruction.clone()
        for layer, tc in enumerate(transcoders):
            features = activations[layer][position].nonzero()[:, 0]
            if len(features):
                writes = tc.change_writes(features, activations[layer][position, features][None])
                for j, write in enumerate(writes):
                    reconstruction[layer + j, position] -= write[0].to(reconstruction.dtype)
                activations[layer][position] = 0
        return dataclasses.replace(
            self,
            activations=activations,
            reconstruction=reconstruction,
            errors=self.mlp_out - reconstruction,
        )

    def trace_inputs(self, device=None) -> TraceInputs:
        """The slice of the capture :func:`linear_trace` needs, on ``device`` (default: here)."""
        inputs = TraceInputs(self.tokens, self.embed, self.mlp_in, self.mlp_out, self.errors)
        return inputs if device is None else inputs.to(device)


def transcoder_reads(
    arch: Architecture, norm_module, inp: torch.Tensor, frozen: bool = False
) -> torch.Tensor:
    """What a transcoder reads given the input ``inp`` of module ``arch.mlp_in``: that input,
    or its ``x / rms(x)`` (Gemma), with the scale frozen in a linear trace."""
    return rms_normalize(inp, norm_module, frozen) if arch.mlp_in_normalized else inp


def record(trace, envoy, arch: Architecture, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
    """Inside ``trace`` (a context from the backend) on ``tokens`` [T]: the embedding output,
    every MLP's input and output, the unembedding's input and output (batch dimension dropped;
    MLP inputs as the module receives them, before :func:`transcoder_reads`)."""
    layers = get_module(envoy, arch.layers)
    with torch.no_grad(), trace:
        # lists made and saved inside the block, so that a remote run sends them back too
        ins, outs = nnsight.save([]), nnsight.save([])
        embed = get_module(envoy, arch.embed).output.save()
        for layer in layers:
            ins.append(get_module(layer, arch.mlp_in).input)
            outs.append(get_module(layer, arch.mlp_out).output)
        unembed_in = get_module(envoy, arch.unembed).input.save()
        logits = get_module(envoy, arch.unembed).output.save()
    return {
        "embed": embed[0],
        "mlp_in": [x[0] for x in ins],
        "mlp_out": torch.stack([x[0] for x in outs]),
        "unembed_in": unembed_in[0],
        "logits": logits[0],
    }


@dataclass
class LinearTrace:
    """The frozen local replacement model on ``batch`` copies of a prompt, as one autograd graph."""

    embed_leaf: torch.Tensor  # [B, T, d]
    write_leaves: list[torch.Tensor]  # per layer [B, T, d]
    mlp_in: list[torch.Tensor]  # per layer [B, T, d], functions of the leaves
    unembed_in: torch.Tensor  # [B, T, d]
    logits: torch.Tensor  # [1, 1, V]: the first copy's last position
    attn_in: list[torch.Tensor]  # per layer [B, T, d]: the residual stream before its attention
    attn_x: list[torch.Tensor]  # per layer [B, T, d]: what the attention reads (its norm's output)
    heads: list[torch.Tensor]  # per layer [B, T, n_heads · d_head]: the heads' outputs side by side

    @property
    def leaves(self) -> list[torch.Tensor]:
        return [self.embed_leaf, *self.write_leaves]


def _freeze_attention(arch: Architecture, layer) -> None:
    """Detach the query and key projections' outputs (the pattern then passes no gradient)."""
    for name in arch.queries_keys:
        qk = get_module(layer, name)
        out = qk.output
        if arch.qk_fused:  # [queries | keys | values]
            split = 2 * (out.shape[-1] // 3)
            qk.output = torch.cat([out[..., :split].detach(), out[..., split:]], -1)
        else:
            qk.output = out.detach()


#: the linear trace uses eager attention while batch × heads × T² stays below this many scores
EAGER_MAX_SCORES = 1 << 26


@contextlib.contextmanager
def eager_attention(envoy, scores: int):
    """Run the model's attention as plain ``softmax(q·k) @ v`` while inside (when ``scores``,
    the size of the batch's score tensors, is at most :data:`EAGER_MAX_SCORES`).

    With queries and keys detached, the only gradient through eager attention is
    ``patternᵀ @ grad`` into the values; a fused kernel (SDPA, flash) computes its full
    backward instead, which was 40% of a backward pass on SmolLM2-135M at 17 tokens.  The
    forward values are the same up to float rounding.  A model whose weights live on a
    server keeps its own setting (its config is not ours to change)."""
    cfg = getattr(getattr(envoy, "_module", None), "config", None)
    if cfg is None or scores > EAGER_MAX_SCORES:
        yield
        return
    with attention_implementation(cfg, "eager"):
        yield


@contextlib.contextmanager
def attention_implementation(config, name: str):
    """Hugging Face's attention implementation set to ``name`` while inside (the config's own
    setting back after; nothing changed where the config names none)."""
    saved = getattr(config, "_attn_implementation", None)
    if saved is None or saved == name:
        yield
        return
    config._attn_implementation = name
    try:
        yield
    finally:
        config._attn_implementation = saved


def _leaves(cap: TraceInputs, skips: list, batch: int, T: int):
    """The linear trace's leaves, ``batch`` copies of the first ``T`` positions: the token
    embeddings, and per layer what the MLP writes less the skip term (which the trace adds)."""
    d = cap.embed.shape[1]
    embed_leaf = cap.embed[None, :T].expand(batch, T, d).clone().requires_grad_(True)
    write_leaves = []
    for l, W_skip in enumerate(skips):
        write = (
            cap.mlp_out[l, :T]
            if W_skip is None
            else cap.mlp_out[l, :T] - cap.mlp_in[l, :T] @ W_skip
        )
        write_leaves.append(write[None].expand(batch, T, d).clone().requires_grad_(True))
    return embed_leaf, write_leaves


def linear_trace(
    envoy, arch: Architecture, skips: list, cap: TraceInputs, batch: int, length: int | None = None
) -> LinearTrace:
    """Trace ``batch`` copies of the prompt's first ``length`` tokens through the frozen local
    replacement model, as one autograd graph (attention is causal, so a prefix's trace is
    exact for targets inside it).

    The token embeddings become one leaf tensor and each MLP output another (features'
    decoder outputs + b_dec + error, held constant) plus the transcoder's skip term
    ``x @ skips[l]``; the MLPs themselves are skipped.  Attention runs eagerly while its
    scores are small (:func:`eager_attention`).  Gradients at the leaves, dotted with what a source writes there, are
    that source's direct effects.
    """
    layers = get_module(envoy, arch.layers)
    T = cap.embed.shape[0] if length is None else int(length)
    embed_leaf, write_leaves = _leaves(cap, skips, batch, T)
    mlp_in, attn_in, attn_x, heads = [], [], [], []
    n_heads = getattr(
        getattr(getattr(envoy, "_module", None), "config", None), "num_attention_heads", 1
    )
    with (
        eager_attention(envoy, batch * n_heads * T * T),
        envoy.trace(cap.tokens[None, :T].expand(batch, -1)),
    ):
        get_module(envoy, arch.embed).output = embed_leaf
        for layer, W_skip, leaf in zip(layers, skips, write_leaves):
            for i, name in enumerate(arch.norms):
                if name == arch.mlp_out:  # a norm after the MLP (Gemma): replaced below
                    continue
                norm = get_module(layer, name)
                inp = norm.input
                if name == arch.mlp_in:
                    x = transcoder_reads(arch, norm._module, inp, frozen=True)
                norm.output = frozen_norm(inp, norm.output, norm._module, arch.norm_kind)
                if i == 0:  # the attention runs after the first norm
                    attn_in.append(nnsight.save(inp))
                    attn_x.append(nnsight.save(norm.output))
                    _freeze_attention(arch, layer)
                    heads.append(nnsight.save(get_module(layer, arch.heads_out).input))
            if arch.mlp_in not in arch.norms:
                x = get_module(layer, arch.mlp_in).input
            mlp_in.append(nnsight.save(x))
            # the MLP does not run: its stand-in is the leaf (+ the skip term), so the forward
            # pass costs the attention only
            out = leaf if W_skip is None else leaf + x @ W_skip
            mlp = get_module(layer, arch.mlp)
            if arch.mlp == arch.mlp_out:
                mlp.skip(out)
            else:
                mlp.skip(mlp.input)
                get_module(layer, arch.mlp_out).output = out
        final = get_module(envoy, arch.final_norm)
        final.output = frozen_norm(final.input, final.output, final._module, arch.norm_kind)
        unembed = get_module(envoy, arch.unembed)
        unembed_in = unembed.input.save()
        # only copy 0's last-position logits are read ([batch, 1, vocab], a batched product with
        # the weight expanded, took 1.4 s of a 2 s trace on a Qwen3-0.6B)
        unembed.input = unembed_in[:1, -1:]
        logits = unembed.output.save()
    return LinearTrace(embed_leaf, write_leaves, mlp_in, unembed_in, logits, attn_in, attn_x, heads)


def writes_dot(grads, writes, n: int) -> torch.Tensor:
    """Per batch row (``n`` of them): the gradients at the trace's leaves dotted with what a
    source writes there, summed: its direct effect (float64).  ``grads``: gradients at some of
    the trace's leaves (None where none reached one); ``writes``: ``(k, positions, vector)``,
    what the source adds to the leaf of ``grads[k]``, shaped like ``grads[k][b, positions]``."""
    total = torch.zeros(n, dtype=torch.float64)
    for leaf, positions, vector in writes:
        g = grads[leaf]
        if g is not None:
            part = (g[:n, positions].double() * vector.to(g.device).double()).flatten(1).sum(1)
            total = total.to(part.device) + part
    return total
