"""What an architecture family looks like to attribution: its read and write points.

An :class:`Architecture` names (as dotted paths from the Hugging Face model object) where the
transcoders read and write, which norms are frozen and how they compute, where the attention
pattern comes from (the query and key projections, detached to freeze it), and where the
embedding and the unembedding are.  Each family module (``llama.py``, ``gemma2.py`` …) builds
one and gives a tiny config for tests; :mod:`attribution_nb.architectures` registers them.

Two facts about the freezing (used by :mod:`attribution_nb.tracing`):

* norms are frozen by a value-preserving rewrite ``y.detach() + lin(x) − lin(x).detach()``
  whose gradient is that of ``x ↦ (x − mean) · w / frozen_scale`` (:func:`frozen_norm`);
* attention is frozen by detaching the query and key projections' outputs: the pattern is a
  function of them only, so this works with any attention kernel and on a remote server.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import PretrainedConfig

NORM_KINDS = ("rms", "rms_plus_one", "layernorm")
#: block layouts the reference model of the tests knows: pre-norm (Llama), pre- and post-norms
#: around attention and MLP (Gemma), GPT-2 (LayerNorm with bias, Conv1D, learned positions)
BLOCKS = ("pre_norm", "sandwich", "gpt2")


def get_module(root: Any, path: str) -> Any:
    """``root.a.b.c`` for ``path = "a.b.c"`` (modules or nnsight envoys)."""
    for part in path.split("."):
        root = getattr(root, part)
    return root


def _never(config) -> list[str]:
    return []


@dataclass(frozen=True)
class Architecture:
    """Where a family keeps its parts, and what of its config it handles.

    ``mlp_in`` is the module whose *input* the transcoder reads (with ``mlp_in_normalized``,
    that input divided by its rms: a norm's output without its weight); ``mlp_out`` the module
    whose *output* the transcoder replaces; ``mlp`` the MLP block itself (linear traces skip
    it).  ``norms`` are the per-layer norms, in execution
    order, whose scales are frozen; ``norm_kind`` says how they compute (``"rms"``: x·w/rms,
    ``"rms_plus_one"``: x·(1+w)/rms, ``"layernorm"``).  ``queries_keys`` are the modules
    (relative to a layer) whose outputs are the attention's queries and keys; with
    ``qk_fused`` one module outputs queries, keys and values side by side.  They run between
    the first norm of ``norms`` and the second; ``values`` is the value projection and
    ``heads_out`` the module that reads the heads' outputs.  ``refuse(config)`` lists what of a config
    this family does not handle (empty: fine).
    """

    family: str
    model_types: tuple[str, ...]
    block: str = "pre_norm"
    layers: str = "model.layers"
    norms: tuple[str, ...] = ("input_layernorm", "post_attention_layernorm")
    mlp_in: str = "mlp"
    mlp_out: str = "mlp"
    mlp: str = "mlp"  # the MLP block the transcoder stands in for (skipped in linear traces)
    embed: str = "model.embed_tokens"
    final_norm: str = "model.norm"
    unembed: str = "lm_head"
    norm_kind: str = "rms"
    logit_softcap: str | None = None  # config attribute of a final tanh soft-cap on the logits
    mlp_in_normalized: bool = (
        False  # the transcoder reads x/rms of norm ``mlp_in``'s input (no weight)
    )
    queries_keys: tuple[str, ...] = ("self_attn.q_proj", "self_attn.k_proj")
    qk_fused: bool = False
    values: str = "self_attn.v_proj"  # the value projection (with ``qk_fused``: the fused module)
    heads_out: str = "self_attn.o_proj"  # the module whose input is the heads' outputs side by side
    refuse: Callable[[Any], list[str]] = field(default=_never, compare=False)
    tiny_config: Callable[..., Any] | None = field(default=None, compare=False)

    def __post_init__(self):
        if self.norm_kind not in NORM_KINDS:
            raise ValueError(f"norm_kind must be one of {NORM_KINDS}, got {self.norm_kind!r}")
        if self.block not in BLOCKS:
            raise ValueError(f"block must be one of {BLOCKS}, got {self.block!r}")

    def check(self, hf_model) -> None:
        """Refuse a model this family cannot trace exactly, naming what is wrong."""
        config = hf_model.config
        problems = list(self.refuse(config)) + common_refusals(config) + unknown_fields(config)
        if problems:
            raise ValueError(
                f"{self.family} architecture cannot handle this {config.model_type!r} model: "
                + "; ".join(problems)
            )
        for path in (self.layers, self.embed, self.final_norm, self.unembed):
            _need(hf_model, path, self.family)
        first = get_module(hf_model, self.layers)[0]
        for path in (*self.norms, self.mlp_in, self.mlp_out, self.mlp, *self.queries_keys):
            _need(first, path, self.family, prefix=f"{self.layers}.0.")

    def softcap_value(self, config) -> float | None:
        return getattr(config, self.logit_softcap, None) if self.logit_softcap else None

    def attention(self, hf_model) -> AttentionFacts:
        """How this model's attention computes (see :class:`AttentionFacts`), read once from its
        config and its first layer's attention module."""
        cfg = hf_model.config
        n_heads = getattr(cfg, "num_attention_heads", None) or cfg.n_head
        layers = get_module(hf_model, self.layers)
        attn_path = self.queries_keys[0].rsplit(".", 1)[0]
        attn = get_module(layers[0], attn_path)
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // n_heads
        return AttentionFacts(
            n_heads=n_heads,
            n_kv_heads=getattr(cfg, "num_key_value_heads", None) or n_heads,
            head_dim=head_dim,
            qk_norms=tuple(getattr(attn, n, None) is not None for n in ("q_norm", "k_norm")),
            scales=tuple(_score_scale(get_module(layer, attn_path), head_dim) for layer in layers),
            softcap=getattr(cfg, "attn_logit_softcapping", None) or None,
            fused_qkv=self.qk_fused,
        )


@dataclass(frozen=True)
class AttentionFacts:
    """How a model's attention computes, in one place (from :meth:`Architecture.attention`):
    query heads and the key-value heads they share, the head width, whether queries and keys
    pass through norms of their own (Qwen3, Gemma-3; their scales are frozen like the others),
    each layer's score scale (GPT-2 may divide by the layer's index too), a soft-cap on the
    scores (Gemma-2), and whether one module projects queries, keys and values side by side."""

    n_heads: int
    n_kv_heads: int
    head_dim: int
    qk_norms: tuple[bool, ...]  # (queries, keys)
    scales: tuple[float, ...]  # per layer
    softcap: float | None
    fused_qkv: bool

    def kv_head(self, head: int) -> int:
        """The key-value head query head ``head`` reads (grouped-query attention)."""
        return head // (self.n_heads // self.n_kv_heads)

    def span(self, part: str, head: int) -> slice:
        """Where a head sits in its projection's outputs: query head ``head`` for ``part="q"``,
        key-value head ``head`` for "k" and "v"; in a fused projection the three parts lie side
        by side, each ``n_heads · head_dim`` wide."""
        start = "qkv".index(part) * self.n_heads * self.head_dim if self.fused_qkv else 0
        return slice(start + head * self.head_dim, start + (head + 1) * self.head_dim)


def _score_scale(attn, head_dim: int) -> float:
    """An attention module's score scale: its ``scaling`` (Llama, Qwen, Gemma), or GPT-2's
    ``1/sqrt(d_head)`` (if it scales) divided by the layer's index + 1 where it says so."""
    if getattr(attn, "scaling", None) is not None:
        return float(attn.scaling)
    s = head_dim**-0.5 if getattr(attn, "scale_attn_weights", True) else 1.0
    if getattr(attn, "scale_attn_by_inverse_layer_idx", False):
        s /= float(attn.layer_idx + 1)
    return s


def _need(root, path: str, family: str, prefix: str = "") -> None:
    try:
        get_module(root, path)
    except AttributeError:
        raise ValueError(
            f"the {family} architecture expects a module at {prefix + path!r}, which this model "
            "does not have; describe its layout with architecture=Architecture(...)"
        ) from None


#: config fields that never change what a model computes, beyond those its config class defines:
#: private and bookkeeping keys, special token ids, dtype and version stamps; and how the weights
#: were stored (``quantization_config``: a GGUF file's weights are de-quantised when loaded)
HARMLESS_FIELDS = re.compile(
    r"^(_.*|.*_token_ids?|transformers_version|torch_dtype|dtype|architectures|use_cache"
    r"|quantization_config)$"
)


def unknown_fields(config) -> list[str]:
    """The allow-list: every field of ``config`` must be one its class (or every config) defines,
    or one of :data:`HARMLESS_FIELDS`; a field no one here knows may change the computation in
    a way no family handles (a newer transformers, a custom model), so it is named."""
    try:
        known = set(PretrainedConfig().to_dict()) | set(type(config)().to_dict())
    except Exception:  # a config class that cannot be built without arguments: nothing to compare
        return []
    extra = sorted(k for k in config.to_dict() if k not in known and not HARMLESS_FIELDS.match(k))
    return [f"config field {k!r} is not one this family understands" for k in extra]


def common_refusals(config) -> list[str]:
    """What no family handles: encoder-decoders, cross-attention, mixtures of experts,
    bidirectional attention (prefix traces and causal edges assume causal attention)."""
    out = []
    if getattr(config, "is_encoder_decoder", False):
        out.append("is_encoder_decoder=True (only decoder-only models)")
    if getattr(config, "add_cross_attention", False):
        out.append("add_cross_attention=True (cross-attention is not frozen)")
    for key in ("num_experts", "num_local_experts", "n_routed_experts"):
        if (getattr(config, key, 0) or 0) > 0:
            out.append(
                f"{key}={getattr(config, key)} (a mixture of experts; transcoders replace one dense MLP)"
            )
    if getattr(config, "use_bidirectional_attention", False):
        out.append("use_bidirectional_attention=True (attribution assumes causal attention)")
    return out


# -- freezing norm scales ---------------------------------------------------------------
def norm_eps(module) -> float:
    """A norm module's epsilon (``variance_epsilon`` or ``eps``; 1e-6 where it names none)."""
    eps = getattr(module, "variance_epsilon", None) or getattr(module, "eps", None)
    return 1e-6 if eps is None else float(eps)


def rms_normalize(x: torch.Tensor, module, frozen: bool = False) -> torch.Tensor:
    """``x / rms(x)`` with the norm module's epsilon (its weight left out); ``frozen``: the
    scale passes no gradient."""
    xf = x.float()
    scale = torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + norm_eps(module))
    return (xf * (scale.detach() if frozen else scale)).to(x.dtype)


def frozen_norm(x: torch.Tensor, y: torch.Tensor, module, kind: str) -> torch.Tensor:
    """``y`` (the norm's output for input ``x``) with the gradient of the frozen-scale map."""
    eps = norm_eps(module)
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
