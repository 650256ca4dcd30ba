"""GPT-2: LayerNorms with bias (the bias is a constant of the frozen norm), Conv1D weights
(nothing to adapt: only module inputs and outputs are read), a fused q/k/v projection (its
first two thirds are the queries and keys), learned positions: a token node writes its token
embedding plus its position embedding, read after their sum (``transformer.drop``).
"""

from __future__ import annotations

from .base import Architecture


def tiny_gpt2(*, vocab_size, d_model, n_layers, n_heads, n_kv_heads, d_mlp, max_length):
    from transformers import GPT2Config

    return GPT2Config(
        vocab_size=vocab_size,
        n_embd=d_model,
        n_layer=n_layers,
        n_head=n_heads,
        n_inner=d_mlp,
        n_positions=max_length,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
    )


GPT2 = Architecture(
    "gpt2",
    ("gpt2",),
    block="gpt2",
    layers="transformer.h",
    norms=("ln_1", "ln_2"),
    embed="transformer.drop",
    final_norm="transformer.ln_f",
    norm_kind="layernorm",
    queries_keys=("attn.c_attn",),
    qk_fused=True,
    values="attn.c_attn",
    heads_out="attn.c_proj",
    tiny_config=tiny_gpt2,
)
