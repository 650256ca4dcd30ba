"""Sparse adjacency rows as they arrive (in any order), assembled into CSR at the end."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


class RowStore:
    """Pieces ``(counts, columns, values)`` of rows, found again by row key."""

    def __init__(self):
        self.pieces: list = []  # (counts, cols, vals)
        self.where: dict = {}  # row key -> (piece, start, stop)

    def add(self, keys, piece) -> None:
        counts, cols, vals = piece
        ends = np.cumsum(counts)
        k = len(self.pieces)
        self.pieces.append(piece)
        for key, stop, c in zip(keys, ends.tolist(), counts.tolist()):
            self.where[key] = (k, stop - c, stop)

    def csr(
        self, row_keys, n_cols: int, col_map: np.ndarray | None = None, dtype=np.float32
    ) -> sp.csr_array:
        """Rows ``row_keys`` (None = an empty row) over ``n_cols`` columns; ``col_map`` renumbers
        columns (−1 drops one) and must keep their order."""
        counts = np.zeros(len(row_keys), dtype=np.int64)
        spans: list[list[int]] = []  # (piece, start, stop), consecutive rows merged
        for i, key in enumerate(row_keys):
            if key is None:
                continue
            k, a, b = self.where[key]
            counts[i] = b - a
            if spans and spans[-1][0] == k and spans[-1][2] == a:
                spans[-1][2] = b
            else:
                spans.append([k, a, b])
        cols = [self.pieces[k][1][a:b] for k, a, b in spans]
        vals = [self.pieces[k][2][a:b] for k, a, b in spans]
        indices = np.concatenate(cols) if cols else np.zeros(0, dtype=np.int32)
        data = np.concatenate(vals).astype(dtype, copy=False) if vals else np.zeros(0, dtype=dtype)
        if col_map is not None:
            indices = col_map[indices]
            keep = indices >= 0
            if not keep.all():
                ends = np.cumsum(counts)
                kept_before_end = np.concatenate([[0], np.cumsum(keep)])[ends]
                counts = np.diff(np.concatenate([[0], kept_before_end]))
                indices, data = indices[keep], data[keep]
        indptr = np.concatenate([[0], np.cumsum(counts)]).astype(
            np.int32 if len(indices) < 2**31 else np.int64
        )
        return sp.csr_array((data, indices, indptr), shape=(len(row_keys), n_cols))
