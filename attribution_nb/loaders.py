"""Transcoders in the layouts others publish, and presets that find them on the hub.

Per file (``load_transcoder``):

* **GemmaScope** ``params.npz`` (numpy, read with ``allow_pickle=False``): ``W_enc``
  [d_model, F], ``W_dec`` [F, d_model], ``b_enc``, ``b_dec``, ``threshold`` (JumpReLU).
* **circuit-tracer** per-layer safetensors: ``W_enc`` [F, d_model] (transposed relative to
  GemmaScope), ``W_dec`` [F, d_model], ``b_enc``, ``b_dec``, optional
  ``activation_function.threshold`` (JumpReLU, else ReLU) and ``W_skip`` (applied as
  ``x @ W_skip.T``).
* **GemmaScope 2** safetensors: ``w_enc`` [d_model, F], ``w_dec``, ``b_enc``, ``b_dec``,
  ``threshold``, optional ``affine_skip_connection`` [d_model, d_model] (``x @ A.T``).
* **attribution_nb** safetensors (:meth:`Transcoder.save`).
* **circuit-tracer cross-layer** folders: ``W_enc_{i}.safetensors`` and ``W_dec_{i}.safetensors``
  per layer (``load_circuit_tracer_clt``).
* **sae-lens** folders: ``cfg.json`` (``architecture``, ``d_in``, ``d_sae``, optional
  ``apply_b_dec_to_input``, ``activation_fn_kwargs.k``) and ``sae_weights.safetensors``.

Per set (``load_transcoders``): a folder written by :meth:`TranscoderSet.save`; a folder
with circuit-tracer's ``config.yaml`` (``transcoders:`` one path per layer, local or
``hf://repo/path``); a list of files or sae-lens folders, one per layer; or a preset name
from ``PRESETS`` (files fetched with huggingface_hub, so only with network access).
"""

from __future__ import annotations

import json
import os
import re

import numpy as np
import torch

from .transcoders import Transcoder, TranscoderSet, read_safetensors

#: published transcoder sets: the model they belong to and circuit-tracer-style configs on the hub
PRESETS = {
    "gemma-2-2b": {"model": "google/gemma-2-2b", "transcoders": "hf://mntss/gemma-scope-transcoders/config.yaml"},
    "llama-3.2-1b": {"model": "meta-llama/Llama-3.2-1B",
                     "transcoders": "hf://mntss/skip-transcoder-Llama-3.2-1B-131k-nobos/config.yaml"},
    "qwen3-4b": {"model": "Qwen/Qwen3-4B", "transcoders": "hf://mwhanna/qwen3-4b-transcoders/config.yaml"},
}


def _fail(path, why: str) -> ValueError:
    return ValueError(f"{os.fspath(path)}: {why}")


def _check_2d(path, name: str, t: torch.Tensor) -> None:
    if t.ndim != 2:
        raise _fail(path, f"{name} must be 2-D, got shape {tuple(t.shape)}")


def _from_parts(path, W_enc, b_enc, W_dec, b_dec, threshold=None, W_skip=None, activation=None, k=None,
                W_dec_later=None):
    activation = activation or ("jumprelu" if threshold is not None else "relu")
    try:
        return Transcoder(W_enc, b_enc, W_dec, b_dec, activation, threshold=threshold, k=k, W_skip=W_skip,
                          W_dec_later=W_dec_later)
    except (ValueError, TypeError) as err:
        raise _fail(path, str(err)) from None


def load_gemmascope_npz(path) -> Transcoder:
    """A GemmaScope ``params.npz`` (JumpReLU)."""
    try:
        with np.load(os.fspath(path), allow_pickle=False) as f:
            arrays = {k: torch.from_numpy(np.asarray(f[k], dtype=np.float32)) for k in f.files}
    except (OSError, ValueError) as err:
        raise _fail(path, f"not a readable .npz file ({err})") from None
    missing = [k for k in ("W_enc", "W_dec", "b_enc", "b_dec", "threshold") if k not in arrays]
    if missing:
        raise _fail(path, f"a GemmaScope params.npz needs W_enc, W_dec, b_enc, b_dec, threshold; missing {missing}")
    return _from_parts(path, arrays["W_enc"], arrays["b_enc"], arrays["W_dec"], arrays["b_dec"], arrays["threshold"])


def load_transcoder(path, *, layout: str | None = None) -> Transcoder:
    """One layer's transcoder from ``path`` in any layout of the module docstring;
    ``layout`` ("gemmascope", "circuit-tracer", "gemmascope-2", "attribution_nb", "sae-lens")
    skips the guessing."""
    path = os.fspath(path)
    layouts = ("gemmascope", "circuit-tracer", "gemmascope-2", "attribution_nb", "sae-lens")
    if layout is not None and layout not in layouts:
        raise ValueError(f"unknown layout {layout!r}; choose one of {layouts}")
    if os.path.isdir(path) or layout == "sae-lens":
        return load_saelens(path)
    if path.endswith(".npz") or layout == "gemmascope":
        return load_gemmascope_npz(path)
    tensors, meta = read_safetensors(path)
    keys = set(tensors)
    if layout is None:
        if "w_enc" in keys:
            layout = "gemmascope-2"
        elif "activation_function.threshold" in keys:
            layout = "circuit-tracer"
        elif {"W_enc", "b_enc", "b_dec"} <= keys:
            F, d = len(tensors["b_enc"]), len(tensors["b_dec"])
            shape = tuple(tensors["W_enc"].shape)
            if shape == (d, F) and shape != (F, d):
                layout = "attribution_nb"
            elif shape == (F, d) and shape != (d, F):
                layout = "circuit-tracer"
            elif shape == (d, F):
                raise _fail(path, f"W_enc is square {shape}: say layout='attribution_nb' or 'circuit-tracer'")
            else:
                raise _fail(path, f"W_enc has shape {shape}, which fits neither [d_model={d}, F={F}] nor [F, d_model]")
        else:
            raise _fail(path, f"unknown transcoder layout: tensors {sorted(keys)}; expected W_enc/W_dec/b_enc/b_dec "
                              f"(attribution_nb, circuit-tracer) or w_enc/w_dec (GemmaScope 2)")
    need = {"attribution_nb": ["W_enc", "W_dec", "b_enc", "b_dec"], "circuit-tracer": ["W_enc", "W_dec", "b_enc", "b_dec"],
            "gemmascope-2": ["w_enc", "w_dec", "b_enc", "b_dec", "threshold"]}[layout]
    missing = [k for k in need if k not in keys]
    if missing:
        raise _fail(path, f"a {layout} transcoder needs {need}; missing {missing}")
    for name in ("W_enc", "W_dec", "w_enc", "w_dec"):
        if name in tensors:
            _check_2d(path, name, tensors[name])
    if layout == "attribution_nb":
        return Transcoder.load(path)
    if layout == "circuit-tracer":
        skip = tensors.get("W_skip")
        return _from_parts(path, tensors["W_enc"].T, tensors["b_enc"], tensors["W_dec"], tensors["b_dec"],
                           tensors.get("activation_function.threshold"), None if skip is None else skip.T)
    skip = tensors.get("affine_skip_connection")
    return _from_parts(path, tensors["w_enc"], tensors["b_enc"], tensors["w_dec"], tensors["b_dec"],
                       tensors["threshold"], None if skip is None else skip.T)


def load_circuit_tracer_clt(folder) -> list[Transcoder]:
    """circuit-tracer's cross-layer transcoder folder: per layer ``i``, ``W_enc_{i}.safetensors``
    (``W_enc_{i}`` [F, d_model], ``b_enc_{i}``, ``b_dec_{i}``, optional ``threshold_{i}``) and
    ``W_dec_{i}.safetensors`` (``W_dec_{i}`` [F, n_layers − i, d_model]: layer ``i`` and every later one)."""
    folder = os.fspath(folder)
    n = 0
    while os.path.isfile(os.path.join(folder, f"W_enc_{n}.safetensors")):
        n += 1
    if n == 0:
        raise FileNotFoundError(f"{folder}: no W_enc_0.safetensors (circuit-tracer cross-layer layout)")
    out = []
    for i in range(n):
        enc_path = os.path.join(folder, f"W_enc_{i}.safetensors")
        dec_path = os.path.join(folder, f"W_dec_{i}.safetensors")
        if not os.path.isfile(dec_path):
            raise FileNotFoundError(f"{folder}: W_enc_{i}.safetensors has no W_dec_{i}.safetensors beside it")
        enc, _ = read_safetensors(enc_path)
        dec, _ = read_safetensors(dec_path)
        missing = [k for k in (f"W_enc_{i}", f"b_enc_{i}", f"b_dec_{i}") if k not in enc]
        if missing:
            raise _fail(enc_path, f"missing tensors {missing}; found {sorted(enc)}")
        if f"W_dec_{i}" not in dec:
            raise _fail(dec_path, f"missing tensor 'W_dec_{i}'; found {sorted(dec)}")
        W_enc, W_dec = enc[f"W_enc_{i}"], dec[f"W_dec_{i}"]
        _check_2d(enc_path, f"W_enc_{i}", W_enc)
        F, d = W_enc.shape
        if tuple(W_dec.shape) != (F, n - i, d):
            raise _fail(dec_path, f"W_dec_{i} has shape {tuple(W_dec.shape)}, expected ({F}, {n - i}, {d}): "
                                  f"[features, layers {i}..{n - 1}, d_model]")
        out.append(_from_parts(enc_path, W_enc.T, enc[f"b_enc_{i}"], W_dec[:, 0], enc[f"b_dec_{i}"],
                               enc.get(f"threshold_{i}"), W_dec_later=W_dec[:, 1:] if n - i > 1 else None))
    return out


def load_saelens(folder) -> Transcoder:
    """A sae-lens style folder: ``cfg.json`` + ``sae_weights.safetensors`` (``W_enc`` [d_in, d_sae])."""
    folder = os.fspath(folder)
    cfg_path = os.path.join(folder, "cfg.json")
    if not os.path.isfile(cfg_path):
        raise FileNotFoundError(f"{folder}: a sae-lens folder needs cfg.json")
    with open(cfg_path) as f:
        cfg = json.load(f)
    weights = os.path.join(folder, "sae_weights.safetensors")
    tensors, _ = read_safetensors(weights)
    missing = [k for k in ("W_enc", "W_dec", "b_enc", "b_dec") if k not in tensors]
    if missing:
        raise _fail(weights, f"missing tensors {missing}; found {sorted(tensors)}")
    arch = cfg.get("architecture", "standard")
    activation = {"standard": "relu", "relu": "relu", "jumprelu": "jumprelu", "topk": "topk",
                  "transcoder": "relu", "jumprelu_transcoder": "jumprelu", "skip_transcoder": "relu"}.get(arch)
    if activation is None:
        raise _fail(cfg_path, f"architecture {arch!r} is not supported (standard, jumprelu, topk, *transcoder)")
    for key, dim in (("d_in", tensors["W_enc"].shape[0]), ("d_sae", tensors["W_enc"].shape[1])):
        if key in cfg and int(cfg[key]) != dim:
            raise _fail(weights, f"W_enc has shape {tuple(tensors['W_enc'].shape)} but cfg.json says {key}={cfg[key]}")
    W_enc, b_enc = tensors["W_enc"], tensors["b_enc"]
    b_dec_in = tensors["b_dec"]
    if cfg.get("apply_b_dec_to_input", False):
        if len(b_dec_in) != W_enc.shape[0]:
            raise _fail(cfg_path, "apply_b_dec_to_input needs b_dec of size d_in")
        b_enc = b_enc - b_dec_in @ W_enc          # (x − b_dec) W + b  ==  x W + (b − b_dec W)
    b_out = tensors.get("b_dec_out", tensors["b_dec"])
    k = (cfg.get("activation_fn_kwargs") or {}).get("k") if activation == "topk" else None
    if activation == "topk" and k is None:
        raise _fail(cfg_path, "a topk architecture needs activation_fn_kwargs.k")
    skip = tensors.get("W_skip")
    return _from_parts(weights, W_enc, b_enc, tensors["W_dec"], b_out, tensors.get("threshold"), skip,
                       activation=activation, k=k)


def _hf_path(uri: str, download) -> str:
    """``hf://owner/repo/path/in/repo`` → a local file (via ``download(repo_id, filename)``)."""
    m = re.fullmatch(r"hf://([^/]+/[^/]+)/(.+)", uri)
    if not m:
        raise ValueError(f"not an hf:// path: {uri!r} (expected hf://owner/repo/file)")
    return download(m.group(1), m.group(2))


def _hub_download(repo_id: str, filename: str) -> str:
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        raise ImportError("fetching transcoders from the hub needs huggingface_hub (pip install huggingface_hub)") from None
    return hf_hub_download(repo_id=repo_id, filename=filename)


def _read_config_yaml(path: str) -> dict:
    """The few keys of circuit-tracer's transcoder ``config.yaml`` that matter, without PyYAML:
    ``model_name``, ``feature_input_hook``, ``feature_output_hook`` and the ``transcoders`` list."""
    out, items, in_list = {}, [], False
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


def _load_config_yaml_set(source: str, download) -> list[Transcoder]:
    """The per-layer transcoders a circuit-tracer ``config.yaml`` (or its folder) lists."""
    if os.path.isdir(source) and os.path.isfile(os.path.join(source, "config.yaml")):
        source = os.path.join(source, "config.yaml")
    if not (os.path.isfile(source) and source.endswith((".yaml", ".yml"))):
        raise ValueError(f"{source!r} is not a preset ({sorted(PRESETS)}), a TranscoderSet folder (index.json), "
                         f"a circuit-tracer config.yaml, or a list of per-layer files")
    cfg = _read_config_yaml(source)
    if not cfg["transcoders"]:
        raise _fail(source, "no 'transcoders:' list of per-layer paths")
    base = os.path.dirname(source)
    return [load_transcoder(_hf_path(p, download) if p.startswith("hf://") else os.path.join(base, p))
            for p in cfg["transcoders"]]


def load_transcoders(source, *, device: str | torch.device = "cpu", dtype: torch.dtype | None = None,
                     download=None) -> TranscoderSet:
    """A :class:`TranscoderSet` from a folder, a list of per-layer paths, a circuit-tracer
    ``config.yaml`` (local or ``hf://``), or a preset name (see ``PRESETS``).

    ``download(repo_id, filename) -> local path`` resolves ``hf://`` paths; by default
    huggingface_hub's ``hf_hub_download`` (network needed the first time, cached after).
    """
    download = download or _hub_download
    if isinstance(source, str) and source in PRESETS:
        source = PRESETS[source]["transcoders"]
    if isinstance(source, (list, tuple)):
        tcs = [load_transcoder(_hf_path(p, download) if str(p).startswith("hf://") else p) for p in source]
    else:
        source = os.fspath(source)
        if source.startswith("hf://"):
            source = _hf_path(source, download)
        if os.path.isdir(source) and os.path.isfile(os.path.join(source, "index.json")):
            return TranscoderSet.load(source, device=device, dtype=dtype)
        if os.path.isdir(source) and os.path.isfile(os.path.join(source, "W_enc_0.safetensors")):
            tcs = load_circuit_tracer_clt(source)
        else:
            tcs = _load_config_yaml_set(source, download)
    d = {tc.d_model for tc in tcs}
    if len(d) != 1:
        raise ValueError(f"the transcoders disagree on d_model: {sorted(d)}")
    tcs = [tc.to(device=device, dtype=dtype) if dtype is not None else tc.to(device) for tc in tcs]
    return TranscoderSet(tcs)
