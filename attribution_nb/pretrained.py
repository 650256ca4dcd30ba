"""A replacement model from a local Hugging Face folder (or a GGUF file's folder, or a hub id
for remote runs) and its transcoders."""

from __future__ import annotations

import os

import torch

from .checks import require
from .model import ReplacementModel
from .transcoders import load_transcoders


def _is_paths(transcoders) -> bool:
    return isinstance(transcoders, (str, os.PathLike)) or (
        isinstance(transcoders, (list, tuple))
        and bool(transcoders)
        and isinstance(transcoders[0], (str, os.PathLike))
    )


def _weights(model_id: str, dtype: torch.dtype, extra: dict):
    """The Hugging Face model in ``model_id``; a damaged weights file is named (not a raw loader error)."""
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM

    try:
        return AutoModelForCausalLM.from_pretrained(model_id, dtype=dtype, **extra)
    except (SafetensorError, OSError, EOFError) as err:
        raise ValueError(
            f"{model_id}: its weights cannot be read (a truncated or damaged file?): {err}"
        ) from None


def load_pretrained(
    model_id: str,
    transcoders,
    *,
    name: str,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    gguf_file: str | None = None,
    remote: bool | str = False,
) -> ReplacementModel:
    """The model at ``model_id`` (a folder; a hub id with ``remote``) with ``transcoders`` (paths
    for :func:`~attribution_nb.transcoders.load_transcoders`, or ``Transcoder`` objects)."""
    from transformers import AutoTokenizer

    extra = {"gguf_file": gguf_file} if gguf_file else {}
    if gguf_file:
        require("gguf")
    tokenizer = AutoTokenizer.from_pretrained(model_id, **extra)
    if remote:
        if device != "cpu":
            raise ValueError(
                f"device={device!r} with remote={remote!r}: the server places the model; "
                "this side (the transcoders) stays on the CPU, so leave device='cpu'"
            )
        from nnsight.modeling.transformers import TransformersModel

        hf_model = TransformersModel(
            model_id, task="text-generation", tokenizer=tokenizer, dtype=dtype, **extra
        )
    else:
        hf_model = _weights(model_id, dtype, extra).to(device)
    if _is_paths(transcoders):
        transcoders = load_transcoders(transcoders, device=device, dtype=dtype)
    return ReplacementModel(hf_model, tokenizer, transcoders, name=name, remote=remote)
