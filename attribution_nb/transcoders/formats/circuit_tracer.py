"""circuit-tracer's per-layer safetensors: ``W_enc`` [F, d_model] (transposed relative to
GemmaScope), ``W_dec`` [F, d_model], ``b_enc``, ``b_dec``, optional
``activation_function.threshold`` (JumpReLU, else ReLU) and ``W_skip`` (applied as
``x @ W_skip.T``)."""

from __future__ import annotations

from ..transcoder import Transcoder
from .base import Format, Probe, check_2d, from_parts, need, w_enc_orientation


def detect(probe: Probe) -> bool:
    return probe.is_safetensors and (
        "activation_function.threshold" in probe.tensors or w_enc_orientation(probe) == "F_d"
    )


def load(probe: Probe) -> Transcoder:
    t = probe.tensors
    need(probe.path, t, ["W_enc", "W_dec", "b_enc", "b_dec"], "a circuit-tracer transcoder")
    for name in ("W_enc", "W_dec"):
        check_2d(probe.path, name, t[name])
    skip = t.get("W_skip")
    return from_parts(
        probe.path,
        t["W_enc"].T,
        t["b_enc"],
        t["W_dec"],
        t["b_dec"],
        t.get("activation_function.threshold"),
        None if skip is None else skip.T,
    )


FORMAT = Format("circuit-tracer", detect, load, __doc__)
