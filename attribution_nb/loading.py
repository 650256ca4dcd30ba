"""``load_model``: the embedded demo model, a preset, or a local folder (or a hub id, remotely)."""

from __future__ import annotations

import os

import torch

from .demo import load_demo_model
from .model import ReplacementModel
from .pretrained import load_pretrained
from .transcoders import PRESETS


def _check_demo_arguments(transcoders, device, dtype, gguf_file, remote) -> None:
    """The demo model takes none of these: refuse the ones given, by name."""
    unused = {
        k: v for k, v in [("transcoders", transcoders), ("gguf_file", gguf_file)] if v is not None
    }
    unused.update({k: v for k, v in [("remote", remote)] if v is not False})
    unused.update({"device": device} if torch.device(device).type != "cpu" else {})
    unused.update({"dtype": dtype} if dtype != torch.float32 else {})
    if unused:
        raise ValueError(
            f"the demo model ships with its own transcoders and runs on the CPU in float32; "
            f"it does not take {', '.join(f'{k}={v!r}' for k, v in unused.items())}"
        )


def load_model(
    name: str | None = None,
    *,
    transcoders=None,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    gguf_file: str | None = None,
    remote: bool | str = False,
) -> ReplacementModel:
    """Load a replacement model.

    * ``load_model()`` (or ``"demo"``): the embedded demo model, offline, on the CPU.
    * ``load_model(folder, transcoders=...)``: a local Hugging Face model folder (or a GGUF
      file's folder with ``gguf_file=``) and its transcoders: a folder written by
      :meth:`TranscoderSet.save`, a circuit-tracer ``config.yaml`` folder, a list of per-layer
      files (GemmaScope ``.npz``, circuit-tracer or attribution_nb safetensors, sae-lens or
      sparsify folders), a preset name, or ``Transcoder`` objects (see
      :mod:`attribution_nb.transcoders.formats`).
    * ``load_model(preset)`` with a name from ``PRESETS`` (``"gemma-2-2b"``,
      ``"llama-3.2-1b"``, ``"qwen3-4b"``): the model and its published transcoders from the
      Hugging Face hub (network needed the first time; a GPU advised: ``device="cuda"``,
      ``dtype=torch.bfloat16``).
    * ``remote=True`` (or a server URL, or ``"local"`` to simulate one): ``name`` may also be a
      hub id; the model's weights are not loaded here (nnsight builds it on the meta device,
      from its config); its traces run on NDIF, which must host that model.  Transcoders are
      loaded here, on the CPU.
    """
    _check_arguments(name, device, dtype, gguf_file, remote)
    if name in (None, "demo"):
        _check_demo_arguments(transcoders, device, dtype, gguf_file, remote)
        return load_demo_model()
    if not isinstance(name, str | os.PathLike):
        raise TypeError(
            f"name must be 'demo', a preset name or a model folder, got {type(name).__name__} {name!r}"
        )
    name = os.fspath(name)
    model_id = name
    if name in PRESETS:
        model_id = PRESETS[name]["model"]
        transcoders = transcoders if transcoders is not None else PRESETS[name]["transcoders"]
    elif not os.path.isdir(name) and not remote:
        raise ValueError(
            f"model {name!r} is neither a local folder nor a preset ({sorted(PRESETS)}); "
            "a hub id is accepted with remote=True"
        )
    if transcoders is None:
        raise ValueError(
            f"model {name!r} needs transcoders= (a folder, a config.yaml, per-layer files, "
            "a preset name or Transcoder objects)"
        )
    return load_pretrained(
        model_id,
        transcoders,
        name=os.path.basename(os.path.normpath(name)),
        device=device,
        dtype=dtype,
        gguf_file=gguf_file,
        remote=remote,
    )


def _check_arguments(name, device, dtype, gguf_file, remote) -> None:
    """Refuse, by name, arguments of the wrong type before anything is loaded."""
    try:
        torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(
            f"device must name a torch device such as 'cpu', 'cuda' or 'cuda:1', got {device!r}"
        ) from None
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(
            f"dtype must be a floating torch dtype (torch.float32, torch.bfloat16, …), got {dtype!r}"
        )
    if gguf_file is not None and not isinstance(gguf_file, str):
        raise TypeError(f"gguf_file must be a file name, got {gguf_file!r}")
    if not isinstance(remote, bool | str):
        raise TypeError(f"remote must be True, False, 'local' or a server URL, got {remote!r}")
