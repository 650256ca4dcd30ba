"""An independent reference for the local replacement model, in plain torch (float64).

It re-implements the Llama-family and Gemma-2 forward passes by hand from the Hugging Face weights,
without nnsight and without the package's attribution code.  Attention patterns are the
only thing taken from Hugging Face (its eager attention with ``output_attentions``); the
value path, the norms, the MLP replacement and the unembedding are computed here.  In
*frozen* mode the norm scales recorded on the clean run are reused, so the output is a
linear function of the sources (embeddings, feature activations, error vectors) plus
constants; derivatives of that function are the direct effects a graph must contain.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from attribution_nb.architectures import architecture_for


#: the families and transcoder kinds the invariant tests run on: (family, activation, skip)
CASES = [
    ("llama", "jumprelu", False),
    ("llama", "relu", False),
    ("llama", "topk", False),
    ("llama", "jumprelu", True),
    ("qwen2", "jumprelu", False),
    ("qwen3", "jumprelu", True),
    (
        "gemma2",
        "jumprelu",
        False,
    ),  # (1 + w) norms, post-norms, scaled embeddings, soft-caps, sliding window
    (
        "gemma3",
        "jumprelu",
        True,
    ),  # Gemma-2's block with q/k norms, local and global layers, no soft-caps
    ("gpt2", "jumprelu", True),  # LayerNorm with bias, Conv1D, learned positions
    ("llama", "jumprelu", "clt"),  # cross-layer transcoders: features write to every later layer
    ("gemma2", "relu", "clt"),
]


def case_id(case) -> str:
    family, activation, skip = case
    return f"{family}-{activation}{'' if not skip else '-skip' if skip is True else '-' + skip}"


def case_model(case, prompt):
    """The tiny model of a case and its float64 reference on ``prompt``."""
    from attribution_nb.demo import tiny_model

    family, activation, skip = case
    model = tiny_model(
        family,
        seed=3,
        activation=activation,
        skip=skip is True,
        cross_layer=skip == "clt",
        d_features=128,
    )
    return model, Reference(model, model.tokenize(prompt))


def jacobian_row(ref, graph, target) -> torch.Tensor:
    """What each of the graph's nodes contributes to ``target`` (a ``Reference.targets`` spec) by
    the reference's gradients: the graph's row for that target, computed independently."""
    src = ref.clean_sources
    leaves = ref.leaf_sources()
    value = ref.targets(leaves, [target])[0]
    grads = torch.autograd.grad(
        value, [leaves.embed, *leaves.acts, leaves.errors], allow_unused=True
    )
    g_embed, g_acts, g_err = grads[0], grads[1:-1], grads[-1]
    n = graph.nodes
    expected = torch.zeros(len(n), dtype=torch.float64)
    for j, (kind, layer, pos, feat) in enumerate(zip(n.kind, n.layer, n.position, n.feature)):
        if kind == "feature" and g_acts[layer] is not None:
            expected[j] = g_acts[layer][pos, feat] * src.acts[layer][pos, feat]
        elif kind == "error" and g_err is not None:
            expected[j] = g_err[layer, pos] @ src.errors[layer, pos]
        elif kind == "token" and g_embed is not None:
            expected[j] = g_embed[pos] @ src.embed[pos]
    return expected


@dataclass
class Sources:
    embed: torch.Tensor  # [T, d]
    acts: list[torch.Tensor]  # per layer [T, F]
    errors: torch.Tensor  # [L, T, d]


class Reference:
    def __init__(self, model, tokens: torch.Tensor):
        self.hf = copy.deepcopy(model.hf_model).double()
        self.tcs = [copy.deepcopy(tc).double() for tc in model.transcoders]
        self.tokens = tokens
        cfg = self.hf.config
        self.n_heads = cfg.num_attention_heads
        self.n_kv = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
        # the registry says only which block layout to compute (the maths below is written here)
        block = architecture_for(self.hf).block
        self.gemma = block == "sandwich"  # (1 + w) norms, norms after attention and MLP, soft-caps
        self.gpt2 = block == "gpt2"  # LayerNorm with bias, Conv1D, learned positions
        self.softcap = getattr(cfg, "final_logit_softcapping", None)
        saved = cfg._attn_implementation
        cfg._attn_implementation = "eager"
        with torch.no_grad():
            out = self.hf(tokens[None], output_attentions=True)
        cfg._attn_implementation = saved
        self.hf_logits = out.logits[0]  # after the final soft-cap, if any
        self.patterns = [a[0] for a in out.attentions]  # [H, T, T] per layer
        self.scales = None
        with torch.no_grad():
            self.clean_logits, self.clean_sources, self.mlp_in = self.run(None, record=True)

    def capped(self, logits):
        """The model's output logits: Gemma-2 soft-caps them with tanh."""
        return logits if self.softcap is None else torch.tanh(logits / self.softcap) * self.softcap

    def _norm(self, h, module, key, record, weight=True):
        var = h.pow(2).mean(-1, keepdim=True)
        eps = getattr(module, "variance_epsilon", None) or module.eps
        if record:
            self.scales[key] = torch.rsqrt(var + eps)
        if not weight:
            return h * self.scales[key]
        return h * self.scales[key] * (1 + module.weight if self.gemma else module.weight)

    def run(self, sources: Sources | None, record: bool = False):
        """Forward pass. ``sources=None``: the real model (true MLPs), recording sources and
        norm scales. Otherwise: the frozen replacement model driven by ``sources``."""
        if record:
            self.scales = {}
        if self.gpt2:
            return self._run_gpt2(sources, record)
        layers = self.hf.model.layers
        T = len(self.tokens)
        embed = self.hf.model.embed_tokens.weight[self.tokens]
        if self.gemma:
            embed = embed * cfg_scale(self.hf.config)
        h = embed if sources is None else sources.embed
        acts, errors, mlp_ins = [], [], []
        self.attn_ins = []  # the residual stream before each layer's attention
        for l, layer in enumerate(layers):
            self.attn_ins.append(h)
            attn = layer.self_attn
            x = self._norm(h, layer.input_layernorm, (l, 0), record)
            v = (
                attn.v_proj(x)
                .view(T, self.n_kv, -1)
                .repeat_interleave(self.n_heads // self.n_kv, dim=1)
            )
            heads = torch.einsum("hqk,khd->qhd", self.patterns[l], v).reshape(T, -1)
            if self.gemma:
                h = h + self._norm(
                    attn.o_proj(heads), layer.post_attention_layernorm, (l, 1), record
                )
                # GemmaScope transcoders read x / rms(x), before the norm's (1 + w)
                x2 = self._norm(h, layer.pre_feedforward_layernorm, (l, 2), record, weight=False)
            else:
                h = h + attn.o_proj(heads)
                x2 = self._norm(h, layer.post_attention_layernorm, (l, 1), record)
            mlp_ins.append(x2)

            def true_mlp(layer=layer, x2=x2):
                if not self.gemma:
                    return layer.mlp(x2)
                # the transcoder replaces the MLP and its post-norm (GemmaScope's layout)
                return layer.post_feedforward_layernorm(
                    layer.mlp(x2 * (1 + layer.pre_feedforward_layernorm.weight))
                )

            h = h + self._mlp_out(l, x2, true_mlp, sources, acts, errors)
        xf = self._norm(h, self.hf.model.norm, "final", record)
        self.final = xf  # the unembedding's input (custom targets read it)
        logits = self.hf.lm_head(xf)
        if sources is None:
            return logits, Sources(embed, acts, torch.stack(errors)), mlp_ins
        return logits, mlp_ins

    def _mlp_out(self, l, x2, true_mlp, sources, acts, errors):
        """Layer ``l``'s MLP output: the true one (recording activations and errors) or, driven
        by ``sources``, the replacement's: decoders (this layer's and earlier cross-layer ones)
        + b_dec + error + skip."""
        tc = self.tcs[l]
        if sources is None:
            out = true_mlp()
            acts.append(tc.encode(x2))
            errors.append(out - tc(x2) - self._cross(acts, l))
            return out
        out = (
            sources.acts[l] @ tc.W_dec + tc.b_dec + sources.errors[l] + self._cross(sources.acts, l)
        )
        return out if tc.W_skip is None else out + x2 @ tc.W_skip

    def _cross(self, acts, l):
        """What cross-layer transcoders of layers before ``l`` write to layer ``l``."""
        total = 0.0
        for l0 in range(l):
            tc = self.tcs[l0]
            if tc.W_dec_later is not None and l - l0 - 1 < tc.W_dec_later.shape[1]:
                total = total + acts[l0] @ tc.W_dec_later[:, l - l0 - 1]
        return total

    def _layernorm(self, h, module, key, record):
        centred = h - h.mean(-1, keepdim=True)
        if record:
            self.scales[key] = torch.rsqrt(centred.pow(2).mean(-1, keepdim=True) + module.eps)
        return centred * self.scales[key] * module.weight + module.bias

    def _run_gpt2(self, sources, record):
        """GPT-2: token + learned position embeddings, LayerNorms with bias, Conv1D weights
        ([in, out]: x @ W + b), fused q/k/v projection."""
        t = self.hf.transformer
        T = len(self.tokens)
        embed = t.wte.weight[self.tokens] + t.wpe.weight[torch.arange(T)]
        h = embed if sources is None else sources.embed
        acts, errors, mlp_ins = [], [], []
        d = h.shape[-1]
        self.attn_ins = []
        for l, block in enumerate(t.h):
            self.attn_ins.append(h)
            x = self._layernorm(h, block.ln_1, (l, 0), record)
            qkv = x @ block.attn.c_attn.weight + block.attn.c_attn.bias
            v = qkv[:, 2 * d :].view(T, self.n_heads, -1)
            heads = torch.einsum("hqk,khd->qhd", self.patterns[l], v).reshape(T, -1)
            h = h + heads @ block.attn.c_proj.weight + block.attn.c_proj.bias
            x2 = self._layernorm(h, block.ln_2, (l, 1), record)
            mlp_ins.append(x2)
            h = h + self._mlp_out(
                l, x2, lambda block=block, x2=x2: block.mlp(x2), sources, acts, errors
            )
        self.final = self._layernorm(h, t.ln_f, "final", record)
        logits = self.hf.lm_head(self.final)
        if sources is None:
            return logits, Sources(embed, acts, torch.stack(errors)), mlp_ins
        return logits, mlp_ins

    def targets(self, sources: Sources, spec):
        """Values of targets given as ("feature", layer, pos, f), ("logit", token_id) or
        ("direction", layer or None, pos, vector): a vector read at layer's transcoder input or,
        with None, at the unembedding's input."""
        logits, mlp_ins = self.run(sources)
        vals = []
        for t in spec:
            if t[0] == "feature":
                _, l, p, f = t
                vals.append(mlp_ins[l][p] @ self.tcs[l].W_enc[:, f] + self.tcs[l].b_enc[f])
            elif t[0] == "direction":
                _, l, p, v = t
                vals.append((self.final[p] if l is None else mlp_ins[l][p]) @ v.double())
            else:
                vals.append(logits[-1, t[1]] - logits[-1].mean())
        return torch.stack(vals)

    def zero_sources(self) -> Sources:
        s = self.clean_sources
        return Sources(
            torch.zeros_like(s.embed),
            [torch.zeros_like(a) for a in s.acts],
            torch.zeros_like(s.errors),
        )

    def leaf_sources(self) -> Sources:
        s = self.clean_sources
        return Sources(
            s.embed.clone().requires_grad_(True),
            [a.clone().requires_grad_(True) for a in s.acts],
            s.errors.clone().requires_grad_(True),
        )


def cfg_scale(cfg) -> float:
    """Gemma scales token embeddings by sqrt(d_model)."""
    return cfg.hidden_size**0.5
