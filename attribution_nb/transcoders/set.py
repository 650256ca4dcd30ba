"""A transcoder per layer: the set a replacement model uses, and random sets for tests."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import torch

from ..io import read_json, write_text
from .transcoder import Transcoder


@dataclass
class TranscoderSet:
    """One transcoder per layer, in layer order."""

    transcoders: list[Transcoder]

    def __len__(self) -> int:
        return len(self.transcoders)

    def __getitem__(self, layer: int) -> Transcoder:
        return self.transcoders[layer]

    def __iter__(self):
        return iter(self.transcoders)

    @property
    def cross_layer(self) -> bool:
        """Whether any layer's features also write to later layers."""
        return any(tc.n_later for tc in self.transcoders)

    def skip_weights(self) -> list[torch.Tensor | None]:
        """Each layer's skip matrix ``W_skip`` [d, d] (None where its transcoder has none)."""
        return [None if tc.W_skip is None else tc.W_skip.detach() for tc in self.transcoders]

    @torch.no_grad()
    def encode_all(self, mlp_in: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Every layer's activations [T, F] for MLP inputs ``mlp_in`` [L, T, d], and the
        reconstruction [L, T, d] of every MLP output (decoders + b_dec + skip, plus what
        earlier layers' cross-layer features write there)."""
        activations, recon = [], []
        for layer, tc in enumerate(self.transcoders):
            x = mlp_in[layer]
            acts = tc.encode(x)
            if not torch.isfinite(acts).all():
                pos = int((~torch.isfinite(acts)).any(-1).nonzero()[0])
                raise ValueError(
                    f"non-finite transcoder activations at layer {layer}, position {pos}; "
                    "check the transcoder weights and the model's dtype"
                )
            activations.append(acts)
            recon.append(tc(x))
            tc.drop_pages()  # a memory-mapped layer: one layer's weights in memory at a time
        for layer, tc in enumerate(self.transcoders):
            if tc.n_later:
                for j, write in enumerate(tc.decode_later(activations[layer])):
                    recon[layer + 1 + j] = recon[layer + 1 + j] + write
        return activations, torch.stack(recon)

    def save(self, folder: str | os.PathLike) -> None:
        """Write ``layer_{i}.safetensors`` per layer and an ``index.json`` to ``folder``."""
        os.makedirs(folder, exist_ok=True)
        for i, tc in enumerate(self.transcoders):
            tc.save(os.path.join(folder, f"layer_{i}.safetensors"))
        write_text(
            os.path.join(folder, "index.json"),
            json.dumps({"format": "attribution_nb.transcoders", "n_layers": len(self.transcoders)}),
        )

    @classmethod
    def load(cls, folder: str | os.PathLike, **kwargs) -> TranscoderSet:
        folder = os.fspath(folder)
        index = os.path.join(folder, "index.json")
        if not os.path.isfile(index):
            raise FileNotFoundError(
                f"{folder} has no index.json; expected a folder written by TranscoderSet.save"
            )
        n_layers = read_json(index, "TranscoderSet index.json").get("n_layers")
        if isinstance(n_layers, bool) or not isinstance(n_layers, int) or n_layers < 1:
            raise ValueError(f"{index}: n_layers must be a positive integer, got {n_layers!r}")
        return cls(
            [
                Transcoder.load(os.path.join(folder, f"layer_{i}.safetensors"), **kwargs)
                for i in range(n_layers)
            ]
        )


def random_transcoders(
    d_model: int,
    n_layers: int,
    d_features: int,
    *,
    activation: str = "jumprelu",
    skip: bool = False,
    seed: int = 0,
    k: int | None = None,
    cross_layer: bool = False,
) -> TranscoderSet:
    """Random transcoders of the given sizes (for tests and the tiny built-in model);
    ``cross_layer``: each layer's features also write to every later layer.

    JumpReLU thresholds and biases are set so that roughly 3% of the features fire on
    a unit-norm-per-dimension input, which keeps graphs sparse but not empty.
    """
    gen = torch.Generator().manual_seed(seed)
    out = []
    for layer in range(n_layers):
        W_enc = torch.randn(d_model, d_features, generator=gen) / d_model**0.5
        b_enc = 0.1 * torch.randn(d_features, generator=gen)
        W_dec = torch.randn(d_features, d_model, generator=gen) / d_features**0.5
        b_dec = 0.05 * torch.randn(d_model, generator=gen)
        kwargs: dict = {}
        if activation == "jumprelu":
            kwargs["threshold"] = 1.8 + 0.2 * torch.rand(d_features, generator=gen)
        if activation == "topk":
            kwargs["k"] = k or max(1, d_features // 16)
        if skip:
            kwargs["W_skip"] = 0.1 * torch.randn(d_model, d_model, generator=gen) / d_model**0.5
        if cross_layer and layer < n_layers - 1:
            n_later = n_layers - layer - 1
            kwargs["W_dec_later"] = (
                0.5 * torch.randn(d_features, n_later, d_model, generator=gen) / d_features**0.5
            )
        out.append(Transcoder(W_enc, b_enc, W_dec, b_dec, activation, **kwargs))
    return TranscoderSet(out)


def mlp_inputs_on(hf_model, token_ids: list[int]) -> list[torch.Tensor]:
    """Each layer's MLP inputs [n_tokens - 1, d_model] on ``token_ids`` (position 0, the BOS,
    left out) for a model whose layers are ``hf_model.model.layers[i].mlp`` (Llama, Qwen,
    Gemma): the calibration text :func:`calibrated_transcoders` reads."""
    layers = getattr(getattr(hf_model, "model", None), "layers", None)
    if layers is None or not all(hasattr(layer, "mlp") for layer in layers):
        raise ValueError(
            f"{type(hf_model).__name__} has no model.layers[i].mlp modules to read MLP inputs from"
        )
    inputs: list[torch.Tensor] = []
    hooks = [
        layer.mlp.register_forward_pre_hook(lambda m, a: inputs.append(a[0][0, 1:].detach()))
        for layer in layers
    ]
    try:
        with torch.no_grad():
            hf_model(torch.as_tensor([list(token_ids)]))
    finally:
        for h in hooks:
            h.remove()
    return inputs


def calibrated_transcoders(
    mlp_inputs: list[torch.Tensor],
    d_features: int,
    *,
    active_per_token: float = 10.0,
    seed: int = 0,
    folder: str | os.PathLike | None = None,
) -> TranscoderSet:
    """Seeded random JumpReLU transcoders for a real model, for benchmarks and tests at real
    size (no trained transcoders exist offline): ``mlp_inputs[l]`` [n_tokens, d_model] are
    layer ``l``'s MLP inputs on a calibration text (:func:`mlp_inputs_on`); each layer's threshold is set so that
    about ``active_per_token`` features fire per token there, and decoders are scaled to the
    inputs' norm.  Graphs built with them test speed and exactness, not interpretability.

    With ``folder``, each layer is saved there as it is made (:meth:`TranscoderSet.save`'s
    layout, the same weights) and the set is loaded from it, so a set larger than memory can be
    built (large files are memory-mapped)."""
    if not mlp_inputs:
        raise ValueError("mlp_inputs is empty: give one [n_tokens, d_model] tensor per layer")
    if folder is not None:
        os.makedirs(folder, exist_ok=True)
    gen = torch.Generator().manual_seed(seed)
    out = []
    for layer, x in enumerate(mlp_inputs):
        x = x.detach().float()
        d = x.shape[-1]
        W_enc = torch.randn(d, d_features, generator=gen) / d**0.5
        pre = (x @ W_enc).flatten()
        threshold = float(torch.quantile(pre[: 1 << 24], 1 - active_per_token / d_features))
        scale = float(x.norm(dim=-1).mean()) / active_per_token**0.5
        W_dec = torch.randn(d_features, d, generator=gen) * scale / d**0.5
        out.append(
            Transcoder(
                W_enc,
                torch.zeros(d_features),
                W_dec,
                torch.zeros(d),
                "jumprelu",
                threshold=torch.full((d_features,), threshold),
            )
        )
        if folder is not None:
            out.pop().save(os.path.join(folder, f"layer_{layer}.safetensors"))
    if folder is None:
        return TranscoderSet(out)
    write_text(
        os.path.join(folder, "index.json"),
        json.dumps({"format": "attribution_nb.transcoders", "n_layers": len(mlp_inputs)}),
    )
    return TranscoderSet.load(folder)
