"""Llama-style families: Llama, Mistral, Qwen2, Qwen3 (pre-norm RMSNorm blocks, SwiGLU MLP).

Transcoders read the MLP's input (after ``post_attention_layernorm``) and replace its output.
Qwen2 has biases on q/k/v; Qwen3 has q/k norms, which act on the projections' outputs
(detached to freeze attention), so neither changes anything here.
"""

from __future__ import annotations

from .base import Architecture


def _common(vocab_size, d_model, n_layers, n_heads, n_kv_heads, d_mlp, max_length) -> dict:
    return dict(
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
    )


def tiny_llama(**sizes):
    from transformers import LlamaConfig

    return LlamaConfig(**_common(**sizes))


def tiny_qwen2(**sizes):
    from transformers import Qwen2Config

    return Qwen2Config(**_common(**sizes))  # q/k/v projections with biases


def tiny_qwen3(**sizes):
    from transformers import Qwen3Config

    return Qwen3Config(
        head_dim=sizes["d_model"] // sizes["n_heads"], **_common(**sizes)
    )  # q/k norms


def _refuse(config) -> list[str]:
    if (getattr(config, "pretraining_tp", 1) or 1) > 1:
        return [f"pretraining_tp={config.pretraining_tp} (split projections)"]
    return []


LLAMA = Architecture("llama", ("llama", "mistral"), refuse=_refuse, tiny_config=tiny_llama)
QWEN2 = Architecture("qwen2", ("qwen2",), refuse=_refuse, tiny_config=tiny_qwen2)
QWEN3 = Architecture("qwen3", ("qwen3",), refuse=_refuse, tiny_config=tiny_qwen3)
