"""The replacement model's core: a Hugging Face causal LM wrapped by nnsight, plus transcoders.

:class:`ReplacementCore` holds the model, its tokenizer, one transcoder per layer, the
:class:`~attribution_nb.architectures.Architecture` that says where things live and the
execution backend (local or remote, chosen once).  It tokenizes, captures a clean forward pass
(:meth:`capture`), reads the unembedding and gives plain logits.  Attribution
(:mod:`attribution_nb.attribution`) and interventions (:mod:`attribution_nb.interventions`)
are functions of it; :class:`attribution_nb.ReplacementModel` adds them as methods.
"""

from __future__ import annotations

import nnsight
import pandas as pd
import torch
from nnsight import Envoy, NNsight

from .architectures import Architecture, architecture_for, get_module
from .backend import backend_for
from .checks import as_int
from .tokens import display_token, display_tokens, encode_prompt, single_token_id
from .tracing import Capture, record, transcoder_reads
from .transcoders import Transcoder, TranscoderSet


def _wrap(hf_model, tokenizer, remote):
    """(nnsight envoy, torch module) for a model or an nnsight envoy of one."""
    if isinstance(hf_model, Envoy):
        envoy, module = hf_model, hf_model._module
    else:
        envoy, module = None, hf_model
    if remote and envoy is None:
        from nnsight.modeling.transformers import TransformersModel

        envoy = TransformersModel(module, tokenizer=tokenizer)
    if remote and not hasattr(envoy, "_remote_backend"):
        raise ValueError(
            f"remote={remote!r} needs a model nnsight can run remotely (a TransformersModel), "
            f"got {type(envoy).__name__}"
        )
    return (envoy if envoy is not None else NNsight(module)), module


def _token_ids(prompt) -> torch.Tensor:
    """Token ids given as a list, array or tensor: whole numbers in one dimension."""
    if (
        isinstance(prompt, str | bytes)
        or not hasattr(prompt, "__len__")
        or isinstance(prompt, dict | set)
    ):
        raise TypeError(
            f"prompt must be a string or a sequence of token ids (a list, array or 1-D tensor), "
            f"got {type(prompt).__name__}: {prompt!r:.80}"
        )
    try:
        t = torch.as_tensor(prompt)
    except (TypeError, ValueError, RuntimeError, OverflowError) as err:
        raise ValueError(
            f"token ids must be whole numbers in one sequence, got {prompt!r:.80} ({err})"
        ) from None
    if t.ndim == 0:
        raise TypeError(
            f"prompt must be a string or a sequence of token ids, got the single number {prompt!r}"
        )
    if t.numel() == 0:
        return t.to(torch.long).flatten()
    if t.dtype == torch.bool or t.is_floating_point() or t.is_complex():
        raise ValueError(f"token ids must be integers, got dtype {t.dtype}")
    if t.ndim > 1:
        raise ValueError(f"token ids must be one sequence (1-D), got shape {tuple(t.shape)}")
    return t.to(torch.long).flatten()


def checked_transcoders(transcoders, n_layers: int, d_model: int) -> list[Transcoder]:
    """One :class:`Transcoder` per layer, each of the model's width, writing to layers that exist,
    with values (not on the meta device); refused by name otherwise."""
    tcs = list(transcoders)
    if len(tcs) != n_layers:
        raise ValueError(
            f"got {len(tcs)} transcoders for a model with {n_layers} layers; need one per layer"
        )
    for i, tc in enumerate(tcs):
        if not isinstance(tc, Transcoder):
            raise TypeError(
                f"transcoder {i} is a {type(tc).__name__}, expected attribution_nb.Transcoder"
            )
        if tc.d_model != d_model:
            raise ValueError(
                f"transcoder {i} has d_model {tc.d_model}, but the model's d_model is {d_model}"
            )
        if tc.n_later > n_layers - i - 1:
            raise ValueError(
                f"transcoder {i} writes to {tc.n_later} later layers, but the model has only "
                f"{n_layers - i - 1} layers after layer {i}"
            )
        meta = [
            n
            for n in ("W_enc", "b_enc", "W_dec", "b_dec", "threshold", "W_skip", "W_dec_later")
            if getattr(tc, n, None) is not None and getattr(tc, n).is_meta
        ]
        if meta:
            raise ValueError(
                f"transcoder {i}'s {meta} live on the meta device (no values): load its weights first"
            )
    return tcs


class ReplacementCore:
    """A causal LM with one transcoder per layer, traced with nnsight (see
    :class:`attribution_nb.ReplacementModel` for the arguments)."""

    def __init__(
        self,
        hf_model,
        tokenizer,
        transcoders,
        *,
        architecture: Architecture | None = None,
        name: str | None = None,
        feature_labels: dict | None = None,
        remote: bool | str = False,
    ):
        self.backend = backend_for(remote)
        self._remote = remote
        self.nn, module = _wrap(hf_model, tokenizer, remote)
        self.architecture = architecture or architecture_for(module)
        if architecture is not None:
            architecture.check(module)
        # what this changes on the caller's objects, so that close() can put it back
        self._caller_state = (
            module,
            module.training,
            [(p, p.requires_grad) for p in module.parameters()],
            [
                (tc, tc.W_enc.device, tc.W_enc.dtype)
                for tc in transcoders
                if isinstance(tc, Transcoder)
            ],
        )
        module.eval()
        self.tokenizer = tokenizer
        self._no_weight_grads()
        self.name = name or getattr(module.config, "_name_or_path", "") or self.architecture.family
        self.n_layers = len(get_module(module, self.architecture.layers))
        self.d_model = get_module(module, self.architecture.unembed).weight.shape[1]
        self.transcoders = TranscoderSet(
            [
                tc.to(device=self.device, dtype=self.dtype)
                for tc in checked_transcoders(transcoders, self.n_layers, self.d_model)
            ]
        )
        self.feature_labels = feature_labels or {}  # (layer, feature) -> label
        self.feature_contexts: dict = {}  # (layer, feature) -> [[text, activation], ...]
        self.feature_latents: dict = {}  # (layer, feature) -> "state=texas F1 0.91"
        self.max_length = getattr(module.config, "max_position_embeddings", None)
        self.attention = self.architecture.attention(module)  # how its attention computes

    def close(self) -> None:
        """Give the caller's objects back as they were: the model's training mode and its weights'
        ``requires_grad``, each transcoder's device and dtype (construction changed them in place)."""
        module, training, grads, tcs = self._caller_state
        module.train(training)
        for p, flag in grads:
            p.requires_grad_(flag)
        for tc, device, dtype in tcs:
            tc.to(device=device, dtype=dtype)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.name!r}, family={self.architecture.family!r}, layers={self.n_layers}, "
            f"d_model={self.d_model}, features/layer={[tc.d_features for tc in self.transcoders]})"
        )

    # -- where things are -----------------------------------------------------------
    @property
    def remote(self) -> bool | str:
        """The remote setting (fixed at construction: it decides nnsight's wrapper and the backend)."""
        return self._remote

    @property
    def hf_model(self):
        """The Hugging Face model (nnsight's, which may swap in real weights on first use)."""
        return self.nn._module

    @property
    def weights_here(self) -> bool:
        """False when the weights live only on a remote server (meta tensors here)."""
        return next(self.hf_model.parameters()).device.type != "meta"

    @property
    def device(self) -> torch.device:
        """Where this side's tensors live: the model's device (the CPU for a remote model)."""
        d = next(self.hf_model.parameters()).device
        return torch.device("cpu") if d.type == "meta" else d

    @property
    def dtype(self) -> torch.dtype:
        return next(self.hf_model.parameters()).dtype

    @property
    def unembed_weight(self) -> torch.Tensor:
        if not self.weights_here:
            raise RuntimeError(
                "the unembedding needs the model's weights, which are only on the remote server "
                "(meta tensors here); load the model locally for this"
            )
        return get_module(self.hf_model, self.architecture.unembed).weight

    def _no_weight_grads(self) -> None:
        """The weights take no gradients (again, after nnsight swapped in real weights)."""
        module = self.hf_model
        if getattr(self, "_frozen_module", None) is not module:
            for p in module.parameters():
                p.requires_grad_(False)
            self._frozen_module = module

    def trace(self, *inputs):
        """An nnsight trace of this model on its backend."""
        return self.backend.trace(self.nn, *inputs)

    def with_unembedding(self, fn, *args):
        """``fn(W_U, *args)`` where the unembedding weight is: here, or on the server when the
        weights are only there (one request)."""
        if self.weights_here:
            return fn(self.unembed_weight, *args)
        unembed = get_module(self.nn, self.architecture.unembed)
        return self.backend.run(self.nn, lambda: fn(unembed.weight, *args))

    def demeaned_unembedding(self, token_ids: list[int]) -> torch.Tensor:
        """Rows of the unembedding minus its mean row, [n, d]: the direction each target's
        demeaned logit reads from the final residual stream."""
        ids = torch.as_tensor(token_ids, dtype=torch.long)
        if self.weights_here:
            W_U = self.unembed_weight
            return W_U[token_ids] - W_U.mean(0, keepdim=True)
        rows = self.with_unembedding(
            lambda W_U: (W_U[ids.to(W_U.device)] - W_U.mean(0, keepdim=True)).cpu()
        )
        return rows.to(self.device)

    # -- tokens ------------------------------------------------------------------
    def tokenize(self, prompt) -> torch.Tensor:
        """Token ids [T] of ``prompt`` (a string, or a list/tensor of ids used as given)."""
        if isinstance(prompt, str):
            ids = encode_prompt(self.tokenizer, prompt, self.max_length)
        else:
            ids = _token_ids(prompt)
            if ids.numel() == 0:
                raise ValueError("prompt is empty; give at least one token id")
            vocab = get_module(self.hf_model, self.architecture.unembed).weight.shape[
                0
            ]  # (a shape: meta is fine)
            bad = ids[(ids < 0) | (ids >= vocab)]
            if bad.numel():
                raise ValueError(f"token id {int(bad[0])} is outside the vocabulary [0, {vocab})")
        if self.max_length is not None and len(ids) > self.max_length:
            raise ValueError(
                f"prompt has {len(ids)} tokens, longer than the model's context of {self.max_length}"
            )
        return ids.to(self.device)

    def token_strings(self, ids) -> list[str]:
        """A readable string for each token on its own (byte pieces of a character as ``<e5 b0>``)."""
        return [display_token(self.tokenizer, int(i)) for i in ids]

    def prompt_strings(self, ids) -> list[str]:
        """Readable strings for the tokens of a sequence (byte pieces merged: ``小·1/3`` …)."""
        return display_tokens(self.tokenizer, ids)

    def token_id(self, token: str) -> int:
        """The id of a single-token string; raises if the tokenizer splits it."""
        return single_token_id(self.tokenizer, token)

    def feature_top_tokens(self, layer: int, feature: int, k: int = 10) -> pd.DataFrame:
        """The tokens a feature's decoder direction promotes most through the unembedding
        (the direct path, ignoring later layers and the final norm's scale)."""
        layer, feature, k = (
            as_int("layer", layer),
            as_int("feature", feature),
            as_int("k", k, minimum=1),
        )
        n_features = self.transcoders[layer].d_features if 0 <= layer < self.n_layers else 0
        if not 0 <= feature < n_features:
            raise ValueError(
                f"no feature {feature} at layer {layer} (layers 0..{self.n_layers - 1}, "
                f"{n_features} features at that layer)"
            )
        values, indices, _, _ = self.token_effects(layer, [feature], k, demean=False)
        return pd.DataFrame(
            {"token": self.token_strings(indices[0].tolist()), "weight": values[0].double().numpy()}
        )

    def token_effects(self, layer: int, features, k: int, demean: bool = True):
        """The ``k`` tokens each feature's decoder direction (one layer, ``features``) promotes and
        suppresses most through the unembedding — the direct path, ignoring later layers and the
        final norm's scale; ``demean`` subtracts each feature's mean over the vocabulary.
        Returns ``(top values, top ids, bottom values, bottom ids)``, each ``[len(features), k]``."""
        rows = torch.stack([self.transcoders[layer].W_dec[int(f)].float() for f in features])

        def scores(W_U):
            with torch.no_grad():
                s = rows.to(W_U.device) @ W_U.float().T  # [features, vocab]
                if demean:
                    s = s - s.mean(-1, keepdim=True)
                kk = min(k, s.shape[-1])
                top, bottom = s.topk(kk, -1), (-s).topk(kk, -1)
            return top.values.cpu(), top.indices.cpu(), -bottom.values.cpu(), bottom.indices.cpu()

        return self.with_unembedding(scores)

    def softcap(self, logits: torch.Tensor) -> torch.Tensor:
        """The model's final logit soft-cap ``c·tanh(x / c)`` (identity for most models)."""
        cap = self.architecture.softcap_value(self.hf_model.config)
        return logits if cap is None else torch.tanh(logits / cap) * cap

    # -- runs --------------------------------------------------------------------
    def capture(self, tokens: torch.Tensor) -> Capture:
        """One clean forward pass recording MLP inputs and outputs and the transcoders' view of them."""
        arch = self.architecture
        raw = record(self.trace(tokens[None]), self.nn, arch, tokens)
        self._no_weight_grads()
        hf_layers = get_module(self.hf_model, arch.layers)
        with torch.no_grad():
            mlp_in = torch.stack(
                [
                    transcoder_reads(arch, get_module(layer, arch.mlp_in), x)
                    for x, layer in zip(raw["mlp_in"], hf_layers)
                ]
            )
        activations, reconstruction = self.transcoders.encode_all(mlp_in)
        return Capture(
            tokens=tokens,
            embed=raw["embed"],
            mlp_in=mlp_in,
            mlp_out=raw["mlp_out"],
            logits=self.softcap(raw["logits"]),
            unembed_in=raw["unembed_in"],
            raw_logits=raw["logits"][-1],
            activations=activations,
            reconstruction=reconstruction,
            errors=raw["mlp_out"] - reconstruction,
        )

    def logits(self, prompt) -> torch.Tensor:
        """Next-token logits [V] of the unmodified model at the prompt's last position."""
        tokens = self.tokenize(prompt)
        unembed = get_module(self.nn, self.architecture.unembed)
        with torch.no_grad(), self.trace(tokens[None]):
            logits = nnsight.save(unembed.output[0, -1].cpu())
        return self.softcap(logits.to(self.device))
