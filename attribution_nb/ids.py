"""Node ids: the one place that writes and reads them.

Every node of a graph has a stable string id, built from numbers only (never from decoded
text, except a logit node's token, which is unique among the logits of one graph):

* feature ``f:L{layer}:P{position}:{feature}``  e.g. ``f:L2:P10:332``
* error node ``e:L{layer}:P{position}``
* token node ``t:P{position}``
* logit node ``l:{token}``

:class:`NodeId` parses and formats them; attribution, interventions, the widget and the
exports all go through it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

KINDS = ("feature", "error", "token", "logit")
_PATTERNS = {
    "feature": re.compile(r"^f:L(\d+):P(\d+):(\d+)$"),
    "error": re.compile(r"^e:L(\d+):P(\d+)$"),
    "token": re.compile(r"^t:P(\d+)$"),
}
EXAMPLES = "'f:L1:P3:42' (feature), 'e:L1:P3' (error node), 't:P3' (token), 'l:<token>' (logit)"


@dataclass(frozen=True)
class NodeId:
    """A parsed node id: ``kind`` and the numbers it carries (None where a kind has none)."""

    kind: str
    layer: int | None = None
    position: int | None = None
    feature: int | None = None
    token: str | None = None          # logit nodes

    @staticmethod
    def for_feature(layer: int, position: int, feature: int) -> str:
        return f"f:L{layer}:P{position}:{feature}"

    @staticmethod
    def for_error(layer: int, position: int) -> str:
        return f"e:L{layer}:P{position}"

    @staticmethod
    def for_token(position: int) -> str:
        return f"t:P{position}"

    @staticmethod
    def for_logit(token: str) -> str:
        return f"l:{token}"

    @classmethod
    def parse(cls, node_id: str) -> NodeId:
        """The parts of ``node_id``; raises ``ValueError`` naming it if it is not an id."""
        if not isinstance(node_id, str):
            raise ValueError(f"a node id is a string like {EXAMPLES}, got {node_id!r}")
        if node_id.startswith("l:"):
            return cls("logit", token=node_id[2:])
        for kind, pattern in _PATTERNS.items():
            m = pattern.match(node_id)
            if m:
                numbers = [int(x) for x in m.groups()]
                if kind == "feature":
                    return cls(kind, numbers[0], numbers[1], numbers[2])
                if kind == "error":
                    return cls(kind, numbers[0], numbers[1])
                return cls(kind, position=numbers[0])
        raise ValueError(f"unknown node id {node_id!r}; ids look like {EXAMPLES}")

    def __str__(self) -> str:
        if self.kind == "feature":
            return self.for_feature(self.layer, self.position, self.feature)  # type: ignore[arg-type]
        if self.kind == "error":
            return self.for_error(self.layer, self.position)  # type: ignore[arg-type]
        if self.kind == "token":
            return self.for_token(self.position)  # type: ignore[arg-type]
        return self.for_logit(self.token or "")
