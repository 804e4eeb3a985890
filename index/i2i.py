"""The item-to-item channel: a co-occurrence table built at train time, and its scoring.

The table is CSR over item labels: row a holds a's strongest ``neighbours`` items b with
w(a, b) = c(a, b) / (n_a^(1 - alpha) · n_b^alpha), where c counts how often one user engaged
with a and b in the same session or within ``window`` engaged sessions of each other (both
directions) and n counts an item's engaged sessions. alpha = 0 is P(b | a), which keeps popular
follow-ups (it beat cosine, alpha = 0.5, at every K on the demo world and Instacart).

A request scores candidate b by Σ decay^j · w(a, b) over the items a of the user's last
``recent_sessions`` engaged sessions (j = 0 for the latest). Shared by the service and offline
evaluation. ``I2I_FILE`` is the bundle file; ``ItemToItem.load`` validates it (a table of
another catalog size, out-of-range labels or non-finite weights are refused).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from index.features import CLICK, Session
from index.fusion import EMPTY
from index.history import top_scored
from index.vocab import Vocabulary

I2I_FILE = "i2i.npz"
I2I_FORMAT = 1


class I2IParams(BaseModel):
    model_config = ConfigDict(frozen=True)

    neighbours: int = Field(default=100, ge=1)  # kept per item (bytes per item: docs/architecture.md)
    window: int = Field(default=2, ge=0)  # engaged sessions apart that still co-occur
    alpha: float = Field(default=0.0, ge=0, le=1)
    recent_sessions: int = Field(default=10, ge=1)  # engaged sessions of the user that query
    decay: float = Field(default=0.8, gt=0, le=1)


class ItemToItem:
    """The co-occurrence table. Immutable; safe to share between threads."""

    def __init__(self, indptr: np.ndarray, indices: np.ndarray, weights: np.ndarray) -> None:
        self.indptr = indptr  # (n_items + 1,) int64
        self.indices = indices  # (nnz,) int32 neighbour label, strongest first per row
        self.weights = weights  # (nnz,) float32

    @property
    def n_items(self) -> int:
        return len(self.indptr) - 1

    @property
    def nnz(self) -> int:
        return len(self.indices)

    @property
    def nbytes(self) -> int:
        return int(self.indptr.nbytes + self.indices.nbytes + self.weights.nbytes)

    def save(self, path: Path) -> None:
        with path.open("wb") as f:
            np.savez(
                f,
                format=np.int64(I2I_FORMAT),
                indptr=self.indptr,
                indices=self.indices,
                weights=self.weights,
            )

    @classmethod
    def load(cls, path: Path, n_items: int) -> ItemToItem:
        """Read and validate; raises ValueError naming the problem."""
        with np.load(path, allow_pickle=False) as data:
            if int(data["format"]) != I2I_FORMAT:
                raise ValueError(f"i2i format {int(data['format'])}, this build reads {I2I_FORMAT}")
            indptr, indices, weights = data["indptr"], data["indices"], data["weights"]
        if not (np.issubdtype(indptr.dtype, np.integer) and np.issubdtype(indices.dtype, np.integer)):
            raise ValueError("i2i row pointers and neighbour labels must be integers")
        if len(indices) and (indices.min() < 0 or indices.max() >= n_items):  # before narrowing
            raise ValueError("i2i neighbour labels out of the catalog's range")
        indptr = indptr.astype(np.int64, copy=False)
        indices = indices.astype(np.int32, copy=False)
        weights = weights.astype(np.float32, copy=False)
        if len(indptr) != n_items + 1:
            raise ValueError(f"i2i table has {len(indptr) - 1} rows, the catalog {n_items} items")
        if indptr[0] != 0 or indptr[-1] != len(indices) or np.any(np.diff(indptr) < 0):
            raise ValueError("i2i row pointers are not a valid CSR index")
        if len(weights) != len(indices):
            raise ValueError(f"i2i has {len(indices)} neighbours but {len(weights)} weights")
        if not np.all(np.isfinite(weights)):
            raise ValueError("i2i weights are not all finite")
        return cls(indptr, indices, weights)

    @classmethod
    def build(
        cls,
        owner: np.ndarray,
        position: np.ndarray,
        item: np.ndarray,
        n_items: int,
        params: I2IParams,
    ) -> ItemToItem:
        """From engaged (owner, session position, item label) rows, ordered by owner then
        position (``model_export.ranking.flatten_sessions`` order)."""
        counts = np.bincount(item, minlength=n_items)
        # Engaged sessions numbered 0..G-1 in (owner, position) order, so a user's next engaged
        # session is the next number.
        span = int(position.max()) + 1 if len(position) else 1
        session_keys, group = np.unique(owner * span + position, return_inverse=True)
        group_owner = session_keys // span
        group_ptr = np.searchsorted(group, np.arange(len(session_keys) + 1))
        lefts, rights = [], []
        for distance in range(params.window + 1):
            partner = group + distance
            valid = partner < len(session_keys)
            valid[valid] = group_owner[partner[valid]] == owner[valid]
            which, other = gather_rows(group_ptr, partner[valid])
            a, b = item[np.flatnonzero(valid)[which]], item[other]
            lefts += [a, b] if distance else [a]  # the same-session join already has both orders
            rights += [b, a] if distance else [b]
        left = np.concatenate(lefts) if lefts else np.zeros(0, dtype=np.int64)
        right = np.concatenate(rights) if rights else np.zeros(0, dtype=np.int64)
        distinct = left != right
        pair_keys, pair_counts = np.unique(left[distinct] * n_items + right[distinct], return_counts=True)
        a, b = pair_keys // n_items, pair_keys % n_items
        alpha = params.alpha
        weight = pair_counts / (counts[a].astype(np.float64) ** (1 - alpha) * counts[b] ** alpha)
        order = np.lexsort((b, -weight, a))  # by row, strongest neighbours first
        a, b, weight = a[order], b[order], weight[order]
        rank = np.arange(len(a)) - np.searchsorted(a, a)
        keep = rank < params.neighbours
        a, b, weight = a[keep], b[keep], weight[keep]
        indptr = np.searchsorted(a, np.arange(n_items + 1)).astype(np.int64)
        return cls(indptr, b.astype(np.int32), weight.astype(np.float32))


def gather_rows(indptr: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For CSR rows ``rows``: (which entry of ``rows`` each stored element belongs to, the
    element's position in the CSR arrays), concatenated over the rows."""
    starts = indptr[rows]
    lengths = indptr[rows + 1] - starts
    which = np.repeat(np.arange(len(rows)), lengths)
    offsets = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return which, starts[which] + offsets


def i2i_candidates(
    sessions: Sequence[Session],
    vocab: Vocabulary,
    table: ItemToItem,
    params: I2IParams,
    depth: int,
    excluded: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """(labels, scores) of the neighbours of the user's recent engaged items, best first,
    at most ``depth``, none in ``excluded`` (sorted labels). Sessions oldest first."""
    query: list[int] = []
    query_weight: list[float] = []
    ago = 0
    for session in reversed(sessions):
        if ago >= params.recent_sessions:
            break
        engaged = [label for item, action in session.items if action >= CLICK
                   if (label := vocab.item_index(item)) is not None]  # fmt: skip
        if not engaged:
            continue
        query += engaged
        query_weight += [params.decay**ago] * len(engaged)
        ago += 1
    if not query:
        return EMPTY
    rows = np.asarray(query, dtype=np.int64)
    which, element = gather_rows(table.indptr, rows)
    score = np.asarray(query_weight)[which] * table.weights[element]
    return top_scored(table.indices[element].astype(np.int64), score, depth, excluded)
