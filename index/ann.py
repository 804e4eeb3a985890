"""The item ANN index: hnswlib HNSW over item vectors, labelled by item index.

Queries are thread-safe in hnswlib (the GIL is released during search); ``ef`` is set once at
load and never changed after, because hnswlib keeps it as index-wide state and does not
persist it in the file (the manifest records it).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

import hnswlib
import numpy as np

from index.bundle import HnswParams

# The start of an hnswlib (0.5-0.8) index file: offset of level 0, max elements, element count,
# bytes per element, offset of the label in an element, offset of the vector in it.
_HEADER = struct.Struct("<6Q")


class ItemIndex:
    def __init__(self, index: hnswlib.Index, params: HnswParams, num_threads: int = 1) -> None:
        self._index = index
        self.params = params
        self._index.set_ef(params.ef_search)
        self._index.set_num_threads(num_threads)

    @classmethod
    def build(cls, vectors: np.ndarray, params: HnswParams, num_threads: int = 1) -> ItemIndex:
        """vectors: (N, D) float32; row i gets label i."""
        count, dim = vectors.shape
        index = hnswlib.Index(space=params.space, dim=dim)
        index.init_index(max_elements=max(count, 1), M=params.M, ef_construction=params.ef_construction)
        index.set_num_threads(num_threads)
        index.add_items(np.ascontiguousarray(vectors, dtype=np.float32), np.arange(count))
        return cls(index, params, num_threads)

    @classmethod
    def load(cls, path: Path, dim: int, count: int, params: HnswParams, num_threads: int = 1) -> ItemIndex:
        """Raises ValueError when the file holds vectors of another dim, RuntimeError (hnswlib)
        when it is truncated or otherwise unreadable."""
        _check_dim(path, dim)
        index = hnswlib.Index(space=params.space, dim=dim)
        index.load_index(str(path), max_elements=max(count, 1))
        return cls(index, params, num_threads)

    def save(self, path: Path) -> None:
        self._index.save_index(str(path))

    def vectors(self) -> np.ndarray:
        """(count, dim) float32: the stored vectors in label order (for offline re-use)."""
        return np.asarray(self._index.get_items(np.arange(self.count), return_type="numpy"), dtype=np.float32)

    @property
    def count(self) -> int:
        return int(self._index.get_current_count())

    @property
    def dim(self) -> int:
        return int(self._index.dim)

    def recall_at(self, queries: np.ndarray, exact: np.ndarray, ef: int) -> float:
        """Mean share of each query's exact top-k (``exact``: (Q, k) labels) that a search with
        ``ef`` finds. Changes the index's ef: only for an index nobody else is searching."""
        k = int(exact.shape[1])
        self._index.set_ef(ef)
        labels, _ = self._index.knn_query(np.ascontiguousarray(queries, dtype=np.float32), k=k)
        self._index.set_ef(self.params.ef_search)
        found = 0
        for got, want in zip(labels, exact, strict=True):
            found += len(np.intersect1d(got, want, assume_unique=True))
        return found / (k * len(exact))

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(labels, scores), each (B, k'), best first; k' = min(k, count).

        Scores are similarities (higher is better) for ``ip``/``cosine``, negated squared
        distances for ``l2``.
        """
        k = min(k, self.count)
        if k == 0:
            empty = np.zeros((len(queries), 0))
            return empty.astype(np.int64), empty.astype(np.float32)
        # hnswlib searches with max(ef, k) itself, so a large k never needs a (shared) set_ef.
        labels, distances = self._index.knn_query(np.ascontiguousarray(queries, dtype=np.float32), k=k)
        scores = -distances if self.params.space == "l2" else 1.0 - distances
        return labels.astype(np.int64), scores.astype(np.float32)

    def search_excluding(
        self, vector: np.ndarray, k: int, excluded: frozenset[int]
    ) -> tuple[np.ndarray, np.ndarray]:
        """``search_excluding`` over this index, starting at ef_search: hnswlib explores ef
        candidates whatever k is below it, so the first ef neighbours cost what k of them do."""
        return search_excluding(self.search, self.count, vector, k, excluded, self.params.ef_search)


def search_excluding(
    search: Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]],
    count: int,
    vector: np.ndarray,
    k: int,
    excluded: frozenset[int],
    free: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """The top-k (labels int64, scores float32) for ``vector`` (1, D) not in ``excluded``, best
    first: exactly min(k, ``count`` - excluded in the catalog) of them. ``search`` is an
    ``ItemIndex.search`` over ``count`` items; ``free``: how many neighbours cost no more than k
    (the index's ef_search).

    The first search asks for k + len(excluded) while that fits in ``free``, else for
    max(k, ``free``) — not for k + every excluded item, which would grow the search with the
    user's whole history although most of it lies nowhere near the query. When that comes up
    short, the share of excluded items among what it returned says how deep k allowed ones
    lie: the next search asks for k over that share (plus a quarter), at most
    k + len(excluded) (enough whenever the index returns what it is asked for), and doubling
    (up to the whole catalog) finishes it.
    """
    want = min(max(k, min(k + len(excluded), free)), count)
    while True:
        labels, scores = search(vector, want)
        # a set lookup per candidate: np.isin sorts both arrays (~10x slower at these sizes)
        keep = np.fromiter((label not in excluded for label in labels[0].tolist()), bool, labels.shape[1])
        kept = int(keep.sum())
        if kept >= k or want >= count:
            return labels[0][keep][:k].astype(np.int64), scores[0][keep][:k].astype(np.float32)
        estimate = int(1.25 * k * want / max(kept, 1)) + 1
        want = min(max(2 * want, min(estimate, k + len(excluded))), count)


def _check_dim(path: Path, dim: int) -> None:
    """hnswlib takes the dim from its caller, not the file: an index of 16-dim vectors loads as
    8-dim (answering nonsense) or 32-dim (reading past each vector), so compare first."""
    with path.open("rb") as f:
        header = f.read(_HEADER.size)
    if len(header) < _HEADER.size:
        raise ValueError(f"{len(header)} bytes, shorter than an hnswlib header")
    label_offset, vector_offset = _HEADER.unpack(header)[4:]
    stored = (label_offset - vector_offset) / np.dtype(np.float32).itemsize
    if stored != dim:
        raise ValueError(f"index vectors have dim {stored:g}, expected {dim}")


def exact_top_k(
    items: np.ndarray, queries: np.ndarray, k: int, space: str = "ip", chunk: int = 256
) -> np.ndarray:
    """(Q, min(k, N)) labels of the true nearest items under ``space``, best first (brute
    force, numpy; ``chunk`` queries at a time bounds the (chunk, N) score matrix)."""
    k = min(k, len(items))
    out = np.empty((len(queries), k), dtype=np.int64)
    if k == 0:
        return out
    if space == "cosine":
        items = items / np.maximum(np.linalg.norm(items, axis=1, keepdims=True), 1e-12)
    for start in range(0, len(queries), chunk):
        q = queries[start : start + chunk]
        # l2: -|x - q|² ranks like 2 q·x - |x|² (|q|² is the same for every item)
        scores = 2 * q @ items.T - np.sum(items**2, axis=1)[None, :] if space == "l2" else q @ items.T
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1)
        out[start : start + chunk] = np.take_along_axis(top, order, axis=1)
    return out


def choose_ef(
    index: ItemIndex,
    items: np.ndarray,
    queries: np.ndarray,
    k: int,
    target: float,
    ladder: tuple[float, ...] = (1, 1.5, 2, 3, 4, 6, 8),
) -> tuple[int, float]:
    """The smallest ef (a multiple of k from ``ladder``; hnswlib never searches with less than
    k) whose recall@k against exact search on ``queries`` reaches ``target``; the largest if
    none does. Returns (ef, the recall it measured)."""
    k = min(k, index.count)
    exact = exact_top_k(items, queries, k, index.params.space)
    ef, recall = k, 0.0
    for factor in ladder:
        ef = round(k * factor)
        recall = index.recall_at(queries, exact, ef)
        if recall >= target:
            break
    return ef, recall
