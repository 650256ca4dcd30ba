"""Gemma-3 (text): Gemma-2's block (norms before and after attention and MLP, (1 + w)
RMSNorms) with q/k norms, the embedding scale inside the embedding module, local and global
attention layers, and no soft-caps by default (a config that sets one is honoured).

The q/k norms act on the projections' outputs, which are detached to freeze attention, so the
read and write points are Gemma-2's.
"""

from __future__ import annotations

from dataclasses import replace

from .gemma2 import GEMMA2


def tiny_gemma3(*, vocab_size, d_model, n_layers, n_heads, n_kv_heads, d_mlp, max_length):
    from transformers import Gemma3TextConfig

    # local (sliding, short window) and global layers alternate
    layer_types = ["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(n_layers)]
    return Gemma3TextConfig(
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
        sliding_window=6,
        layer_types=layer_types,
        hidden_activation="gelu_pytorch_tanh",
    )


GEMMA3 = replace(GEMMA2, family="gemma3", model_types=("gemma3_text",), tiny_config=tiny_gemma3)
