"""Architecture families and their registry.

One module per family states its read and write points, norm kind, attention freezing and a
tiny config for tests; adding a family is one module plus one line in ``ARCHITECTURES``.  The
registry feeds :class:`~attribution_nb.ReplacementModel` (which family a Hugging Face model
is, checked against what the family handles), the tiny random models of
:mod:`attribution_nb.demo`, and the tests' independent reference model (its block layout).
"""

from __future__ import annotations

from .base import Architecture, frozen_norm, get_module, norm_eps, rms_normalize
from .gemma2 import GEMMA2
from .gemma3 import GEMMA3
from .gpt2 import GPT2
from .llama import LLAMA, QWEN2, QWEN3

#: family name -> architecture
ARCHITECTURES: dict[str, Architecture] = {
    a.family: a for a in (LLAMA, QWEN2, QWEN3, GEMMA2, GEMMA3, GPT2)
}


def architecture_for(hf_model) -> Architecture:
    """The registered family of ``hf_model`` (by ``config.model_type``), checked against its config."""
    model_type = getattr(hf_model.config, "model_type", None)
    for arch in ARCHITECTURES.values():
        if model_type in arch.model_types:
            arch.check(hf_model)
            return arch
    known = sorted(t for a in ARCHITECTURES.values() for t in a.model_types)
    raise ValueError(
        f"unsupported architecture {model_type!r}; supported model types: {known} "
        "(pass architecture=Architecture(...) to describe a new one)"
    )


__all__ = [
    "ARCHITECTURES",
    "Architecture",
    "architecture_for",
    "frozen_norm",
    "get_module",
    "norm_eps",
    "rms_normalize",
]
