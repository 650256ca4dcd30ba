"""Attribution graphs as data: :class:`AttributionGraph` (tables, pruning, files) and the
pure graph maths (:mod:`.maths`: the one influence walk, pruning, scores on numpy / scipy arrays)."""

from __future__ import annotations

from .files import NODE_COLUMNS
from .graph import AttributionGraph
from .maths import (
    InfluenceWalk,
    as_csr,
    completeness_score,
    compute_influence,
    edge_scores,
    entry_rows,
    mass_before,
    normalize_rows,
    prune_masks,
    replacement_score,
)

__all__ = [
    "NODE_COLUMNS",
    "AttributionGraph",
    "InfluenceWalk",
    "as_csr",
    "completeness_score",
    "compute_influence",
    "edge_scores",
    "entry_rows",
    "mass_before",
    "normalize_rows",
    "prune_masks",
    "replacement_score",
]
