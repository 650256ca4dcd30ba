"""sae-lens folders (``SAE.save_model``): ``cfg.json`` (``architecture``, ``d_in``, ``d_sae``,
``apply_b_dec_to_input``, ``k`` — or ``activation_fn_kwargs.k`` in older versions) and
``sae_weights.safetensors`` (``W_enc`` [d_in, d_sae], ``W_dec``, ``b_enc``, ``b_dec``, optional
``b_dec_out``, ``threshold``, ``W_skip``).

As sae-lens computes them (checked against its own code in ``tests/transcoders/test_conformance.py``):
an SAE's input centring by ``b_dec`` is folded into ``b_enc`` (transcoders never centre); a skip
transcoder's ``W_skip`` is [d_out, d_in] and adds ``x @ W_skip.T``; JumpReLU is
``relu(pre) · (pre > threshold)``; TopK keeps the k largest pre-activations, then ReLU.  Run-time
input normalisation, reshaping and decoder-norm rescaling are refused by name.
"""

from __future__ import annotations

import os

from ...io import read_json, read_safetensors
from ..transcoder import Transcoder
from .base import Format, Probe, fail, from_parts, whole

ACTIVATION_OF = {
    "standard": "relu",
    "relu": "relu",
    "jumprelu": "jumprelu",
    "topk": "topk",
    "transcoder": "relu",
    "jumprelu_transcoder": "jumprelu",
    "skip_transcoder": "relu",
    "jumprelu_skip_transcoder": "jumprelu",
}
#: cfg.json settings that change the computation in ways a transcoder here does not reproduce
UNSUPPORTED = {
    "normalize_activations": "none",
    "reshape_activations": "none",
    "rescale_acts_by_decoder_norm": False,
}


def detect(probe: Probe) -> bool:
    """A folder holding sae-lens's weights file, or its cfg.json without sparsify's weights (so a
    damaged sae-lens folder is named as one); any other folder is left unclaimed."""
    return probe.has("sae_weights.safetensors") or (
        probe.has("cfg.json") and not probe.has("sae.safetensors")
    )


def load(probe: Probe) -> Transcoder:
    folder = probe.path
    cfg_path = os.path.join(folder, "cfg.json")
    if not os.path.isfile(cfg_path):
        raise FileNotFoundError(f"{folder}: a sae-lens folder needs cfg.json")
    cfg = read_json(cfg_path, "sae-lens cfg.json")
    weights = os.path.join(folder, "sae_weights.safetensors")
    tensors, _ = read_safetensors(weights)
    missing = [k for k in ("W_enc", "W_dec", "b_enc", "b_dec") if k not in tensors]
    if missing:
        raise fail(weights, f"missing tensors {missing}; found {sorted(tensors)}")
    arch = cfg.get("architecture", "standard")
    activation = ACTIVATION_OF.get(arch)
    if activation is None:
        raise fail(cfg_path, f"architecture {arch!r} is not supported ({', '.join(ACTIVATION_OF)})")
    for key, plain in UNSUPPORTED.items():
        if cfg.get(key, plain) not in (plain, None):
            raise fail(cfg_path, f"{key}={cfg[key]!r} is not supported (only {plain!r})")
    for key, dim in (("d_in", tensors["W_enc"].shape[0]), ("d_sae", tensors["W_enc"].shape[1])):
        if key in cfg and whole(cfg_path, key, cfg[key]) != dim:
            raise fail(
                weights,
                f"W_enc has shape {tuple(tensors['W_enc'].shape)} but cfg.json says {key}={cfg[key]}",
            )
    if type(cfg.get("apply_b_dec_to_input", False)) is not bool:
        raise fail(
            cfg_path,
            f"apply_b_dec_to_input must be true or false, got {cfg['apply_b_dec_to_input']!r}",
        )
    W_enc, b_enc = tensors["W_enc"], tensors["b_enc"]
    b_dec_in = tensors["b_dec"]
    if cfg.get("apply_b_dec_to_input", False) and not arch.endswith("transcoder"):
        if len(b_dec_in) != W_enc.shape[0]:
            raise fail(cfg_path, "apply_b_dec_to_input needs b_dec of size d_in")
        b_enc = b_enc - b_dec_in @ W_enc  # (x − b_dec) W + b  ==  x W + (b − b_dec W)
    b_out = tensors.get("b_dec_out", tensors["b_dec"])
    k = (
        (cfg.get("k") or (cfg.get("activation_fn_kwargs") or {}).get("k"))
        if activation == "topk"
        else None
    )
    if activation == "topk" and k is None:
        raise fail(cfg_path, "a topk architecture needs k (or activation_fn_kwargs.k)")
    k = whole(cfg_path, "k", k) if k is not None else None
    threshold = tensors.get("threshold")
    if threshold is not None and bool(
        (threshold < 0).any()
    ):  # sae-lens: relu(pre) · (pre > t); here pre · (pre > t)
        raise fail(
            weights,
            "negative JumpReLU thresholds are not supported (sae-lens zeroes negative pre-activations)",
        )
    skip = tensors.get("W_skip")
    if (
        skip is not None and "skip" in arch
    ):  # sae-lens' skip transcoders: [d_out, d_in], x @ W_skip.T
        skip = skip.T
    return from_parts(
        weights, W_enc, b_enc, tensors["W_dec"], b_out, threshold, skip, activation=activation, k=k
    )


FORMAT = Format("sae-lens", detect, load, __doc__)
