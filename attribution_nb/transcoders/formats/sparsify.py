"""EleutherAI sparsify folders (``SparseCoder.save_to_disk``; e.g. the skip transcoders for
Llama-3.2-1B): ``cfg.json`` (``d_in``, ``k``, ``num_latents``, ``transcode``,
``skip_connection``, ``activation``) and ``sae.safetensors`` with ``encoder.weight``
[F, d_in] (a ``torch.nn.Linear``), ``encoder.bias`` [F], ``W_dec`` [F, d_in], ``b_dec`` [d_in]
and, with a skip connection, ``W_skip`` [d_in, d_in] applied as ``x @ W_skip.T``.

Its encoder keeps the k largest of ``relu(x @ W.T + b)`` — our TopK.  A sparse *autoencoder*
(``transcode`` false) subtracts ``b_dec`` from its input first; that is folded into the
encoder bias.  Only the ``topk`` activation is read (``groupmax`` is refused by name).
"""

from __future__ import annotations

import os

from ...io import read_json, read_safetensors
from ..transcoder import Transcoder
from .base import Format, Probe, check_2d, fail, from_parts, whole


def detect(probe: Probe) -> bool:
    return probe.has("sae.safetensors")


def load(probe: Probe) -> Transcoder:
    cfg_path = os.path.join(probe.path, "cfg.json")
    if not os.path.isfile(cfg_path):
        raise FileNotFoundError(
            f"{probe.path}: a sparsify folder needs cfg.json beside sae.safetensors"
        )
    cfg = read_json(cfg_path, "sparsify cfg.json")
    weights = os.path.join(probe.path, "sae.safetensors")
    t, _ = read_safetensors(weights)
    missing = [k for k in ("encoder.weight", "encoder.bias", "W_dec", "b_dec") if k not in t]
    if missing:
        raise fail(
            weights,
            f"a sparsify coder needs encoder.weight, encoder.bias, W_dec, b_dec; missing {missing}",
        )
    if cfg.get("activation", "topk") != "topk":
        raise fail(cfg_path, f"activation {cfg['activation']!r} is not supported (only 'topk')")
    if "k" not in cfg:
        raise fail(cfg_path, "a sparsify coder needs k (its number of active latents)")
    check_2d(weights, "encoder.weight", t["encoder.weight"])
    W_enc = t["encoder.weight"].T  # [d_in, F]
    if "d_in" in cfg and whole(cfg_path, "d_in", cfg["d_in"]) != W_enc.shape[0]:
        raise fail(
            weights,
            f"encoder.weight has shape {tuple(t['encoder.weight'].shape)} but cfg.json says "
            f"d_in={cfg['d_in']}",
        )
    b_enc = t["encoder.bias"]
    if not cfg.get("transcode", False):  # an autoencoder centres its input: (x − b_dec) W + b
        b_enc = b_enc - t["b_dec"] @ W_enc
    skip = t.get("W_skip")
    return from_parts(
        weights,
        W_enc,
        b_enc,
        t["W_dec"],
        t["b_dec"],
        W_skip=None if skip is None else skip.T,
        activation="topk",
        k=whole(cfg_path, "k", cfg.get("k")),
    )


FORMAT = Format("sparsify", detect, load, __doc__)
