"""Transcoder activation functions, registered by name.

Each entry maps pre-activations to sparse activations, given the transcoder (for its
parameters: JumpReLU's ``threshold``, TopK's ``k``).  ``needs`` names the keyword the
constructor requires for it.  Adding an activation is one function and one registry line.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class Activation:
    name: str
    apply: Callable[[torch.Tensor, Any], torch.Tensor]
    needs: str | None = None  # "threshold" or "k"


def _relu(pre: torch.Tensor, tc) -> torch.Tensor:
    return torch.relu(pre)


def _jumprelu(pre: torch.Tensor, tc) -> torch.Tensor:
    return pre * (pre > tc.threshold)


def _topk(pre: torch.Tensor, tc) -> torch.Tensor:
    top = pre.topk(tc.k, dim=-1)
    return torch.zeros_like(pre).scatter(-1, top.indices, torch.relu(top.values))


ACTIVATIONS: dict[str, Activation] = {
    a.name: a
    for a in (
        Activation("relu", _relu),
        Activation("jumprelu", _jumprelu, needs="threshold"),
        Activation("topk", _topk, needs="k"),
    )
}
