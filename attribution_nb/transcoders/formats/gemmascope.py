"""GemmaScope ``params.npz`` (numpy, read with ``allow_pickle=False``): ``W_enc`` [d_model, F],
``W_dec`` [F, d_model], ``b_enc``, ``b_dec``, ``threshold`` (JumpReLU)."""

from __future__ import annotations

import zipfile

import numpy as np
import torch

from ..transcoder import Transcoder
from .base import Format, Probe, fail, from_parts


def detect(probe: Probe) -> bool:
    return probe.path.endswith(".npz")


def load(probe: Probe) -> Transcoder:
    try:
        with np.load(probe.path, allow_pickle=False) as f:
            arrays = {k: torch.from_numpy(np.asarray(f[k], dtype=np.float32)) for k in f.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise fail(probe.path, f"not a readable .npz file ({err})") from None
    missing = [k for k in ("W_enc", "W_dec", "b_enc", "b_dec", "threshold") if k not in arrays]
    if missing:
        raise fail(
            probe.path,
            f"a GemmaScope params.npz needs W_enc, W_dec, b_enc, b_dec, threshold; "
            f"missing {missing}",
        )
    return from_parts(
        probe.path,
        arrays["W_enc"],
        arrays["b_enc"],
        arrays["W_dec"],
        arrays["b_dec"],
        arrays["threshold"],
    )


FORMAT = Format("gemmascope", detect, load, __doc__)
