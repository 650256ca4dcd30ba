"""Transcoders: the per-layer (or cross-layer) sparse replacements of a model's MLPs.

* :mod:`.transcoder`: one layer's :class:`Transcoder` (the maths, its writes layer by layer);
* :mod:`.activations`: the activation registry (ReLU, JumpReLU, TopK);
* :mod:`.set`: :class:`TranscoderSet` (one per layer, encoding a whole capture) and random sets;
* :mod:`.formats`: published file layouts (a registry of detect/load pairs) and presets.
"""

from __future__ import annotations

from .activations import ACTIVATIONS
from .formats import FORMATS, PRESETS, load_transcoder, load_transcoders
from .set import TranscoderSet, calibrated_transcoders, mlp_inputs_on, random_transcoders
from .transcoder import Transcoder

__all__ = [
    "ACTIVATIONS",
    "FORMATS",
    "PRESETS",
    "Transcoder",
    "TranscoderSet",
    "load_transcoder",
    "load_transcoders",
    "random_transcoders",
    "calibrated_transcoders",
    "mlp_inputs_on",
]
