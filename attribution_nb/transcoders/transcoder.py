"""Transcoders: sparse, interpretable stand-ins for a model's MLPs.

A transcoder reads the MLP's input ``x`` and writes an approximation of its output:

    pre  = x @ W_enc + b_enc                  (pre-activations, one per feature)
    act  = σ(pre)                             (ReLU, JumpReLU or TopK: sparse; see activations.py)
    out  = act @ W_dec + b_dec [+ x @ W_skip]  (decoder, optional linear skip term)

Shapes follow GemmaScope: ``W_enc`` is [d_model, d_features], ``W_dec`` is
[d_features, d_model], ``W_skip`` is [d_model, d_model].  The features' pre-activations
are the attribution targets; ``act * W_dec[f]`` is what a feature writes to the residual
stream.  A cross-layer transcoder's features also write to every later layer
(``W_dec_later``); the ``*_writes`` methods give those writes layer by layer, so nothing
else in the package looks at ``W_dec_later``.  Files are safetensors: loading never unpickles.
"""

from __future__ import annotations

import os
from mmap import mmap as FileMap

import torch

from ..io import MAP_FROM_BYTES, drop_pages, map_safetensors, read_safetensors, save_safetensors
from ..checks import as_int
from .activations import ACTIVATIONS


def _as_tensor(name: str, value) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        try:
            value = torch.as_tensor(value)
        except (TypeError, ValueError, RuntimeError, OverflowError) as err:
            raise TypeError(
                f"{name} must be a floating-point tensor (or array), got {type(value).__name__}: "
                f"{value!r:.60} ({err})"
            ) from None
    if not value.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {value.dtype}")
    if not torch.isfinite(value).all():
        where = tuple(int(i) for i in (~torch.isfinite(value)).nonzero()[0])
        raise ValueError(f"{name} holds NaN or infinite values (the first at index {where})")
    return value


class Transcoder(torch.nn.Module):
    """One layer's transcoder (a per-layer transcoder, optionally with a skip term).

    Args:
        W_enc: encoder, [d_model, d_features].
        b_enc: encoder bias, [d_features].
        W_dec: decoder, [d_features, d_model].
        b_dec: decoder bias, [d_model].
        activation: ``"relu"``, ``"jumprelu"`` (needs ``threshold``) or ``"topk"`` (needs ``k``).
        threshold: JumpReLU thresholds, a scalar or [d_features].
        k: number of features kept per token for TopK.
        W_skip: optional linear skip term, [d_model, d_model]; ``out += x @ W_skip``.
        W_dec_later: for a cross-layer transcoder, the decoders into the *later* layers,
            [d_features, n_later, d_model]: feature ``f`` of layer ``l`` also writes
            ``act · W_dec_later[f, j]`` to the MLP output of layer ``l + 1 + j``.
    """

    def __init__(
        self,
        W_enc,
        b_enc,
        W_dec,
        b_dec,
        activation: str = "relu",
        *,
        threshold=None,
        k: int | None = None,
        W_skip=None,
        W_dec_later=None,
    ):
        super().__init__()
        W_enc, b_enc = _as_tensor("W_enc", W_enc), _as_tensor("b_enc", b_enc)
        W_dec, b_dec = _as_tensor("W_dec", W_dec), _as_tensor("b_dec", b_dec)
        if W_enc.ndim != 2:
            raise ValueError(
                f"W_enc must be 2-D [d_model, d_features], got shape {tuple(W_enc.shape)}"
            )
        d_model, d_features = W_enc.shape
        expected = {"b_enc": (d_features,), "W_dec": (d_features, d_model), "b_dec": (d_model,)}
        for name, tensor in (("b_enc", b_enc), ("W_dec", W_dec), ("b_dec", b_dec)):
            if tuple(tensor.shape) != expected[name]:
                raise ValueError(
                    f"{name} has shape {tuple(tensor.shape)}, expected {expected[name]} "
                    f"for W_enc of shape {tuple(W_enc.shape)} ([d_model, d_features])"
                )
        threshold, k = _activation_parameters(activation, threshold, k, d_features)
        if W_skip is not None:
            W_skip = _as_tensor("W_skip", W_skip)
            if tuple(W_skip.shape) != (d_model, d_model):
                raise ValueError(
                    f"W_skip has shape {tuple(W_skip.shape)}, expected {(d_model, d_model)}"
                )
        if W_dec_later is not None:
            W_dec_later = _as_tensor("W_dec_later", W_dec_later)
            if (
                W_dec_later.ndim != 3
                or W_dec_later.shape[0] != d_features
                or W_dec_later.shape[2] != d_model
            ):
                raise ValueError(
                    f"W_dec_later has shape {tuple(W_dec_later.shape)}, expected "
                    f"({d_features}, n_later, {d_model}) ([d_features, later layers, d_model])"
                )
        self.W_enc = torch.nn.Parameter(W_enc, requires_grad=False)
        self.b_enc = torch.nn.Parameter(b_enc, requires_grad=False)
        self.W_dec = torch.nn.Parameter(W_dec, requires_grad=False)
        self.b_dec = torch.nn.Parameter(b_dec, requires_grad=False)
        self.threshold = (
            None if threshold is None else torch.nn.Parameter(threshold, requires_grad=False)
        )
        self.W_skip = None if W_skip is None else torch.nn.Parameter(W_skip, requires_grad=False)
        self.W_dec_later = (
            None if W_dec_later is None else torch.nn.Parameter(W_dec_later, requires_grad=False)
        )
        self.activation = activation
        self.k = k
        self._mapped: FileMap | None = None  # the map its weights are views of (load's mmap)

    @property
    def d_model(self) -> int:
        return self.W_enc.shape[0]

    @property
    def d_features(self) -> int:
        return self.W_enc.shape[1]

    def extra_repr(self) -> str:
        extra = {"jumprelu": "", "topk": f", k={self.k}", "relu": ""}[self.activation]
        skip = ", skip" if self.W_skip is not None else ""
        cross = f", writes to {self.n_later} later layers" if self.n_later else ""
        sizes = f"d_model={self.d_model}, d_features={self.d_features}"
        return f"{sizes}, activation={self.activation!r}{extra}{skip}{cross}"

    @property
    def n_later(self) -> int:
        """How many later layers a cross-layer transcoder's features also write to (0: per-layer)."""
        return 0 if self.W_dec_later is None else self.W_dec_later.shape[1]

    def decode_later(self, acts: torch.Tensor) -> torch.Tensor:
        """What the features write to each later layer: [n_later, ..., d_model]."""
        return torch.einsum("...f,fjd->j...d", acts, self.W_dec_later)

    # -- what features write, layer by layer (own layer first, then the later ones) --------
    def feature_writes(self, features: torch.Tensor, acts: torch.Tensor) -> list[torch.Tensor]:
        """``act · decoder`` of the given features [n] with activations [n], in float32:
        ``[own layer [n, d], first later layer [n, d], …]``."""
        own = (self.W_dec[features].float() * acts[:, None]).detach()
        if self.W_dec_later is None:
            return [own]
        later = (self.W_dec_later[features].float() * acts[:, None, None]).detach()
        return [own] + [later[:, j] for j in range(self.n_later)]

    def direction_writes(self, feature: int) -> list[torch.Tensor]:
        """Feature ``feature``'s decoder direction into its own layer and each later one."""
        later = (
            []
            if self.W_dec_later is None
            else [self.W_dec_later[feature, j] for j in range(self.n_later)]
        )
        return [self.W_dec[feature], *later]

    def change_writes(self, features: torch.Tensor, diff: torch.Tensor) -> list[torch.Tensor]:
        """What a change ``diff`` [T, n] of the activations of ``features`` writes to its own
        layer and each later one: ``[[T, d], …]``."""
        W_later = self.W_dec_later
        later = (
            [] if W_later is None else [diff @ W_later[features, j] for j in range(self.n_later)]
        )
        return [diff @ self.W_dec[features], *later]

    # -- the maths -------------------------------------------------------------
    def preactivation(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.W_enc + self.b_enc

    def activate(self, pre: torch.Tensor) -> torch.Tensor:
        return ACTIVATIONS[self.activation].apply(pre, self)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Feature activations for MLP inputs ``x`` [..., d_model] → [..., d_features]."""
        return self.activate(self.preactivation(x))

    def decode(self, acts: torch.Tensor) -> torch.Tensor:
        """The features' contribution ``acts @ W_dec + b_dec`` (without the skip term)."""
        return acts @ self.W_dec + self.b_dec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.decode(self.encode(x))
        return out if self.W_skip is None else out + x @ self.W_skip

    def encode_sparse(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Active features of ``x`` [n_pos, d_model]: indices [n, 2] (position, feature), values [n]."""
        acts = self.encode(x)
        indices = acts.nonzero()
        return indices, acts[indices[:, 0], indices[:, 1]]

    # -- files -----------------------------------------------------------------
    @property
    def mapped(self) -> bool:
        """Whether the weights are views of a memory-mapped file (:meth:`load` with ``mmap``)."""
        return self._mapped is not None

    def drop_pages(self) -> None:
        """Give the pages of memory-mapped weights back to the system: a whole pass over them
        (encoding) then leaves no trace in this process's memory; they are read from the file
        (or the system's cache) when next used.  Nothing to do for weights held in memory."""
        if self._mapped is not None:
            drop_pages(self._mapped)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_mapped"] = None  # a copy holds its own tensors, not the map
        return state

    def state(self) -> dict[str, torch.Tensor]:
        tensors = {
            "W_enc": self.W_enc,
            "b_enc": self.b_enc,
            "W_dec": self.W_dec,
            "b_dec": self.b_dec,
        }
        if self.threshold is not None:
            tensors["threshold"] = self.threshold
        if self.W_skip is not None:
            tensors["W_skip"] = self.W_skip
        if self.W_dec_later is not None:
            tensors["W_dec_later"] = self.W_dec_later
        return {name: t.detach().contiguous().cpu() for name, t in tensors.items()}

    def save(self, path: str | os.PathLike) -> None:
        """Write the transcoder as one safetensors file (activation and k in its metadata)."""
        meta = {"activation": self.activation, "k": "" if self.k is None else str(self.k)}
        save_safetensors(self.state(), path, metadata=meta)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        *,
        activation: str | None = None,
        k: int | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | None = None,
        mmap: bool | None = None,
    ) -> Transcoder:
        """Load a transcoder written by :meth:`save` (or any safetensors file with the same keys).

        ``mmap``: keep the weights in the file, memory-mapped, and read pages as they are used
        (``None``: for files of at least ``io.MAP_FROM_BYTES``, 64 MiB).  An attribution then
        holds only the decoder rows of active features and one layer's encoder at a time; a
        dtype or device change reads the whole file into memory as before."""
        tensors, meta, mapped = _read_weights(path, mmap, device)
        missing = [key for key in ("W_enc", "b_enc", "W_dec", "b_dec") if key not in tensors]
        if missing:
            raise ValueError(
                f"{os.fspath(path)}: missing tensors {missing}; found {sorted(tensors)}"
            )
        activation = (
            activation
            or meta.get("activation")
            or ("jumprelu" if "threshold" in tensors else "relu")
        )
        if k is None and meta.get("k"):
            if not (isinstance(meta["k"], str) and meta["k"].isascii() and meta["k"].isdigit()):
                raise ValueError(
                    f"{os.fspath(path)}: metadata k must be a whole number, got {meta['k']!r}"
                )
            k = int(meta["k"])
        if dtype is not None and any(t.dtype != dtype for t in tensors.values()):
            tensors, mapped = {name: t.to(dtype) for name, t in tensors.items()}, None
        try:
            tc = cls(
                tensors["W_enc"],
                tensors["b_enc"],
                tensors["W_dec"],
                tensors["b_dec"],
                activation,
                threshold=tensors.get("threshold"),
                k=k,
                W_skip=tensors.get("W_skip"),
                W_dec_later=tensors.get("W_dec_later"),
            )
        except (ValueError, TypeError) as err:
            raise ValueError(f"{os.fspath(path)}: {err}") from None
        tc._mapped = mapped
        tc.drop_pages()  # the checks read every value once
        return tc.to(device)


def _read_weights(path, mmap: bool | None, device) -> tuple[dict, dict, FileMap | None]:
    """A transcoder file's tensors, metadata and (when mapped: ``mmap``, or a large file on the
    CPU with ``mmap=None``) the map they are views of."""
    if mmap is None:
        mmap = os.path.isfile(path) and os.path.getsize(path) >= MAP_FROM_BYTES
    if mmap and (device is None or torch.device(device).type == "cpu"):
        return map_safetensors(path)
    return (*read_safetensors(path), None)


def _activation_parameters(activation: str, threshold, k, d_features: int):
    """``(threshold, k)`` checked for ``activation``: JumpReLU needs finite thresholds (a scalar or one
    per feature), TopK a whole k in [1, d_features]; neither is given to the others."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {tuple(ACTIVATIONS)}, got {activation!r}")
    if activation == "jumprelu":
        if threshold is None:
            raise ValueError("activation 'jumprelu' needs threshold=")
        threshold = _as_tensor("threshold", threshold)
        if threshold.ndim > 1 or threshold.numel() not in (1, d_features):
            raise ValueError(
                f"threshold has shape {tuple(threshold.shape)}; expected a scalar or ({d_features},)"
            )
        if not torch.isfinite(threshold).all():
            raise ValueError("threshold holds NaN or infinite values")
        threshold = threshold.broadcast_to((d_features,)).clone()
    elif threshold is not None:
        raise ValueError(f"threshold= is only used by 'jumprelu', not {activation!r}")
    if activation == "topk":
        if k is None:
            raise ValueError(f"activation 'topk' needs k in [1, {d_features}], got None")
        k = as_int("k (activation 'topk')", k, 1, d_features)
    elif k is not None:
        raise ValueError(f"k= is only used by 'topk', not {activation!r}")
    return threshold, k
