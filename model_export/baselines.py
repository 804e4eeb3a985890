"""Baselines: rankers without a neural model, fitted on the training period only.

Each is a ``model_export.ranking.Ranker`` fitted on ``Dataset.train`` (the sessions before the
validation period, the same split the NSP model trains on), so the harness judges them exactly
like the model. "Engaged" means a click or deeper action; counts are per session (an item
engaged several times in one session counts once).

- ``PopularityRanker``: most engaged items, globally or for the target session's scene.
- ``UserHistoryRanker``: the user's own past items by action-weighted, recency-decayed
  frequency (strong where people buy the same things again), then popularity — the service's
  history channel with default weights (``index.history``).
- ``CooccurrenceRanker``: items engaged by the same users within a short window of the user's
  recent engaged items (item-to-item, normalised by popularity), then popularity — the
  service's i2i channel with default settings (``index.i2i``).

Popularity is vectorised numpy over flat (owner, session, item) arrays; the two channel
baselines call the service's per-request scoring once per case, so they judge exactly what the
service computes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from index.features import CLICK, Session
from index.history import HistoryParams, history_candidates
from index.i2i import I2IParams, ItemToItem, i2i_candidates
from index.vocab import Vocabulary
from model_export.channels import pad_rows, seen_labels
from model_export.data import EvalCase
from model_export.ranking import (
    Ranker,
    SessionArrays,
    fetch_width,
    flatten_sessions,
    seen_items,
    top_k_unseen,
)


def complete_order(prefix: np.ndarray, n_items: int) -> np.ndarray:
    """``prefix``'s distinct items in order, then every other catalog item by index."""
    _, first = np.unique(prefix, return_index=True)
    head = prefix[np.sort(first)]
    rest = np.setdiff1d(np.arange(n_items), head, assume_unique=True)
    return np.concatenate([head, rest]).astype(np.int64)


Training = Mapping[str, Sequence[Session]] | SessionArrays  # ``Dataset.train``, or it flattened


def training_arrays(train: Training, vocab: Vocabulary) -> SessionArrays:
    """``train`` flattened (once: ``fit_baselines`` shares the result between baselines)."""
    return train if isinstance(train, SessionArrays) else flatten_sessions(list(train.values()), vocab)


def engaged_counts(flat: SessionArrays, n_items: int) -> np.ndarray:
    """(n_items,) number of sessions in which each item was engaged."""
    return np.bincount(flat.item[flat.action >= CLICK], minlength=n_items)


def popularity_order(counts: np.ndarray) -> np.ndarray:
    """Item indices by count descending, ties by index."""
    return np.argsort(-counts, kind="stable").astype(np.int64)


class PopularityRanker:
    """Most engaged items in training; per scene, that scene's counts first (then global counts
    break ties, so unknown or sparse scenes fall back to the global order)."""

    def __init__(self, vocab: Vocabulary, order: np.ndarray, scene_orders: Mapping[str, np.ndarray]) -> None:
        self.vocab = vocab
        self.order = order  # full catalog order
        self.scene_orders = dict(scene_orders)

    @classmethod
    def fit(cls, train: Training, vocab: Vocabulary, per_scene: bool) -> PopularityRanker:
        flat = training_arrays(train, vocab)
        counts = engaged_counts(flat, vocab.n_items)
        scene_orders = {}
        if per_scene:
            engaged = flat.action >= CLICK
            for token, scene in enumerate(vocab.scenes, start=1):
                in_scene = engaged & (flat.scene == token)
                if np.any(in_scene):
                    scene_counts = np.bincount(flat.item[in_scene], minlength=vocab.n_items)
                    scene_orders[scene] = np.lexsort((-counts, -scene_counts)).astype(np.int64)
        return cls(vocab, popularity_order(counts), scene_orders)

    @classmethod
    def from_lists(
        cls, popularity: Mapping[str, list[str]], vocab: Vocabulary, per_scene: bool
    ) -> PopularityRanker:
        """From ``Dataset.popularity`` (scene → top item ids, ``"*"`` = all scenes): the scene's
        list, then the global list, then the rest of the catalog — the service's fallback."""

        def indices(ids: list[str]) -> np.ndarray:
            return np.asarray([i for i in map(vocab.item_index, ids) if i is not None], dtype=np.int64)

        overall = indices(popularity.get("*", []))
        scene_orders = {}
        if per_scene:
            for scene, ids in popularity.items():
                if scene != "*":
                    scene_orders[scene] = complete_order(
                        np.concatenate([indices(ids), overall]), vocab.n_items
                    )
        return cls(vocab, complete_order(overall, vocab.n_items), scene_orders)

    def rank(self, cases: Sequence[EvalCase], k: int, exclude_seen: bool) -> np.ndarray:
        seen = seen_items(cases, self.vocab) if exclude_seen else None
        width = fetch_width(k, seen, self.vocab.n_items)
        rows = [self.scene_orders.get(c.target.scene, self.order)[:width] for c in cases]
        candidates = np.stack(rows) if rows else np.zeros((0, width), dtype=np.int64)
        return top_k_unseen(candidates, k, seen)


def pad_with_popularity(
    cases: Sequence[EvalCase],
    rows: Sequence[np.ndarray],
    vocab: Vocabulary,
    order: np.ndarray,
    k: int,
    exclude_seen: bool,
) -> np.ndarray:
    """(len(cases), k): each row, then the ``order`` catalog items not in it (nor, with
    ``exclude_seen``, in the case's history)."""
    fills = []
    for case, row in zip(cases, rows, strict=True):
        drop = seen_labels(case, vocab) if exclude_seen else np.zeros(0, dtype=np.int64)
        head = order[: k + len(row) + len(drop)]
        fills.append(head[~np.isin(head, drop)])
    return pad_rows(rows, fills, k)


class UserHistoryRanker:
    """The history channel (``index.history``) with the given weights, then global popularity."""

    def __init__(
        self, vocab: Vocabulary, popularity: np.ndarray, params: HistoryParams | None = None
    ) -> None:
        self.vocab = vocab
        self.popularity = popularity
        self.params = params or HistoryParams()

    @classmethod
    def fit(
        cls, train: Training, vocab: Vocabulary, params: HistoryParams | None = None
    ) -> UserHistoryRanker:
        counts = engaged_counts(training_arrays(train, vocab), vocab.n_items)
        return cls(vocab, popularity_order(counts), params)

    def rank(self, cases: Sequence[EvalCase], k: int, exclude_seen: bool) -> np.ndarray:
        rows = []
        for case in cases:
            drop = seen_labels(case, self.vocab) if exclude_seen else np.zeros(0, dtype=np.int64)
            rows.append(history_candidates(case.history, self.vocab, case.target.ts, self.params, k, drop)[0])
        return pad_with_popularity(cases, rows, self.vocab, self.popularity, k, exclude_seen)


@dataclass
class CooccurrenceRanker:
    """The i2i channel (``index.i2i``: table and scoring), then global popularity."""

    vocab: Vocabulary
    popularity: np.ndarray
    table: ItemToItem
    params: I2IParams

    @classmethod
    def fit(cls, train: Training, vocab: Vocabulary, params: I2IParams | None = None) -> CooccurrenceRanker:
        params = params or I2IParams()
        flat = training_arrays(train, vocab)
        engaged = flat.action >= CLICK
        table = ItemToItem.build(
            flat.owner[engaged], flat.position[engaged], flat.item[engaged], vocab.n_items, params
        )
        counts = np.bincount(flat.item[engaged], minlength=vocab.n_items)
        return cls(vocab, popularity_order(counts), table, params)

    @property
    def nnz(self) -> int:
        return self.table.nnz

    def rank(self, cases: Sequence[EvalCase], k: int, exclude_seen: bool) -> np.ndarray:
        rows = []
        for case in cases:
            drop = seen_labels(case, self.vocab) if exclude_seen else np.zeros(0, dtype=np.int64)
            rows.append(i2i_candidates(case.history, self.vocab, self.table, self.params, k, drop)[0])
        return pad_with_popularity(cases, rows, self.vocab, self.popularity, k, exclude_seen)


def fit_baselines(train: Training, vocab: Vocabulary) -> dict[str, Ranker]:
    """Every baseline with its default settings, by display name."""
    flat = training_arrays(train, vocab)
    return {
        "popularity (global)": PopularityRanker.fit(flat, vocab, per_scene=False),
        "popularity (per scene)": PopularityRanker.fit(flat, vocab, per_scene=True),
        "user history": UserHistoryRanker.fit(flat, vocab),
        "co-occurrence": CooccurrenceRanker.fit(flat, vocab),
    }
