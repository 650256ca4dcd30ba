"""What a transcoder format is: a name, a cheap ``detect`` and a ``load``, over a :class:`Probe`."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ...io import read_safetensors
from ..transcoder import Transcoder


class Probe:
    """A path being identified: whether it is a folder, its suffix, and (read once, on first
    use) the tensors of a safetensors file."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        self.is_dir = os.path.isdir(self.path)
        self._tensors: dict[str, torch.Tensor] | None = None

    def has(self, name: str) -> bool:
        """Whether the folder holds a file ``name``."""
        return self.is_dir and os.path.isfile(os.path.join(self.path, name))

    @property
    def is_safetensors(self) -> bool:
        return not self.is_dir and not self.path.endswith(".npz")

    @property
    def tensors(self) -> dict[str, torch.Tensor]:
        if self._tensors is None:
            self._tensors = read_safetensors(self.path)[0]
        return self._tensors


@dataclass(frozen=True)
class Format:
    """A published per-layer transcoder layout: ``detect(probe)`` says whether a path is in it,
    ``load(probe)`` reads it."""

    name: str
    detect: Callable[[Probe], bool]
    load: Callable[[Probe], Transcoder]
    doc: str = field(default="", compare=False)


def fail(path, why: str) -> ValueError:
    return ValueError(f"{os.fspath(path)}: {why}")


def whole(path, key: str, value) -> int:
    """A config value that must be a non-negative whole number (an int, a float equal to one, or such a
    string), else a ``ValueError`` naming the file, the key and the value."""
    v = value
    if isinstance(v, str) and v.strip().isdigit() and v.strip().isascii():
        v = int(v)
    if (
        isinstance(v, bool)
        or not isinstance(v, int | float)
        or not math.isfinite(v)
        or v != int(v)
        or v < 0
    ):
        raise fail(path, f"{key} must be a whole number, got {value!r}")
    return int(v)


def need(path, tensors: dict, keys: list[str], what: str) -> None:
    missing = [k for k in keys if k not in tensors]
    if missing:
        raise fail(path, f"{what} needs {keys}; missing {missing}")


def check_2d(path, name: str, t: torch.Tensor) -> None:
    if t.ndim != 2:
        raise fail(path, f"{name} must be 2-D, got shape {tuple(t.shape)}")


def from_parts(
    path,
    W_enc,
    b_enc,
    W_dec,
    b_dec,
    threshold=None,
    W_skip=None,
    activation=None,
    k=None,
    W_dec_later=None,
) -> Transcoder:
    """A :class:`Transcoder` from GemmaScope-oriented parts, errors prefixed with the file."""
    activation = activation or ("jumprelu" if threshold is not None else "relu")
    try:
        return Transcoder(
            W_enc,
            b_enc,
            W_dec,
            b_dec,
            activation,
            threshold=threshold,
            k=k,
            W_skip=W_skip,
            W_dec_later=W_dec_later,
        )
    except (ValueError, TypeError) as err:
        raise fail(path, str(err)) from None


def w_enc_orientation(probe: Probe) -> str | None:
    """``"d_F"`` for W_enc [d_model, F] (GemmaScope / attribution_nb), ``"F_d"`` for [F, d_model]
    (circuit-tracer), None where unknown; refuses shapes that fit neither or both."""
    t = probe.tensors
    if not {"W_enc", "b_enc", "b_dec"} <= set(t):
        return None
    F, d = len(t["b_enc"]), len(t["b_dec"])
    shape = tuple(t["W_enc"].shape)
    if shape == (d, F) and shape != (F, d):
        return "d_F"
    if shape == (F, d) and shape != (d, F):
        return "F_d"
    if shape == (d, F):
        raise fail(
            probe.path, f"W_enc is square {shape}: say layout='attribution_nb' or 'circuit-tracer'"
        )
    raise fail(
        probe.path,
        f"W_enc has shape {shape}, which fits neither [d_model={d}, F={F}] nor [F, d_model]",
    )
