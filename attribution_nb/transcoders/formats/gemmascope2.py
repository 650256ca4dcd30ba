"""GemmaScope 2 safetensors: ``w_enc`` [d_model, F], ``w_dec``, ``b_enc``, ``b_dec``,
``threshold``, optional ``affine_skip_connection`` [d_model, d_model] (applied as ``x @ A.T``)."""

from __future__ import annotations

from ..transcoder import Transcoder
from .base import Format, Probe, check_2d, from_parts, need


def detect(probe: Probe) -> bool:
    return probe.is_safetensors and "w_enc" in probe.tensors


def load(probe: Probe) -> Transcoder:
    t = probe.tensors
    need(
        probe.path,
        t,
        ["w_enc", "w_dec", "b_enc", "b_dec", "threshold"],
        "a gemmascope-2 transcoder",
    )
    for name in ("w_enc", "w_dec"):
        check_2d(probe.path, name, t[name])
    skip = t.get("affine_skip_connection")
    return from_parts(
        probe.path,
        t["w_enc"],
        t["b_enc"],
        t["w_dec"],
        t["b_dec"],
        t["threshold"],
        None if skip is None else skip.T,
    )


FORMAT = Format("gemmascope-2", detect, load, __doc__)
