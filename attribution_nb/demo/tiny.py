"""Tiny random models of every registered architecture, over a small word vocabulary.

Tests use them to check the maths on every family: ``tiny_model("gemma2")`` builds a random
Gemma-2 from the tiny config its architecture module gives, with random transcoders.
"""

from __future__ import annotations

import torch

from ..architectures import ARCHITECTURES
from ..model import ReplacementModel
from ..transcoders import random_transcoders

# A small world of words, enough for the case-study prompts to tokenize.
WORDS = """
the a of is in and to it was on at by as an that this for with from
fact capital state city containing opposite small large big little hot cold
dallas houston austin texas california sacramento los angeles chicago illinois springfield
boston massachusetts seattle washington olympia miami florida tallahassee
he saw carrot had grab rabbit habit his hungry like starving
le la de est contraire petit grand lo contrario es pequeño grande
en fr es = . , : ? !
""".split()

SPECIAL = ["<unk>", "<bos>", "<pad>"]  # <bos> gets a non-zero id on purpose


def word_tokenizer(words: list[str] = WORDS):
    """A whitespace word-level tokenizer (a ``PreTrainedTokenizerFast``) that prepends ``<bos>``."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {
        tok: i
        for i, tok in enumerate(SPECIAL + [w for w in dict.fromkeys(words) if w not in SPECIAL])
    }
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    # as a real tokenizer does: "Fact: the capital of ... Dallas is" → fact : the capital of ... dallas is
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()]
    )
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A", special_tokens=[("<bos>", vocab["<bos>"])]
    )
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", unk_token="<unk>", pad_token="<pad>"
    )


#: every registered family (one tiny config each)
FAMILIES = tuple(ARCHITECTURES)


def tiny_config(
    family: str = "llama",
    *,
    vocab_size: int,
    d_model: int = 64,
    n_layers: int = 4,
    n_heads: int = 4,
    n_kv_heads: int = 2,
    d_mlp: int = 128,
    max_length: int = 256,
):
    """A transformers config for a tiny model of ``family`` (no download), from its architecture module."""
    arch = ARCHITECTURES.get(family)
    if arch is None or arch.tiny_config is None:
        raise ValueError(f"unknown family {family!r}; choose from {FAMILIES}")
    return arch.tiny_config(
        vocab_size=vocab_size,
        d_model=d_model,
        n_layers=n_layers,
        n_heads=n_heads,
        n_kv_heads=n_kv_heads,
        d_mlp=d_mlp,
        max_length=max_length,
    )


def tiny_model(
    family: str = "llama",
    *,
    seed: int = 0,
    d_model: int = 64,
    n_layers: int = 4,
    d_features: int = 256,
    activation: str = "jumprelu",
    skip: bool = False,
    cross_layer: bool = False,
    words: list[str] = WORDS,
    attn_implementation: str = "sdpa",
):
    """A tiny random ``ReplacementModel`` of ``family`` with random transcoders."""
    from transformers import AutoModelForCausalLM

    tokenizer = word_tokenizer(words)
    config = tiny_config(family, vocab_size=len(tokenizer), d_model=d_model, n_layers=n_layers)
    soft_capped = getattr(config, "attn_logit_softcapping", None) is not None
    config._attn_implementation = (
        "eager" if soft_capped else attn_implementation
    )  # soft-capping needs eager
    torch.manual_seed(seed)
    hf_model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    # Random init has tiny weights everywhere; larger ones make the toy model's residual
    # stream (and hence its graphs) less degenerate.
    with torch.no_grad():
        gen = torch.Generator().manual_seed(seed)
        for name, p in hf_model.named_parameters():
            if p.ndim == 2:
                p.copy_(torch.randn(p.shape, generator=gen) / p.shape[-1] ** 0.5)
            elif ("norm" in name or ".ln_" in name) and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.02 * torch.randn(p.shape, generator=gen))
    tcs = random_transcoders(
        d_model,
        n_layers,
        d_features,
        activation=activation,
        skip=skip,
        seed=seed + 1,
        cross_layer=cross_layer,
    )
    return ReplacementModel(hf_model, tokenizer, tcs, name=f"tiny-{family}")
