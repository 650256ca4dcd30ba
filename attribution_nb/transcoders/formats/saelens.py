"""sae-lens style folders: ``cfg.json`` (``architecture``, ``d_in``, ``d_sae``, optional
``apply_b_dec_to_input``, ``activation_fn_kwargs.k``) and ``sae_weights.safetensors``
(``W_enc`` [d_in, d_sae], ``W_dec``, ``b_enc``, ``b_dec``, optional ``b_dec_out``, ``threshold``,
``W_skip``).  Input centring by ``b_dec`` is folded into ``b_enc``."""

from __future__ import annotations

import json
import os

from ...io import read_safetensors
from ..transcoder import Transcoder
from .base import Format, Probe, fail, from_parts

ACTIVATION_OF = {"standard": "relu", "relu": "relu", "jumprelu": "jumprelu", "topk": "topk",
                 "transcoder": "relu", "jumprelu_transcoder": "jumprelu", "skip_transcoder": "relu"}


def detect(probe: Probe) -> bool:
    return probe.has("sae_weights.safetensors") or (probe.is_dir and not probe.has("sae.safetensors"))


def load(probe: Probe) -> Transcoder:
    folder = probe.path
    cfg_path = os.path.join(folder, "cfg.json")
    if not os.path.isfile(cfg_path):
        raise FileNotFoundError(f"{folder}: a sae-lens folder needs cfg.json")
    with open(cfg_path) as f:
        cfg = json.load(f)
    weights = os.path.join(folder, "sae_weights.safetensors")
    tensors, _ = read_safetensors(weights)
    missing = [k for k in ("W_enc", "W_dec", "b_enc", "b_dec") if k not in tensors]
    if missing:
        raise fail(weights, f"missing tensors {missing}; found {sorted(tensors)}")
    arch = cfg.get("architecture", "standard")
    activation = ACTIVATION_OF.get(arch)
    if activation is None:
        raise fail(cfg_path, f"architecture {arch!r} is not supported (standard, jumprelu, topk, *transcoder)")
    for key, dim in (("d_in", tensors["W_enc"].shape[0]), ("d_sae", tensors["W_enc"].shape[1])):
        if key in cfg and int(cfg[key]) != dim:
            raise fail(weights, f"W_enc has shape {tuple(tensors['W_enc'].shape)} but cfg.json says {key}={cfg[key]}")
    W_enc, b_enc = tensors["W_enc"], tensors["b_enc"]
    b_dec_in = tensors["b_dec"]
    if cfg.get("apply_b_dec_to_input", False):
        if len(b_dec_in) != W_enc.shape[0]:
            raise fail(cfg_path, "apply_b_dec_to_input needs b_dec of size d_in")
        b_enc = b_enc - b_dec_in @ W_enc          # (x − b_dec) W + b  ==  x W + (b − b_dec W)
    b_out = tensors.get("b_dec_out", tensors["b_dec"])
    k = (cfg.get("activation_fn_kwargs") or {}).get("k") if activation == "topk" else None
    if activation == "topk" and k is None:
        raise fail(cfg_path, "a topk architecture needs activation_fn_kwargs.k")
    return from_parts(weights, W_enc, b_enc, tensors["W_dec"], b_out, tensors.get("threshold"), tensors.get("W_skip"),
                      activation=activation, k=k)


FORMAT = Format("sae-lens", detect, load, __doc__)
