"""The replacement model: a Hugging Face causal LM wrapped by nnsight, plus transcoders.

``ReplacementModel`` holds the model, its tokenizer, one transcoder per layer and an
``Adapter`` that names where things live in that architecture.  Two facts matter for
attribution (see ``attribution.py``):

* ``capture(tokens)`` runs the model once and returns every MLP's true input and output,
  so that ``error = true MLP output − transcoder reconstruction`` can be held fixed.
* ``linear_trace(...)`` traces the model with attention patterns and norm scales keeping
  their forward values but passing no gradient, so the residual stream becomes linear in
  its sources (token embeddings, feature decoder outputs, error nodes).  Attention is
  frozen by detaching the query and key projections' outputs (the pattern is a function
  of them only; this works with any attention kernel and needs no change to the model,
  so it runs on a remote server too), norms by a value-preserving rewrite
  ``y.detach() + lin(x) − lin(x).detach()`` whose gradient is that of
  ``x ↦ (x − mean) · w / frozen_scale``.

Adding an architecture means adding one ``Adapter`` (a few strings) to ``ADAPTERS``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
from nnsight import Envoy, NNsight

from .transcoders import Transcoder, TranscoderSet


@dataclass(frozen=True)
class Adapter:
    """Where an architecture keeps its parts (dotted paths from the HF model object).

    ``mlp_in`` is the module whose *input* the transcoder reads (with ``mlp_in_normalized``,
    that input divided by its rms: a norm's output without its weight); ``mlp_out`` the module
    whose *output* the transcoder replaces (for Llama both are the MLP itself).  ``norms`` are the
    per-layer norms, in execution order, whose scales are frozen; ``norm_kind`` says how they
    compute: ``"rms"`` (x·w/rms), ``"rms_plus_one"`` (Gemma: x·(1+w)/rms), ``"layernorm"``.
    ``queries_keys`` are the modules (relative to a layer) whose outputs are the attention's
    queries and keys, detached to freeze the pattern; with ``qk_fused`` one module outputs
    queries, keys and values side by side and its first two thirds are detached.  They run
    between the first norm of ``norms`` and the second.
    """

    family: str
    layers: str = "model.layers"
    norms: tuple[str, ...] = ("input_layernorm", "post_attention_layernorm")
    mlp_in: str = "mlp"
    mlp_out: str = "mlp"
    embed: str = "model.embed_tokens"
    final_norm: str = "model.norm"
    unembed: str = "lm_head"
    norm_kind: str = "rms"
    logit_softcap: str | None = None     # config attribute of a final tanh soft-cap on the logits
    mlp_in_normalized: bool = False      # the transcoder reads x/rms of norm ``mlp_in``'s input (no weight)
    queries_keys: tuple[str, ...] = ("self_attn.q_proj", "self_attn.k_proj")
    qk_fused: bool = False


#: Gemma-2: norms before and after attention and MLP; logits soft-capped.  As in GemmaScope
#: and circuit-tracer, the transcoder reads the pre-MLP norm's normalized input *before*
#: its (1 + w) weight (TransformerLens's ``ln2.hook_normalized``) and replaces the MLP
#: *and* its post-norm (``hook_mlp_out``).
GEMMA2 = Adapter("gemma2", norms=("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm"),
                 mlp_in="pre_feedforward_layernorm", mlp_out="post_feedforward_layernorm", norm_kind="rms_plus_one",
                 logit_softcap="final_logit_softcapping", mlp_in_normalized=True)


LLAMA = Adapter("llama")
#: GPT-2: LayerNorms with bias (the bias is a constant of the frozen norm), Conv1D weights
#: (nothing to adapt: only module inputs and outputs are read), learned positions: a token
#: node writes its token embedding plus its position embedding, read after their sum.
GPT2 = Adapter("gpt2", layers="transformer.h", norms=("ln_1", "ln_2"), embed="transformer.drop",
               final_norm="transformer.ln_f", norm_kind="layernorm", queries_keys=("attn.c_attn",), qk_fused=True)

ADAPTERS: dict[str, Adapter] = {
    "llama": LLAMA,
    "mistral": LLAMA,
    "qwen2": LLAMA,
    "qwen3": LLAMA,  # q/k norms act on the projections' outputs, which are detached
    "gemma2": GEMMA2,
    "gpt2": GPT2,
}


def adapter_for(hf_model) -> Adapter:
    model_type = getattr(hf_model.config, "model_type", None)
    if model_type not in ADAPTERS:
        raise ValueError(f"unsupported architecture {model_type!r}; supported: {sorted(ADAPTERS)} "
                         "(pass adapter=Adapter(...) to describe a new one)")
    return ADAPTERS[model_type]


def _get(obj, path: str):
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


# -- freezing norm scales ---------------------------------------------------------------
def rms_normalize(x: torch.Tensor, module, frozen: bool = False) -> torch.Tensor:
    """``x / rms(x)`` with the norm module's epsilon (its weight left out); ``frozen``: the
    scale passes no gradient."""
    eps = getattr(module, "variance_epsilon", None) or getattr(module, "eps", 1e-6)
    xf = x.float()
    scale = torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return (xf * (scale.detach() if frozen else scale)).to(x.dtype)


def frozen_norm(x: torch.Tensor, y: torch.Tensor, module, kind: str) -> torch.Tensor:
    """``y`` (the norm's output for input ``x``) with the gradient of the frozen-scale map."""
    eps = getattr(module, "variance_epsilon", None) or getattr(module, "eps", 1e-6)
    xf = x.float()
    if kind == "layernorm":
        centred = xf - xf.mean(-1, keepdim=True)
        scale = torch.rsqrt(centred.pow(2).mean(-1, keepdim=True) + eps).detach()
        lin = centred * scale * module.weight.float()
    else:
        scale = torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps).detach()
        weight = module.weight.float() + (1.0 if kind == "rms_plus_one" else 0.0)
        lin = xf * scale * weight
    lin = lin.to(y.dtype)
    return y.detach() + (lin - lin.detach())


@dataclass
class Capture:
    """One clean forward pass: what attribution needs to hold fixed."""

    tokens: torch.Tensor          # [T]
    embed: torch.Tensor           # [T, d] what the token embeddings write to the residual stream
    mlp_in: torch.Tensor          # [L, T, d] transcoder inputs
    mlp_out: torch.Tensor         # [L, T, d] true MLP outputs
    logits: torch.Tensor          # [T, V] the model's output (after a soft-cap, if any)
    unembed_in: torch.Tensor      # [T, d] input of the unembedding (after the final norm)
    raw_logits: torch.Tensor | None = None   # [V] last position before the soft-cap (linear in the sources)
    activations: list[torch.Tensor] = field(default_factory=list)   # per layer [T, F]
    reconstruction: torch.Tensor | None = None                      # [L, T, d] decoder + skip
    errors: torch.Tensor | None = None                              # [L, T, d]

    def for_linear_trace(self, device=None) -> "Capture":
        """Only what :func:`linear_trace` and the edge products read (what a remote request
        carries), on ``device`` (default: where it is)."""
        to = (lambda x: x) if device is None else (lambda x: None if x is None else x.to(device))
        return Capture(tokens=to(self.tokens), embed=to(self.embed), mlp_in=to(self.mlp_in),
                       mlp_out=to(self.mlp_out), logits=None, unembed_in=None, errors=to(self.errors))


@dataclass
class LinearTrace:
    """The frozen local replacement model on ``batch`` copies of a prompt, as one autograd graph."""

    embed_leaf: torch.Tensor          # [B, T, d]
    write_leaves: list[torch.Tensor]  # per layer [B, T, d]
    mlp_in: list[torch.Tensor]        # per layer [B, T, d], functions of the leaves
    unembed_in: torch.Tensor          # [B, T, d]
    logits: torch.Tensor              # [B, T, V]

    @property
    def leaves(self) -> list[torch.Tensor]:
        return [self.embed_leaf, *self.write_leaves]

def linear_trace(envoy, adapter: Adapter, skips: list, cap: Capture, batch: int,
                 length: int | None = None) -> LinearTrace:
    """Trace ``batch`` copies of the prompt's first ``length`` tokens through the frozen local
    replacement model, as one autograd graph.

    The token embeddings become one leaf tensor and each MLP output another (features'
    decoder outputs + b_dec + error, held constant) plus the transcoder's skip term
    ``x @ skips[l]``; attention patterns (detached queries and keys) and norm scales are
    frozen.  Gradients at the leaves, dotted with what a source writes there, are that
    source's direct effects.

    It reads nothing but ``envoy`` (an nnsight model), the adapter, the skip matrices and
    the capture, so it runs unchanged inside a remote nnsight session.
    """
    layers = _get(envoy, adapter.layers)
    T, d = cap.embed.shape
    T = T if length is None else int(length)
    embed_leaf = cap.embed[None, :T].expand(batch, T, d).clone().requires_grad_(True)
    write_leaves = []
    for l, W_skip in enumerate(skips):
        write = cap.mlp_out[l, :T] if W_skip is None else cap.mlp_out[l, :T] - cap.mlp_in[l, :T] @ W_skip
        write_leaves.append(write[None].expand(batch, T, d).clone().requires_grad_(True))
    mlp_in = []
    with envoy.trace(cap.tokens[None, :T].expand(batch, -1)):
        _get(envoy, adapter.embed).output = embed_leaf
        for layer, W_skip, leaf in zip(layers, skips, write_leaves):
            for i, name in enumerate(adapter.norms):
                norm = _get(layer, name)
                inp = norm.input
                if adapter.mlp_in_normalized and name == adapter.mlp_in:
                    x = rms_normalize(inp, norm._module, frozen=True)
                norm.output = frozen_norm(inp, norm.output, norm._module, adapter.norm_kind)
                if i == 0:                       # the attention runs after the first norm
                    for qk_name in adapter.queries_keys:
                        qk = _get(layer, qk_name)
                        out = qk.output
                        if adapter.qk_fused:     # [queries | keys | values]
                            split = 2 * (out.shape[-1] // 3)
                            qk.output = torch.cat([out[..., :split].detach(), out[..., split:]], -1)
                        else:
                            qk.output = out.detach()
            if not adapter.mlp_in_normalized:
                x = _get(layer, adapter.mlp_in).input
            mlp_in.append(x.save())
            _get(layer, adapter.mlp_out).output = leaf if W_skip is None else leaf + x @ W_skip
        final = _get(envoy, adapter.final_norm)
        final.output = frozen_norm(final.input, final.output, final._module, adapter.norm_kind)
        unembed_in = _get(envoy, adapter.unembed).input.save()
        logits = _get(envoy, adapter.unembed).output.save()
    return LinearTrace(embed_leaf, write_leaves, mlp_in, unembed_in, logits)


def ship_code() -> None:
    """Have nnsight send this package's code with remote requests (by value: a server runs
    the functions a trace calls, and has numpy, torch and nnsight but not attribution_nb)."""
    import nnsight
    nnsight.register(__name__.rpartition(".")[0])


class ReplacementModel:
    """A causal LM with one transcoder per layer, traced with nnsight.

    Args:
        hf_model: a Hugging Face ``*ForCausalLM`` (Llama, Mistral, Qwen2, Qwen3, Gemma-2,
            GPT-2 families), or an nnsight ``TransformersModel`` wrapping one (for remote
            runs its weights may stay on the meta device: only the server holds them).
        tokenizer: its tokenizer; prompts are encoded with special tokens (BOS) as it adds them.
        transcoders: one :class:`Transcoder` per layer (a list or a :class:`TranscoderSet`).
        adapter: where the parts are; found from ``hf_model.config.model_type`` when omitted.
        name: a short name shown in graphs.
        remote: nnsight's remote execution for :func:`~attribution_nb.attribute`, :meth:`logits`,
            interventions and generation: ``True`` runs the model's traces on NDIF
            (``nnsight.CONFIG`` holds the API key), a URL another server, ``"local"`` nnsight's
            local simulation (each request is serialized and run here as a server would run it).
            The transcoders stay here; requests carry the active features' decoder rows.
    """

    def __init__(self, hf_model, tokenizer, transcoders, *, adapter: Adapter | None = None,
                 name: str | None = None, feature_labels: dict | None = None, remote: bool | str = False):
        if not (remote is False or remote is True or isinstance(remote, str)):
            raise ValueError(f"remote must be False, True, 'local' or a server URL, got {remote!r}")
        if isinstance(hf_model, Envoy):
            envoy, module = hf_model, hf_model._module
        else:
            envoy, module = None, hf_model
        if remote and envoy is None:
            from nnsight.modeling.transformers import TransformersModel
            envoy = TransformersModel(module, tokenizer=tokenizer)
        if remote and not hasattr(envoy, "_remote_backend"):
            raise ValueError(f"remote={remote!r} needs a model nnsight can run remotely (a TransformersModel), "
                             f"got {type(envoy).__name__}")
        self.adapter = adapter or adapter_for(module)
        module.eval()
        self._remote = remote
        self.tokenizer = tokenizer
        self.nn = envoy if envoy is not None else NNsight(module)
        self._no_weight_grads()
        self.name = name or getattr(module.config, "_name_or_path", "") or self.adapter.family
        self.n_layers = len(_get(module, self.adapter.layers))
        self.d_model = _get(module, self.adapter.unembed).weight.shape[1]
        tcs = list(transcoders)
        if len(tcs) != self.n_layers:
            raise ValueError(f"got {len(tcs)} transcoders for a model with {self.n_layers} layers; need one per layer")
        for i, tc in enumerate(tcs):
            if not isinstance(tc, Transcoder):
                raise TypeError(f"transcoder {i} is a {type(tc).__name__}, expected attribution_nb.Transcoder")
            if tc.d_model != self.d_model:
                raise ValueError(f"transcoder {i} has d_model {tc.d_model}, but the model's d_model is {self.d_model}")
            if tc.n_later > self.n_layers - i - 1:
                raise ValueError(f"transcoder {i} writes to {tc.n_later} later layers, but the model has only "
                                 f"{self.n_layers - i - 1} layers after layer {i}")
            tc.to(device=self.device, dtype=self.dtype)
        self.transcoders = TranscoderSet(tcs)
        self.feature_labels = feature_labels or {}      # (layer, feature) -> label
        self.feature_contexts: dict = {}                 # (layer, feature) -> [[text, activation], ...]
        self.max_length = getattr(module.config, "max_position_embeddings", None)

    def __repr__(self) -> str:
        return (f"ReplacementModel({self.name!r}, family={self.adapter.family!r}, layers={self.n_layers}, "
                f"d_model={self.d_model}, features/layer={[tc.d_features for tc in self.transcoders]})")

    @property
    def remote(self) -> bool | str:
        """The remote setting (fixed at construction: it decides nnsight's wrapper)."""
        return self._remote

    @property
    def hf_model(self):
        """The Hugging Face model (nnsight's, which may swap in real weights on first use)."""
        return self.nn._module

    @property
    def weights_here(self) -> bool:
        """False when the weights live only on a remote server (meta tensors here)."""
        return next(self.hf_model.parameters()).device.type != "meta"

    @property
    def device(self) -> torch.device:
        """Where this side's tensors live: the model's device (the CPU for a remote model)."""
        d = next(self.hf_model.parameters()).device
        return torch.device("cpu") if d.type == "meta" else d

    @property
    def dtype(self) -> torch.dtype:
        return next(self.hf_model.parameters()).dtype

    @property
    def unembed_weight(self) -> torch.Tensor:
        self._need_weights("the unembedding")
        return _get(self.hf_model, self.adapter.unembed).weight

    def _no_weight_grads(self) -> None:
        """The weights take no gradients (again, after nnsight swapped in real weights)."""
        module = self.hf_model
        if getattr(self, "_frozen_module", None) is not module:
            for p in module.parameters():
                p.requires_grad_(False)
            self._frozen_module = module

    def _need_weights(self, what: str) -> None:
        if not self.weights_here:
            raise RuntimeError(f"{what} needs the model's weights, which are only on the remote server "
                               "(meta tensors here); load the model locally for this")

    def _trace(self, *inputs):
        """``self.nn.trace`` on this model's remote setting."""
        if not self.remote:
            return self.nn.trace(*inputs)
        ship_code()
        return self.nn.trace(*inputs, remote=self.remote)

    def session(self):
        """An nnsight session on this model's remote setting (one request for all it holds)."""
        if not self.remote:
            return self.nn.session()
        ship_code()
        return self.nn.session(remote=self.remote)

    def demeaned_unembedding(self, token_ids: list[int]) -> torch.Tensor:
        """Rows of the unembedding minus its mean row, [n, d]: the direction each target's
        demeaned logit reads from the final residual stream (fetched from the server when the
        weights are only there)."""
        if self.weights_here:
            W_U = self.unembed_weight
            return W_U[token_ids] - W_U.mean(0, keepdim=True)
        return self._remote_demeaned_unembedding(token_ids)

    def _remote_demeaned_unembedding(self, token_ids: list[int]) -> torch.Tensor:
        import nnsight
        ids = torch.as_tensor(token_ids, dtype=torch.long)
        unembed = _get(self.nn, self.adapter.unembed)
        with self.session():
            W_U = unembed.weight
            rows = nnsight.save((W_U[ids.to(W_U.device)] - W_U.mean(0, keepdim=True)).cpu())
        return rows.to(self.device)

    @property
    def unembed_bias(self) -> torch.Tensor | None:
        return getattr(_get(self.hf_model, self.adapter.unembed), "bias", None)

    # -- tokens ------------------------------------------------------------------
    def tokenize(self, prompt) -> torch.Tensor:
        """Token ids [T] of ``prompt`` (a string, or a list/tensor of ids used as given)."""
        if isinstance(prompt, str):
            if not prompt.strip():
                raise ValueError("prompt is empty; give at least one word")
            ids = torch.tensor(self.tokenizer(prompt)["input_ids"], dtype=torch.long)
            unk = getattr(self.tokenizer, "unk_token_id", None)
            if unk is not None and (ids == unk).any() and self.tokenizer.unk_token not in prompt:
                unknown = [w for w in prompt.split() if self.tokenizer(w, add_special_tokens=False)["input_ids"] == [unk]]
                raise ValueError(f"words not in the model's vocabulary: {unknown}")
        else:
            ids = torch.as_tensor(prompt, dtype=torch.long).flatten()
            if ids.numel() == 0:
                raise ValueError("prompt is empty; give at least one token id")
            vocab = _get(self.hf_model, self.adapter.unembed).weight.shape[0]     # (a shape: meta is fine)
            bad = ids[(ids < 0) | (ids >= vocab)]
            if bad.numel():
                raise ValueError(f"token id {int(bad[0])} is outside the vocabulary [0, {vocab})")
        if self.max_length is not None and len(ids) > self.max_length:
            raise ValueError(f"prompt has {len(ids)} tokens, longer than the model's context of {self.max_length}")
        return ids.to(self.device)

    def token_strings(self, ids) -> list[str]:
        return [self.tokenizer.decode([int(i)]) for i in ids]

    def token_id(self, token: str) -> int:
        """The id of a single-token string; raises if the tokenizer splits it."""
        ids = self.tokenizer(token, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            pieces = [self.tokenizer.decode([i]) for i in ids]
            raise ValueError(f"target token {token!r} is not a single token: the tokenizer splits it into {pieces}")
        unk = getattr(self.tokenizer, "unk_token_id", None)
        if unk is not None and ids[0] == unk and token != self.tokenizer.unk_token:
            raise ValueError(f"target token {token!r} is not in the vocabulary (it encodes as the unknown token)")
        return int(ids[0])

    def feature_top_tokens(self, layer: int, feature: int, k: int = 10):
        """The tokens a feature's decoder direction promotes most through the unembedding
        (the direct path, ignoring later layers and the final norm's scale)."""
        import pandas as pd
        n_features = self.transcoders[layer].d_features if 0 <= layer < self.n_layers else 0
        if not 0 <= feature < n_features:
            raise ValueError(f"no feature {feature} at layer {layer} (layers 0..{self.n_layers - 1}, "
                             f"{n_features} features at that layer)")
        direction = self.transcoders[layer].W_dec[feature].float()
        if self.weights_here:
            with torch.no_grad():
                scores = self.unembed_weight.float() @ direction
                values, indices = scores.topk(min(k, len(scores)))
        else:                                  # the unembedding is on the server
            import nnsight
            unembed = _get(self.nn, self.adapter.unembed)
            with self.session():
                W_U = unembed.weight
                top = (W_U.float() @ direction.to(W_U.device)).topk(min(k, W_U.shape[0]))
                found = nnsight.save((top.values.cpu(), top.indices.cpu()))
            values, indices = found
        return pd.DataFrame({"token": self.token_strings(indices.tolist()), "weight": values.double().numpy()})

    def softcap(self, logits: torch.Tensor) -> torch.Tensor:
        """The model's final logit soft-cap ``c·tanh(x / c)`` (identity for most models)."""
        cap = getattr(self.hf_model.config, self.adapter.logit_softcap, None) if self.adapter.logit_softcap else None
        return logits if cap is None else torch.tanh(logits / cap) * cap

    # -- tracing -----------------------------------------------------------------
    def _envoys(self):
        a = self.adapter
        layers = _get(self.nn, a.layers)
        return a, layers

    def capture(self, tokens: torch.Tensor) -> Capture:
        """One clean forward pass recording MLP inputs and outputs and the transcoders' view of them."""
        import nnsight
        a, layers = self._envoys()
        envoy = self.nn          # the block names no `self`: a remote request would carry it all
        with torch.no_grad(), self._trace(tokens[None]):
            # lists made and saved inside the block, so that a remote run sends them back too
            ins, outs = nnsight.save([]), nnsight.save([])
            embed = _get(envoy, a.embed).output.save()
            for layer in layers:
                ins.append(_get(layer, a.mlp_in).input)
                outs.append(_get(layer, a.mlp_out).output)
            unembed_in = _get(envoy, a.unembed).input.save()
            logits = _get(envoy, a.unembed).output.save()
        self._no_weight_grads()
        if a.mlp_in_normalized:
            hf_layers = _get(self.hf_model, a.layers)
            with torch.no_grad():
                ins = [rms_normalize(x, _get(layer, a.mlp_in)) for x, layer in zip(ins, hf_layers)]
        cap = Capture(tokens=tokens, embed=embed[0], mlp_in=torch.stack([x[0] for x in ins]),
                      mlp_out=torch.stack([x[0] for x in outs]), logits=self.softcap(logits[0]),
                      unembed_in=unembed_in[0], raw_logits=logits[0, -1])
        with torch.no_grad():
            recon = []
            for layer, tc in enumerate(self.transcoders):
                x = cap.mlp_in[layer]
                acts = tc.encode(x)
                if not torch.isfinite(acts).all():
                    pos = int((~torch.isfinite(acts)).any(-1).nonzero()[0])
                    raise ValueError(f"non-finite transcoder activations at layer {layer}, position {pos}; "
                                     "check the transcoder weights and the model's dtype")
                cap.activations.append(acts)
                recon.append(tc(x))
            for layer, tc in enumerate(self.transcoders):      # cross-layer transcoders write later too
                if tc.n_later:
                    for j, write in enumerate(tc.decode_later(cap.activations[layer])):
                        recon[layer + 1 + j] = recon[layer + 1 + j] + write
            cap.reconstruction = torch.stack(recon)
            cap.errors = cap.mlp_out - cap.reconstruction
        return cap

    def linear_trace(self, cap: Capture, batch: int, length: int | None = None) -> "LinearTrace":
        """Trace ``batch`` copies of the prompt (or of its first ``length`` tokens: attention is
        causal, so a prefix's trace is exact for targets inside it) through the frozen local
        replacement model (see :func:`linear_trace`)."""
        return linear_trace(self.nn, self.adapter, self.skip_weights(), cap, batch, length)

    def skip_weights(self) -> list[torch.Tensor | None]:
        """Each layer's skip matrix ``W_skip`` [d, d] (None where its transcoder has none)."""
        return [None if tc.W_skip is None else tc.W_skip.detach() for tc in self.transcoders]

    # -- plain runs and interventions ---------------------------------------------
    def logits(self, prompt) -> torch.Tensor:
        """Next-token logits [V] of the unmodified model at the prompt's last position."""
        tokens = self.tokenize(prompt)
        if self.remote:
            unembed = _get(self.nn, self.adapter.unembed)
            with torch.no_grad(), self._trace(tokens[None]):
                logits = unembed.output[0, -1].cpu().save()
            return self.softcap(logits)
        with torch.no_grad():
            return self.hf_model(tokens[None]).logits[0, -1]

    def intervened_logits(self, prompt, interventions, mode: str = "free") -> tuple[torch.Tensor, torch.Tensor]:
        """Last-position logits [V] before and after ``interventions`` (see :mod:`.interventions`)."""
        from .interventions import free_logits, frozen_logits, parse_interventions
        if mode not in ("free", "frozen"):
            raise ValueError(f"mode must be 'free' or 'frozen', got {mode!r}")
        tokens = self.tokenize(prompt)
        ops = parse_interventions(self, interventions, len(tokens))
        if mode == "frozen":   # its clean capture already holds the logits before
            return frozen_logits(self, tokens, ops)
        return self.logits(tokens), free_logits(self, tokens, ops)[-1]

    def intervene(self, prompt, interventions, mode: str = "free", top_k: int = 10):
        """Clamp, scale, ablate or steer features and re-run the model.

        ``interventions`` maps targets to what to do, e.g. ``{"f:L2:P5:17": 0}`` (ablate),
        ``{(2, 5, 17): Multiply(-2)}``, ``{(2, None, 17): Steer(4.0)}`` (every position), or
        ``{("f:L2:P5:17", "f:L3:P5:9"): 0}`` (a supernode). ``mode="free"`` runs the model
        normally with the clamps; ``"frozen"`` keeps attention, norms and all other feature
        activations fixed (direct effects only). Returns the top tokens before and after.
        """
        from .interventions import intervention_table
        before, after = self.intervened_logits(prompt, interventions, mode)
        return intervention_table(self, before, after, top_k)

    def swap(self, prompt, remove, source_prompt, add, *, position: int | None = None, mode: str = "free",
             top_k: int = 10):
        """Supernode swap: ablate the ``remove`` features and clamp the ``add`` features to the
        activations ``source_prompt`` gives them (e.g. Texas features out, California features in).

        ``add`` are feature node ids of ``source_prompt``'s graph; each is clamped at ``position``
        of ``prompt`` (default: the position of the ``remove`` features, which must share one).
        Returns the before/after table; :meth:`swap_interventions` gives the clamps themselves
        (for :meth:`generate`).
        """
        return self.intervene(prompt, self.swap_interventions(remove, source_prompt, add, position=position),
                              mode=mode, top_k=top_k)

    def swap_interventions(self, remove, source_prompt, add, *, position: int | None = None) -> dict:
        """The clamps of :meth:`swap`: ``remove`` ablated, ``add`` set to their activations on
        ``source_prompt``, at ``position`` (default: where the ``remove`` features sit)."""
        from .interventions import _parse_key
        removed = [p for key in remove for p in _parse_key(key)]
        if position is None:
            positions = {p[2] for p in removed}
            if len(positions) != 1:
                raise ValueError(f"the removed features sit at positions {sorted(positions)}; give position=")
            position = positions.pop()
        src_tokens = self.tokenize(source_prompt)
        cap = self.capture(src_tokens)
        clamps = {key: 0.0 for key in remove}
        for key in add:
            for kind, layer, pos, feat in _parse_key(key):
                if kind != "feature" or pos is None or not 0 <= pos < len(src_tokens):
                    raise ValueError(f"cannot take {key!r} from the source prompt: give feature node ids of its graph")
                clamps[(layer, position, feat)] = float(cap.activations[layer][pos, feat])
        return clamps

    @torch.no_grad()
    def generate(self, prompt, interventions=None, max_new_tokens: int = 20, *, every_position: bool = False,
                 temperature: float = 0.0, seed: int = 0, stop: str | None = None) -> dict:
        """Continue ``prompt`` with and without ``interventions`` (free mode).

        Interventions apply at the prompt positions they name; with ``every_position=True``
        those given for every position (``position=None``) also apply to each new token.
        Greedy when ``temperature`` is 0. Returns ``{"before": text, "after": text}``.
        """
        from .interventions import _Op, free_logits, parse_interventions
        tokens = self.tokenize(prompt)
        ops = parse_interventions(self, interventions or {}, len(tokens))
        if not every_position:   # "every position" clamps stop at the prompt's end
            ops = [o for o in ops if o.position is not None] + [
                _Op(o.kind, o.layer, p, o.feature, o.how) for o in ops if o.position is None for p in range(len(tokens))]
        out = {}
        for name, use in (("before", []), ("after", ops)):
            gen = torch.Generator().manual_seed(seed)
            ids = tokens.clone()
            for _ in range(max_new_tokens):
                if self.max_length is not None and len(ids) >= self.max_length:
                    break
                logits = free_logits(self, ids, use)[-1] if use else self.logits(ids)
                if temperature > 0:
                    nxt = torch.multinomial(torch.softmax(logits.double() / temperature, -1), 1, generator=gen)
                else:
                    nxt = logits.argmax()[None]
                ids = torch.cat([ids, nxt.to(ids.device)])
                if stop is not None and self.tokenizer.decode([int(nxt)]) == stop:
                    break
            out[name] = self.tokenizer.decode(ids[len(tokens):].tolist())
        return out


def load_model(name: str | None = None, *, transcoders=None, device: str = "cpu",
               dtype: torch.dtype = torch.float32, gguf_file: str | None = None,
               remote: bool | str = False) -> ReplacementModel:
    """Load a replacement model.

    * ``load_model()`` (or ``"demo"``): the embedded demo model, offline, on the CPU.
    * ``load_model(folder, transcoders=...)``: a local Hugging Face model folder (or a GGUF
      file's folder with ``gguf_file=``) and its transcoders: a folder written by
      :meth:`TranscoderSet.save`, a circuit-tracer ``config.yaml`` folder, a list of per-layer
      files (GemmaScope ``.npz``, circuit-tracer or attribution_nb safetensors, sae-lens
      folders), a preset name, or ``Transcoder`` objects (see :mod:`attribution_nb.loaders`).
    * ``load_model(preset)`` with a name from ``loaders.PRESETS`` (``"gemma-2-2b"``,
      ``"llama-3.2-1b"``, ``"qwen3-4b"``): the model and its published transcoders from the
      Hugging Face hub (network needed the first time; a GPU advised: ``device="cuda"``,
      ``dtype=torch.bfloat16``).
    * ``remote=True`` (or a server URL, or ``"local"`` to simulate one): ``name`` may also be a
      hub id; the model's weights are not loaded here (nnsight builds it on the meta device,
      from its config); its traces run on NDIF, which must host that model.  Transcoders are
      loaded here, on the CPU.
    """
    from .loaders import PRESETS, load_transcoders
    if name in (None, "demo"):
        from .demo import load_demo_model
        return load_demo_model()
    model_id = name
    if name in PRESETS:
        model_id = PRESETS[name]["model"]
        transcoders = transcoders if transcoders is not None else PRESETS[name]["transcoders"]
    elif not os.path.isdir(name) and not remote:
        raise ValueError(f"model {name!r} is neither a local folder nor a preset ({sorted(PRESETS)}); "
                         "a hub id is accepted with remote=True")
    if transcoders is None:
        raise ValueError(f"model {name!r} needs transcoders= (a folder, a config.yaml, per-layer files, "
                         "a preset name or Transcoder objects)")
    from transformers import AutoModelForCausalLM, AutoTokenizer
    extra = {"gguf_file": gguf_file} if gguf_file else {}
    tokenizer = AutoTokenizer.from_pretrained(model_id, **extra)
    if remote:
        if device != "cpu":
            raise ValueError(f"device={device!r} with remote={remote!r}: the server places the model; "
                             "this side (the transcoders) stays on the CPU, so leave device='cpu'")
        from nnsight.modeling.transformers import TransformersModel
        hf_model = TransformersModel(model_id, task="text-generation", tokenizer=tokenizer, dtype=dtype, **extra)
    else:
        hf_model = AutoModelForCausalLM.from_pretrained(model_id, dtype=dtype, **extra).to(device)
    if isinstance(transcoders, (str, os.PathLike)) or (
            isinstance(transcoders, (list, tuple)) and transcoders and isinstance(transcoders[0], (str, os.PathLike))):
        transcoders = load_transcoders(transcoders, device=device, dtype=dtype)
    return ReplacementModel(hf_model, tokenizer, transcoders, name=os.path.basename(os.path.normpath(name)),
                            remote=remote)
