"""Node ids: the one place that writes and reads them.

Every node of a graph has a stable string id, built from numbers only (never from decoded
text, which collides: byte pieces all decode to "�", `` Dallas`` and ``Dallas`` look alike):

* feature ``f:L{layer}:P{position}:{feature}``  e.g. ``f:L2:P10:332``
* error node ``e:L{layer}:P{position}``
* token node ``t:P{position}:{token id}``  e.g. ``t:P0:1``
* logit node ``l:P{position}:{token id}``  e.g. ``l:P10:231``
* custom target node ``l:P{position}:c{k}`` (the k-th custom target, kind ``logit``)  e.g. ``l:P10:c0``

(Graph files written before token ids were in the ids, with ``t:P{position}`` and
``l:{token}``, are converted when loaded: see :mod:`attribution_nb.graph.files`.)

:class:`NodeId` parses and formats them; attribution, interventions, the widget and the
exports all go through it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

KINDS = ("feature", "error", "token", "logit")
_N = r"(0|[1-9][0-9]{0,17})"  # a canonical number: ASCII digits, no leading zero, no sign
_PATTERNS = {
    "feature": re.compile(rf"f:L{_N}:P{_N}:{_N}"),
    "error": re.compile(rf"e:L{_N}:P{_N}"),
    "token": re.compile(rf"t:P{_N}:{_N}"),
    "logit": re.compile(rf"l:P{_N}:{_N}"),
}
_TARGET = re.compile(rf"l:P{_N}:c{_N}")
EXAMPLES = (
    "'f:L1:P3:42' (feature), 'e:L1:P3' (error node), 't:P3:1042' (token), "
    "'l:P10:231' (logit: position and token id)"
)


@dataclass(frozen=True)
class NodeId:
    """A parsed node id: ``kind`` and the numbers it carries (None where a kind has none)."""

    kind: str
    layer: int | None = None
    position: int | None = None
    feature: int | None = None
    token_id: int | None = None  # token and logit nodes
    target: int | None = None  # custom target nodes (kind "logit", no token id)

    @staticmethod
    def for_feature(layer: int, position: int, feature: int) -> str:
        return f"f:L{layer}:P{position}:{feature}"

    @staticmethod
    def for_error(layer: int, position: int) -> str:
        return f"e:L{layer}:P{position}"

    @staticmethod
    def for_token(position: int, token_id: int) -> str:
        return f"t:P{position}:{token_id}"

    @staticmethod
    def for_logit(position: int, token_id: int) -> str:
        return f"l:P{position}:{token_id}"

    @staticmethod
    def for_target(position: int, k: int) -> str:
        return f"l:P{position}:c{k}"

    @classmethod
    def parse(cls, node_id: str) -> NodeId:
        """The parts of ``node_id``; raises ``ValueError`` naming it if it is not an id."""
        if not isinstance(node_id, str):
            raise ValueError(f"a node id is a string like {EXAMPLES}, got {node_id!r}")
        for kind, pattern in _PATTERNS.items():
            m = pattern.fullmatch(node_id)
            if m:
                n = [int(x) for x in m.groups()]
                if kind == "feature":
                    return cls(kind, layer=n[0], position=n[1], feature=n[2])
                if kind == "error":
                    return cls(kind, layer=n[0], position=n[1])
                return cls(kind, position=n[0], token_id=n[1])
        m = _TARGET.fullmatch(node_id)
        if m:
            return cls("logit", position=int(m.group(1)), target=int(m.group(2)))
        raise ValueError(f"unknown node id {node_id!r}; ids look like {EXAMPLES}")

    @staticmethod
    def kind_of(node_id: str) -> str | None:
        """The kind an id's prefix announces (``"f:"`` feature …), whether or not the rest parses."""
        return {"f:": "feature", "e:": "error", "t:": "token", "l:": "logit"}.get(str(node_id)[:2])

    def __str__(self) -> str:
        if self.kind == "feature":
            return self.for_feature(self.layer, self.position, self.feature)  # type: ignore[arg-type]
        if self.kind == "error":
            return self.for_error(self.layer, self.position)  # type: ignore[arg-type]
        if self.kind == "token":
            return self.for_token(self.position, self.token_id)  # type: ignore[arg-type]
        if self.target is not None:
            return self.for_target(self.position, self.target)  # type: ignore[arg-type]
        return self.for_logit(self.position, self.token_id)  # type: ignore[arg-type]
