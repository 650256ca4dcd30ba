"""Whole sets of transcoders: circuit-tracer's ``config.yaml`` (one path per layer, local or
``hf://``), its cross-layer folders (``W_enc_{i}`` / ``W_dec_{i}`` per layer), and hub paths."""

from __future__ import annotations

import os
import re
from collections.abc import Callable

from ...io import read_safetensors
from ..transcoder import Transcoder
from .base import check_2d, fail, from_parts


def hf_path(uri: str, download: Callable[[str, str], str]) -> str:
    """``hf://owner/repo/path/in/repo`` → a local file (via ``download(repo_id, filename)``)."""
    m = re.fullmatch(r"hf://([^/]+/[^/]+)/(.+)", uri)
    if not m:
        raise ValueError(f"not an hf:// path: {uri!r} (expected hf://owner/repo/file)")
    return download(m.group(1), m.group(2))


def hub_download(repo_id: str, filename: str) -> str:
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        raise ImportError(
            "fetching transcoders from the hub needs huggingface_hub (pip install huggingface_hub)"
        ) from None
    return hf_hub_download(repo_id=repo_id, filename=filename)


def read_config_yaml(path: str) -> dict:
    """The few keys of circuit-tracer's transcoder ``config.yaml`` that matter, without PyYAML:
    ``model_name``, ``feature_input_hook``, ``feature_output_hook`` and the ``transcoders`` list."""
    out: dict = {}
    items: list[str] = []
    in_list = False
    with open(path) as f:
        for raw in f:
            line = raw.split("#", 1)[0].rstrip()
            if not line.strip():
                continue
            if in_list and line.lstrip().startswith("- "):
                items.append(line.lstrip()[2:].strip().strip("'\""))
                continue
            in_list = False
            key, _, value = line.partition(":")
            key, value = key.strip(), value.strip().strip("'\"")
            if key == "transcoders" and not value:
                in_list = True
            elif key:
                out[key] = value
    out["transcoders"] = items
    return out


def config_yaml_paths(source: str, download, presets: dict) -> list[str]:
    """The per-layer paths a circuit-tracer ``config.yaml`` (or its folder) lists, made local."""
    if os.path.isdir(source) and os.path.isfile(os.path.join(source, "config.yaml")):
        source = os.path.join(source, "config.yaml")
    if not (os.path.isfile(source) and source.endswith((".yaml", ".yml"))):
        raise ValueError(
            f"{source!r} is not a preset ({sorted(presets)}), a TranscoderSet folder (index.json), "
            f"a circuit-tracer config.yaml, or a list of per-layer files"
        )
    cfg = read_config_yaml(source)
    if not cfg["transcoders"]:
        raise fail(source, "no 'transcoders:' list of per-layer paths")
    base = os.path.dirname(source)
    return [
        hf_path(p, download) if p.startswith("hf://") else os.path.join(base, p)
        for p in cfg["transcoders"]
    ]


def load_circuit_tracer_clt(folder) -> list[Transcoder]:
    """circuit-tracer's cross-layer transcoder folder: per layer ``i``, ``W_enc_{i}.safetensors``
    (``W_enc_{i}`` [F, d_model], ``b_enc_{i}``, ``b_dec_{i}``, optional ``threshold_{i}``) and
    ``W_dec_{i}.safetensors`` (``W_dec_{i}`` [F, n_layers − i, d_model]: layer ``i`` and every later one)."""
    folder = os.fspath(folder)
    n = 0
    while os.path.isfile(os.path.join(folder, f"W_enc_{n}.safetensors")):
        n += 1
    if n == 0:
        raise FileNotFoundError(
            f"{folder}: no W_enc_0.safetensors (circuit-tracer cross-layer layout)"
        )
    return [_clt_layer(folder, i, n) for i in range(n)]


def _clt_layer(folder: str, i: int, n: int) -> Transcoder:
    enc_path = os.path.join(folder, f"W_enc_{i}.safetensors")
    dec_path = os.path.join(folder, f"W_dec_{i}.safetensors")
    if not os.path.isfile(dec_path):
        raise FileNotFoundError(
            f"{folder}: W_enc_{i}.safetensors has no W_dec_{i}.safetensors beside it"
        )
    enc, _ = read_safetensors(enc_path)
    dec, _ = read_safetensors(dec_path)
    missing = [k for k in (f"W_enc_{i}", f"b_enc_{i}", f"b_dec_{i}") if k not in enc]
    if missing:
        raise fail(enc_path, f"missing tensors {missing}; found {sorted(enc)}")
    if f"W_dec_{i}" not in dec:
        raise fail(dec_path, f"missing tensor 'W_dec_{i}'; found {sorted(dec)}")
    W_enc, W_dec = enc[f"W_enc_{i}"], dec[f"W_dec_{i}"]
    check_2d(enc_path, f"W_enc_{i}", W_enc)
    F, d = W_enc.shape
    if tuple(W_dec.shape) != (F, n - i, d):
        raise fail(
            dec_path,
            f"W_dec_{i} has shape {tuple(W_dec.shape)}, expected ({F}, {n - i}, {d}): "
            f"[features, layers {i}..{n - 1}, d_model]",
        )
    return from_parts(
        enc_path,
        W_enc.T,
        enc[f"b_enc_{i}"],
        W_dec[:, 0],
        enc[f"b_dec_{i}"],
        enc.get(f"threshold_{i}"),
        W_dec_later=W_dec[:, 1:] if n - i > 1 else None,
    )
