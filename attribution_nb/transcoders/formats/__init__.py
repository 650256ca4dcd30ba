"""Transcoders in the layouts others publish, registered as (detect, load) pairs, and presets.

Per layer (:func:`load_transcoder`), one module per layout, tried in ``FORMATS`` order (adding
a layout is one module plus one line there):

* ``gemmascope``: GemmaScope ``params.npz`` (read with ``allow_pickle=False``);
* ``gemmascope-2``: GemmaScope 2 safetensors (``w_enc`` …);
* ``circuit-tracer``: circuit-tracer's per-layer safetensors (``W_enc`` [F, d_model]);
* ``attribution_nb``: this package's own safetensors (``W_enc`` [d_model, F]);
* ``sparsify``: EleutherAI sparsify folders (``cfg.json`` + ``sae.safetensors``);
* ``sae-lens``: sae-lens folders (``cfg.json`` + ``sae_weights.safetensors``).

Per set (:func:`load_transcoders`): a folder written by :meth:`TranscoderSet.save`; a
circuit-tracer cross-layer folder; a circuit-tracer ``config.yaml`` (local or ``hf://``); a
list of per-layer paths; or a preset name from ``PRESETS`` (``presets.json``: hub paths, so
only with network access).
"""

from __future__ import annotations

import json
import os

import torch

from ..set import TranscoderSet
from ..transcoder import Transcoder
from . import circuit_tracer, gemmascope, gemmascope2, native, saelens, sparsify
from .base import Format, Probe
from .sets import config_yaml_paths, hf_path, hub_download, load_circuit_tracer_clt

#: per-layer layouts, in the order they are tried
FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        gemmascope.FORMAT,
        gemmascope2.FORMAT,
        circuit_tracer.FORMAT,
        native.FORMAT,
        sparsify.FORMAT,
        saelens.FORMAT,
    )
}

with open(os.path.join(os.path.dirname(__file__), "presets.json"), encoding="utf-8") as _f:
    #: published transcoder sets: the model they belong to and circuit-tracer-style configs on the hub
    PRESETS: dict[str, dict[str, str]] = json.load(_f)


def load_transcoder(path, *, layout: str | None = None) -> Transcoder:
    """One layer's transcoder from ``path`` in any layout of ``FORMATS``; ``layout`` (one of its
    names) skips the guessing."""
    if layout is not None and layout not in FORMATS:
        raise ValueError(f"unknown layout {layout!r}; choose one of {tuple(FORMATS)}")
    probe = Probe(path)
    if layout is not None:
        return FORMATS[layout].load(probe)
    for fmt in FORMATS.values():
        if fmt.detect(probe):
            return fmt.load(probe)
    if probe.is_dir:
        held = sorted(os.listdir(probe.path))
        raise ValueError(
            f"{probe.path}: unknown transcoder layout: a folder holding {held[:8]}"
            f"{' …' if len(held) > 8 else ''}; expected sae_weights.safetensors and cfg.json (sae-lens) "
            f"or sae.safetensors and cfg.json (sparsify)"
        )
    raise ValueError(
        f"{probe.path}: unknown transcoder layout: tensors {sorted(probe.tensors)}; expected "
        f"W_enc/W_dec/b_enc/b_dec (attribution_nb, circuit-tracer) or w_enc/w_dec (GemmaScope 2)"
    )


def load_transcoders(
    source,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    download=None,
    mmap: bool | None = None,
) -> TranscoderSet:
    """A :class:`TranscoderSet` from a folder, a list of per-layer paths, a circuit-tracer
    ``config.yaml`` (local or ``hf://``), or a preset name (see ``PRESETS``).

    A folder written by :meth:`TranscoderSet.save` is memory-mapped on the CPU when its layer
    files are large (``mmap=None``: 64 MiB or more; ``True``/``False`` to choose): weights stay
    in the file and an attribution holds one layer's encoder and the active features' decoder
    rows at a time (:meth:`Transcoder.load`).  Other layouts are read into memory.

    ``download(repo_id, filename) -> local path`` resolves ``hf://`` paths; by default
    huggingface_hub's ``hf_hub_download`` (network needed the first time, cached after).
    """
    download = download or hub_download
    if isinstance(source, str) and source in PRESETS:
        source = PRESETS[source]["transcoders"]
    if isinstance(source, (list, tuple)):
        tcs = [
            load_transcoder(hf_path(p, download) if str(p).startswith("hf://") else p)
            for p in source
        ]
    else:
        source = os.fspath(source)
        if source.startswith("hf://"):
            source = hf_path(source, download)
        if os.path.isdir(source) and os.path.isfile(os.path.join(source, "index.json")):
            return TranscoderSet.load(source, device=device, dtype=dtype, mmap=mmap)
        if os.path.isdir(source) and os.path.isfile(os.path.join(source, "W_enc_0.safetensors")):
            tcs = load_circuit_tracer_clt(source)
        else:
            tcs = [load_transcoder(p) for p in config_yaml_paths(source, download, PRESETS)]
    if not tcs:
        raise ValueError(f"no transcoders in {source!r}: give one per layer")
    d = {tc.d_model for tc in tcs}
    if len(d) != 1:
        raise ValueError(f"the transcoders disagree on d_model: {sorted(d)}")
    tcs = [tc.to(device=device, dtype=dtype) if dtype is not None else tc.to(device) for tc in tcs]
    return TranscoderSet(tcs)


__all__ = [
    "FORMATS",
    "PRESETS",
    "Format",
    "load_circuit_tracer_clt",
    "load_transcoder",
    "load_transcoders",
]
