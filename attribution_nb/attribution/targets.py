"""Attribution targets: what a graph explains.

By default a graph explains the top logits (each token's logit minus the mean logit, read at
the unembedding's input).  ``targets=`` also takes custom targets, each one node of the graph:

* :class:`Logit` — one token's demeaned logit (a plain string or id means the same, weighted
  by its probability);
* :class:`LogitDiff` — a contrast ``logit(a) − logit(b)``, e.g. *Austin − Dallas*;
* :class:`Direction` — a vector read in the residual stream: at the unembedding's input
  (``layer=None``; a vector of the vocabulary's size is a weighting of the logits, mapped through
  the demeaned unembedding) or where layer ``layer``'s transcoder reads (like a feature's encoder);
* any weighted mix of these read at the same place: ``0.5 * LogitDiff("austin", "dallas") +
  Direction(v)`` is one target whose direction is the weighted sum.

Every target is a linear read-out ``v · x[position]`` of the frozen replacement model, so the
edges into it are exact direct effects, as for logits, and its incoming edges plus the constant
terms (biases through the frozen model) equal its value.  ``weight`` (in (0, 1]; default 1) is
what a custom target counts for in influence and pruning, where a token target counts its
probability.  Soft-capped models (Gemma-2) are explained before the cap, as for logits.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np
import torch

from ..checks import as_float, as_int


class Target:
    """A custom attribution target (see the module docstring).  Subclasses say where it is read
    and its direction; ``*`` by a number and ``+``/``-`` between targets make a :class:`Mix`."""

    name: str
    weight: float

    def terms(self) -> list[tuple[float, Target]]:
        return [(1.0, self)]

    def __mul__(self, k) -> Mix:
        k = as_float("a target's coefficient", k)
        return Mix(tuple((k * c, t) for c, t in self.terms()))

    __rmul__ = __mul__

    def __add__(self, other) -> Mix:
        if not isinstance(other, Target):
            return NotImplemented
        return Mix(tuple(self.terms()) + tuple(other.terms()))

    def __sub__(self, other) -> Mix:
        if not isinstance(other, Target):
            return NotImplemented
        return self + (-1.0) * other

    def __neg__(self) -> Mix:
        return (-1.0) * self

    # where it is read: None = the unembedding input; a layer = that layer's transcoder input
    def place(self) -> tuple[int | None, int]:
        return None, -1

    def direction(self, model) -> torch.Tensor:
        raise NotImplementedError

    def label(self, model) -> str:
        raise NotImplementedError


def _weight(weight) -> float:
    w = as_float("a target's weight", weight, 0.0, 1.0)
    if w == 0:
        raise ValueError(
            "a target's weight must be in (0, 1], got 0 (a target that counts for nothing)"
        )
    return w


@dataclass(frozen=True, eq=False)
class Logit(Target):
    """One token's demeaned logit as a custom target (``weight`` instead of its probability)."""

    token: str | int
    weight: float = 1.0
    name: str = ""

    def __post_init__(self):
        object.__setattr__(self, "weight", _weight(self.weight))

    def direction(self, model) -> torch.Tensor:
        return model.demeaned_unembedding([_token_id(model, self.token)])[0]

    def label(self, model) -> str:
        return self.name or _token_name(model, self.token)


@dataclass(frozen=True, eq=False)
class LogitDiff(Target):
    """``logit(a) − logit(b)`` at the last position: a contrast such as *Austin − Dallas*."""

    a: str | int
    b: str | int
    weight: float = 1.0
    name: str = ""

    def __post_init__(self):
        object.__setattr__(self, "weight", _weight(self.weight))

    def direction(self, model) -> torch.Tensor:
        ids = [_token_id(model, self.a), _token_id(model, self.b)]
        if ids[0] == ids[1]:
            raise ValueError(f"LogitDiff({self.a!r}, {self.b!r}) compares a token with itself")
        rows = model.demeaned_unembedding(ids)
        return rows[0] - rows[1]

    def label(self, model) -> str:
        return self.name or f"{_token_name(model, self.a)} − {_token_name(model, self.b)}"


@dataclass(frozen=True, eq=False)
class Direction(Target):
    """A vector read in the residual stream at ``position`` (default: the last).

    ``layer=None``: at the unembedding's input (after the final norm); a vector of the
    vocabulary's size is a weighting of the (demeaned) logits.  ``layer=ℓ``: where layer ℓ's
    transcoder reads (its MLP input, through the frozen norm), like a feature's encoder."""

    vector: object
    layer: int | None = None
    position: int = -1
    name: str = ""
    weight: float = 1.0

    def __post_init__(self):
        raw = self.vector
        if (torch.is_tensor(raw) and (raw.is_complex() or raw.dtype == torch.bool)) or (
            isinstance(raw, np.ndarray) and raw.dtype.kind in "cbOUS"
        ):
            raise ValueError(f"a Direction's vector must hold real numbers, got dtype {raw.dtype}")
        try:
            v = torch.as_tensor(
                np.asarray(raw, dtype=np.float64)
                if not torch.is_tensor(raw)
                else raw.detach().cpu().double()
            )
        except (TypeError, ValueError) as err:
            raise ValueError(
                f"a Direction's vector must be real numbers in one dimension, got {raw!r:.60} ({err})"
            ) from None
        if v.ndim != 1 or len(v) == 0 or not torch.isfinite(v).all():
            raise ValueError(
                f"a Direction's vector must be 1-D, non-empty and finite, got shape {tuple(v.shape)}"
            )
        if not v.abs().max() > 0:
            raise ValueError(
                "a Direction's vector is all zeros: it reads nothing, and its graph would have no edges"
            )
        object.__setattr__(self, "vector", v)
        if self.layer is not None:
            object.__setattr__(self, "layer", as_int("a Direction's layer", self.layer, minimum=0))
        if not isinstance(self.position, numbers.Integral) or isinstance(self.position, bool):
            raise ValueError(f"a Direction's position must be an integer, got {self.position!r}")
        object.__setattr__(self, "weight", _weight(self.weight))

    def place(self) -> tuple[int | None, int]:
        return self.layer, int(self.position)

    def direction(self, model) -> torch.Tensor:
        v = torch.as_tensor(self.vector)  # (a tensor already, since __post_init__)
        d = model.d_model
        if len(v) == d:
            if self.layer is not None and self.layer >= model.n_layers:
                raise ValueError(
                    f"a Direction's layer must be below {model.n_layers} (or None: the unembedding "
                    f"input), got {self.layer}"
                )
            return v
        vocab = model.with_unembedding(lambda W_U: W_U.shape[0])
        if len(v) == vocab and self.layer is None:

            def through(W_U, v=v):
                W = W_U.double()
                return (v.to(W.device) @ W - v.sum() * W.mean(0)).cpu()

            return model.with_unembedding(through)
        raise ValueError(
            f"a Direction's vector has {len(v)} entries: give d_model = {d} (a residual direction) "
            f"or, with layer=None, the vocabulary's {vocab} (a weighting of the logits)"
        )

    def label(self, model) -> str:
        return self.name or f"direction{'' if self.layer is None else f' @L{self.layer}'}"


@dataclass(frozen=True, eq=False)
class Mix(Target):
    """A weighted sum of targets read at the same place (made by ``*``, ``+`` and ``-``)."""

    parts: tuple
    weight: float = 1.0
    name: str = ""

    def terms(self) -> list[tuple[float, Target]]:
        return list(self.parts)

    def place(self) -> tuple[int | None, int]:
        places = {t.place() for _, t in self.parts}
        if len(places) != 1:
            raise ValueError(
                f"a mix of targets must read them at one place (layer, position); got {sorted(places, key=str)}"
            )
        return places.pop()

    def direction(self, model) -> torch.Tensor:
        return sum(
            (c * t.direction(model).double() for c, t in self.parts),
            torch.zeros(model.d_model, dtype=torch.float64),
        )

    def label(self, model) -> str:
        if self.name:
            return self.name
        text = " + ".join(f"{c:g}·({t.label(model)})" for c, t in self.parts)
        return text.replace("+ -", "− ")

    def named(self, name: str, weight: float = 1.0) -> Mix:
        """This mix with a name and a weight."""
        return Mix(self.parts, _weight(weight), str(name))


@dataclass
class Resolved:
    """A target as attribution uses it: a node name, a token id (token targets), where it is read
    (layer L = the unembedding input), the direction, its weight and its value in the clean run."""

    name: str
    token_id: int | None
    layer: int
    position: int
    vector: torch.Tensor
    weight: float
    value: float


def resolve_targets(
    model, cap, targets, max_n_logits: int, desired_logit_prob: float
) -> list[Resolved]:
    """The graph's target nodes: the top logits (``targets=None``), or the given tokens and custom
    targets, in the order given."""
    L, T = cap.mlp_in.shape[0], cap.mlp_in.shape[1]
    probs = torch.softmax(cap.logits[-1].double(), -1).cpu()
    if targets is None:
        ids = top_logits(probs, max_n_logits, desired_logit_prob)
    else:
        items = (
            [targets]
            if isinstance(targets, (str, Target)) or not hasattr(targets, "__iter__")
            else list(targets)
        )
        if not items:
            raise ValueError(
                "targets is empty; give at least one token or target, or None for the top logits"
            )
        ids = [t for t in items if not isinstance(t, Target)]
        customs = [t for t in items if isinstance(t, Target)]
        if customs:
            tokens = _token_targets(model, probs, cap, ids, T, L)
            return _dedupe(tokens + [_custom(model, cap, t, L, T) for t in customs])
    return _token_targets(model, probs, cap, ids, T, L)


def top_logits(probs: torch.Tensor, max_n_logits: int, desired_logit_prob: float) -> list[int]:
    """The top logits until their cumulative probability reaches ``desired_logit_prob``, at
    most ``max_n_logits``."""
    if max_n_logits < 1:
        raise ValueError(f"max_n_logits must be at least 1, got {max_n_logits}")
    top = probs.topk(min(max_n_logits, len(probs)))
    n = int((top.values.cumsum(0) < desired_logit_prob).sum()) + 1
    return top.indices[: min(n, max_n_logits)].tolist()


def _token_targets(model, probs, cap, targets, T: int, L: int) -> list[Resolved]:
    ids = list(dict.fromkeys(_token_id(model, t, len(probs)) for t in targets))
    if not ids:
        return []
    rows = model.demeaned_unembedding(ids)
    return [
        Resolved(name, tid, L, T - 1, rows[i], float(probs[tid]), float(cap.logits[-1, tid]))
        for i, (tid, name) in enumerate(zip(ids, model.token_strings(ids)))
    ]


def _custom(model, cap, target: Target, L: int, T: int) -> Resolved:
    layer, position = target.place()
    if not -T <= position < T:
        raise ValueError(
            f"a target's position must be in [-{T}, {T}) for this {T}-token prompt, got {position}"
        )
    position %= T
    vector = target.direction(model).detach().to("cpu", torch.float64)
    read = cap.unembed_in[position] if layer is None else cap.mlp_in[layer, position]
    value = float(vector @ read.detach().to("cpu", torch.float64))
    return Resolved(
        target.label(model),
        None,
        L if layer is None else int(layer),
        position,
        vector,
        float(target.weight),
        value,
    )


def _dedupe(resolved: list[Resolved]) -> list[Resolved]:
    names = [r.name for r in resolved]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"two targets are both named {dup[0]!r}; give one a name= of its own")
    return resolved


def _token_id(model, token, vocab: int | None = None) -> int:
    tid = (
        model.token_id(token)
        if isinstance(token, str)
        else as_int("a target (a token string or id)", token)
    )
    vocab = vocab if vocab is not None else model.with_unembedding(lambda W_U: W_U.shape[0])
    if not 0 <= tid < vocab:
        raise ValueError(f"target token id {tid} is outside the vocabulary [0, {vocab})")
    return tid


def _token_name(model, token) -> str:
    return token if isinstance(token, str) else model.token_strings([int(token)])[0]
