"""Gemma-2: norms before *and* after attention and MLP ((1 + w) RMSNorms), embeddings scaled
by sqrt(d_model), attention and final logits soft-capped.

As in GemmaScope and circuit-tracer, the transcoder reads the pre-MLP norm's normalized input
*before* its (1 + w) weight (TransformerLens's ``ln2.hook_normalized``) and replaces the MLP
*and* its post-norm (``hook_mlp_out``).  The final soft-cap is kept (it is applied to the
replacement model's logits); the attention soft-cap only shapes the frozen pattern.
"""

from __future__ import annotations

from .base import Architecture

GEMMA_NORMS = ("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm")


def tiny_gemma2(*, vocab_size, d_model, n_layers, n_heads, n_kv_heads, d_mlp, max_length):
    from transformers import Gemma2Config

    # soft-capped attention and logits, post-norms, and a sliding window short enough to matter
    return Gemma2Config(
        vocab_size=vocab_size,
        hidden_size=d_model,
        intermediate_size=d_mlp,
        num_hidden_layers=n_layers,
        num_attention_heads=n_heads,
        num_key_value_heads=n_kv_heads,
        max_position_embeddings=max_length,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
        tie_word_embeddings=False,
        head_dim=d_model // n_heads,
        query_pre_attn_scalar=d_model // n_heads,
        attn_logit_softcapping=50.0,
        final_logit_softcapping=30.0,
        sliding_window=6,
        hidden_activation="gelu_pytorch_tanh",
    )


GEMMA2 = Architecture(
    "gemma2",
    ("gemma2",),
    block="sandwich",
    norms=GEMMA_NORMS,
    mlp_in="pre_feedforward_layernorm",
    mlp_out="post_feedforward_layernorm",
    norm_kind="rms_plus_one",
    logit_softcap="final_logit_softcapping",
    mlp_in_normalized=True,
    tiny_config=tiny_gemma2,
)
