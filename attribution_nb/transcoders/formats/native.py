"""attribution_nb's own safetensors (:meth:`Transcoder.save`): ``W_enc`` [d_model, F],
``W_dec``, ``b_enc``, ``b_dec``, optional ``threshold``, ``W_skip``, ``W_dec_later``;
activation and k in the metadata."""

from __future__ import annotations

from ..transcoder import Transcoder
from .base import Format, Probe, check_2d, need, w_enc_orientation


def detect(probe: Probe) -> bool:
    return (
        probe.is_safetensors
        and "activation_function.threshold" not in probe.tensors
        and w_enc_orientation(probe) == "d_F"
    )


def load(probe: Probe) -> Transcoder:
    need(
        probe.path,
        probe.tensors,
        ["W_enc", "W_dec", "b_enc", "b_dec"],
        "an attribution_nb transcoder",
    )
    for name in ("W_enc", "W_dec"):
        check_2d(probe.path, name, probe.tensors[name])
    return Transcoder.load(probe.path)


FORMAT = Format("attribution_nb", detect, load, __doc__)
