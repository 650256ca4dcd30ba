"""The embedded demo model, and tiny random models of each supported architecture.

The trained toy-world model lives in ``attribution_nb/demo_model/`` (made by
``python -m attribution_nb.demo_train``); where it is absent, ``load_demo_model()`` builds a
tiny random Llama with random JumpReLU transcoders over a small word vocabulary, and says so.  ``tiny_model`` builds the same kind of model
for any supported family; tests use it to check the maths on every architecture.
"""

from __future__ import annotations

import os
import warnings

import torch

from .transcoders import random_transcoders

DEMO_DIR = os.path.join(os.path.dirname(__file__), "demo_model")

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

SPECIAL = ["<unk>", "<bos>", "<pad>"]   # <bos> gets a non-zero id on purpose


def word_tokenizer(words: list[str] = WORDS):
    """A whitespace word-level tokenizer (a ``PreTrainedTokenizerFast``) that prepends ``<bos>``."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, decoders
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIAL + [w for w in dict.fromkeys(words) if w not in SPECIAL])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.normalizer = None
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", vocab["<bos>"])])
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", unk_token="<unk>", pad_token="<pad>")


FAMILIES = ("llama", "qwen2", "qwen3", "gemma2", "gpt2")


def tiny_config(family: str = "llama", *, vocab_size: int, d_model: int = 64, n_layers: int = 4,
                n_heads: int = 4, n_kv_heads: int = 2, d_mlp: int = 128, max_length: int = 256):
    """A transformers config for a tiny model of ``family`` (no download)."""
    common = dict(vocab_size=vocab_size, hidden_size=d_model, intermediate_size=d_mlp,
                  num_hidden_layers=n_layers, num_attention_heads=n_heads, num_key_value_heads=n_kv_heads,
                  max_position_embeddings=max_length, bos_token_id=1, eos_token_id=2, pad_token_id=2,
                  tie_word_embeddings=False)
    if family == "llama":
        from transformers import LlamaConfig
        return LlamaConfig(**common)
    if family == "qwen2":
        from transformers import Qwen2Config
        return Qwen2Config(**common)   # q/k/v projections with biases
    if family == "qwen3":
        from transformers import Qwen3Config
        return Qwen3Config(head_dim=d_model // n_heads, **common)   # q/k norms
    if family == "gpt2":
        from transformers import GPT2Config
        return GPT2Config(vocab_size=vocab_size, n_embd=d_model, n_layer=n_layers, n_head=n_heads, n_inner=d_mlp,
                          n_positions=max_length, bos_token_id=1, eos_token_id=2, pad_token_id=2)
    if family == "gemma2":
        from transformers import Gemma2Config
        # soft-capped attention and logits, post-norms, and a sliding window short enough to matter
        return Gemma2Config(head_dim=d_model // n_heads, query_pre_attn_scalar=d_model // n_heads,
                            attn_logit_softcapping=50.0, final_logit_softcapping=30.0, sliding_window=6,
                            hidden_activation="gelu_pytorch_tanh", **common)
    raise ValueError(f"unknown family {family!r}; choose from {FAMILIES}")


def tiny_model(family: str = "llama", *, seed: int = 0, d_model: int = 64, n_layers: int = 4,
               d_features: int = 256, activation: str = "jumprelu", skip: bool = False, cross_layer: bool = False,
               words: list[str] = WORDS, attn_implementation: str = "sdpa"):
    """A tiny random ``ReplacementModel`` of ``family`` with random transcoders."""
    from transformers import AutoModelForCausalLM
    from .model import ReplacementModel

    tokenizer = word_tokenizer(words)
    config = tiny_config(family, vocab_size=len(tokenizer), d_model=d_model, n_layers=n_layers)
    config._attn_implementation = "eager" if family == "gemma2" else attn_implementation   # soft-capping needs eager
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
    tcs = random_transcoders(d_model, n_layers, d_features, activation=activation, skip=skip, seed=seed + 1,
                             cross_layer=cross_layer)
    return ReplacementModel(hf_model, tokenizer, tcs, name=f"tiny-{family}")


def load_demo_model(folder: str = DEMO_DIR):
    """The embedded demo model with its transcoders and feature labels (offline, CPU).

    Falls back to a tiny random Llama, with a warning, where the trained files are absent.
    """
    if not os.path.isfile(os.path.join(folder, "config.json")):
        warnings.warn("the trained demo model is not shipped yet: using a tiny random Llama with random "
                      "transcoders (graphs are well-formed but carry no meaning)", stacklevel=2)
        return tiny_model("llama", seed=0)
    import json
    from .model import load_model
    model = load_model(folder, transcoders=os.path.join(folder, "transcoders"))
    model.name = "demo"
    with open(os.path.join(folder, "features.json"), encoding="utf-8") as f:
        features = json.load(f)
    key = lambda k: tuple(int(x) for x in k.split(":"))
    model.feature_labels = {key(k): v for k, v in features["labels"].items()}
    model.feature_contexts = {key(k): v for k, v in features["contexts"].items()}
    return model
