"""Baselines: rankers without a neural model, fitted on the training period only.

Each is a ``model_export.ranking.Ranker`` fitted on ``Dataset.train`` (the sessions before the
validation period, the same split the NSP model trains on), so the harness judges them exactly
like the model. "Engaged" means a click or deeper action; counts are per session (an item
engaged several times in one session counts once).

- ``PopularityRanker``: most engaged items, globally or for the target session's scene.
- ``UserHistoryRanker``: the user's own past items by action-weighted, recency-decayed
  frequency (strong where people buy the same things again), then popularity.
- ``CooccurrenceRanker``: items engaged by the same users within a short window of the user's
  recent engaged items (item-to-item, normalised by popularity), then popularity.

Everything is vectorised numpy over flat (owner, session, item) arrays; the only Python loops
walk the ``Session`` objects once to flatten them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from index.features import CLICK, Session
from index.vocab import Vocabulary
from model_export.data import DAY, EvalCase
from model_export.ranking import (
    ItemSets,
    Ranker,
    SessionArrays,
    fetch_width,
    first_k,
    flatten_sessions,
    seen_items,
    top_k_unseen,
)

# Indexed by action code (0 none, 1 exposure, 2 click, 3 cart, 4 pay): a purchase says much
# more about what a user wants again than a click, an exposure little (but on the demo world's
# validation cases weight 0.1 beat 0: HR@100 0.72 vs 0.54, as shown items come back).
DEFAULT_ACTION_WEIGHTS = (0.0, 0.1, 1.0, 2.0, 4.0)


def complete_order(prefix: np.ndarray, n_items: int) -> np.ndarray:
    """``prefix``'s distinct items in order, then every other catalog item by index."""
    _, first = np.unique(prefix, return_index=True)
    head = prefix[np.sort(first)]
    rest = np.setdiff1d(np.arange(n_items), head, assume_unique=True)
    return np.concatenate([head, rest]).astype(np.int64)


def rank_scored(
    n_cases: int,
    owner: np.ndarray,
    item: np.ndarray,
    score: np.ndarray,
    fallback: np.ndarray,
    k: int,
    drop: ItemSets | None,
) -> np.ndarray:
    """(n_cases, k): per case its positively scored items (scores summed per item, best
    first), then the ``fallback`` catalog order; items in ``drop`` and repeats left out."""
    n_items = len(fallback)
    keys, inverse = np.unique(owner * n_items + item, return_inverse=True)
    total = np.bincount(inverse, weights=score, minlength=len(keys))
    scored = ItemSets(keys[total > 0], n_cases, n_items)
    row, col, total = scored.keys // n_items, scored.keys % n_items, total[total > 0]
    order = np.lexsort((col, -total, row))  # by case, then score descending, ties by index
    row, col = row[order], col[order]
    rank = np.arange(len(row)) - np.searchsorted(row, np.arange(n_cases))[row]
    # ``width`` fallback items always leave k: at most |drop| of them are dropped, and each one
    # dropped as a repeat of a scored item leaves that item in the row.
    width = fetch_width(k, drop, n_items)
    take = rank < width
    primary = np.full((n_cases, width), -1, dtype=np.int64)
    primary[row[take], rank[take]] = col[take]
    rest = np.broadcast_to(fallback[:width], (n_cases, width))
    keep_rest = ~scored.contains(rest)
    if drop is not None:
        keep_rest &= ~drop.contains(rest)
    keep_primary = primary >= 0
    if drop is not None:
        keep_primary &= ~drop.contains(primary)
    candidates = np.concatenate([primary, rest], axis=1)
    return first_k(candidates, np.concatenate([keep_primary, keep_rest], axis=1), k)


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


class UserHistoryRanker:
    """The case's own history items, scored Σ action_weight · 0.5^(age / half_life) over the
    sessions they appear in (age = time before the target session), then global popularity."""

    def __init__(
        self,
        vocab: Vocabulary,
        popularity: np.ndarray,
        action_weights: Sequence[float] = DEFAULT_ACTION_WEIGHTS,
        half_life_days: float = 30.0,
    ) -> None:
        self.vocab = vocab
        self.popularity = popularity
        self.action_weights = np.asarray(action_weights, dtype=np.float64)
        self.half_life_days = half_life_days

    @classmethod
    def fit(
        cls,
        train: Training,
        vocab: Vocabulary,
        action_weights: Sequence[float] = DEFAULT_ACTION_WEIGHTS,
        half_life_days: float = 30.0,
    ) -> UserHistoryRanker:
        counts = engaged_counts(training_arrays(train, vocab), vocab.n_items)
        return cls(vocab, popularity_order(counts), action_weights, half_life_days)

    def rank(self, cases: Sequence[EvalCase], k: int, exclude_seen: bool) -> np.ndarray:
        flat = flatten_sessions([c.history for c in cases], self.vocab)
        target_ts = np.asarray([c.target.ts for c in cases], dtype=np.int64)
        age_days = (target_ts[flat.owner] - flat.ts) / DAY
        score = self.action_weights[flat.action] * 0.5 ** (age_days / self.half_life_days)
        seen = seen_items(cases, self.vocab, flat) if exclude_seen else None
        return rank_scored(len(cases), flat.owner, flat.item, score, self.popularity, k, seen)


def gather_rows(indptr: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For CSR rows ``rows``: (which entry of ``rows`` each stored element belongs to, the
    element's position in the CSR arrays), concatenated over the rows."""
    starts = indptr[rows]
    lengths = indptr[rows + 1] - starts
    which = np.repeat(np.arange(len(rows)), lengths)
    offsets = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return which, starts[which] + offsets


@dataclass
class CooccurrenceRanker:
    """Item-to-item co-occurrence with the case's recent engaged items, then popularity.

    ``(indptr, indices, weights)`` is a CSR matrix of
    w(a, b) = c(a, b) / (n_a^(1 - alpha) · n_b^alpha), where c counts how often one user engaged
    with a and b in the same session or within ``window`` engaged sessions of each other (both
    directions) and n counts an item's engaged sessions. alpha = 0.5 is cosine; the default
    alpha = 0 is P(b | a), which keeps popular follow-ups (on the validation cases of the demo
    world and Instacart it beat cosine at every K). Each row keeps its ``max_neighbours``
    strongest entries. A case scores candidate b by Σ decay^j · w(a, b) over the items a of
    its last ``recent_sessions`` engaged sessions (j = 0 for the latest).
    """

    vocab: Vocabulary
    popularity: np.ndarray
    indptr: np.ndarray  # (n_items + 1,)
    indices: np.ndarray  # (nnz,) neighbour item index
    weights: np.ndarray  # (nnz,) float64
    recent_sessions: int = 10
    decay: float = 0.8

    @classmethod
    def fit(
        cls,
        train: Training,
        vocab: Vocabulary,
        window: int = 2,
        max_neighbours: int = 200,
        recent_sessions: int = 10,
        decay: float = 0.8,
        alpha: float = 0.0,
    ) -> CooccurrenceRanker:
        n_items = vocab.n_items
        flat = training_arrays(train, vocab)
        engaged = flat.action >= CLICK
        owner, position, item = flat.owner[engaged], flat.position[engaged], flat.item[engaged]
        counts = np.bincount(item, minlength=n_items)
        # Engaged sessions numbered 0..G-1 in (owner, position) order, so a user's next engaged
        # session is the next number; rows are already in that order.
        span = int(position.max()) + 1 if len(position) else 1
        session_keys, group = np.unique(owner * span + position, return_inverse=True)
        group_owner = session_keys // span
        group_ptr = np.searchsorted(group, np.arange(len(session_keys) + 1))
        lefts, rights = [], []
        for distance in range(window + 1):
            partner = group + distance
            valid = partner < len(session_keys)
            valid[valid] = group_owner[partner[valid]] == owner[valid]
            which, other = gather_rows(group_ptr, partner[valid])
            a, b = item[np.flatnonzero(valid)[which]], item[other]
            lefts += [a, b] if distance else [a]  # the same-session join already has both orders
            rights += [b, a] if distance else [b]
        left, right = np.concatenate(lefts), np.concatenate(rights)
        distinct = left != right
        pair_keys, pair_counts = np.unique(left[distinct] * n_items + right[distinct], return_counts=True)
        a, b = pair_keys // n_items, pair_keys % n_items
        weight = pair_counts / (counts[a].astype(np.float64) ** (1 - alpha) * counts[b] ** alpha)
        order = np.lexsort((b, -weight, a))  # by row, strongest neighbours first
        a, b, weight = a[order], b[order], weight[order]
        rank = np.arange(len(a)) - np.searchsorted(a, a)
        keep = rank < max_neighbours
        a, b, weight = a[keep], b[keep], weight[keep]
        indptr = np.searchsorted(a, np.arange(n_items + 1)).astype(np.int64)
        return cls(vocab, popularity_order(counts), indptr, b, weight, recent_sessions, decay)

    @property
    def nnz(self) -> int:
        return len(self.indices)

    def rank(self, cases: Sequence[EvalCase], k: int, exclude_seen: bool) -> np.ndarray:
        flat = flatten_sessions([c.history for c in cases], self.vocab)
        seen = seen_items(cases, self.vocab, flat) if exclude_seen else None
        engaged = flat.action >= CLICK
        owner, position, item = flat.owner[engaged], flat.position[engaged], flat.item[engaged]
        # How many engaged sessions ago (0 = the latest engaged session of the case).
        span = int(position.max()) + 1 if len(position) else 1
        session_keys, group = np.unique(owner * span + position, return_inverse=True)
        last_group = np.searchsorted(session_keys, (owner + 1) * span) - 1
        ago = last_group - group
        recent = ago < self.recent_sessions
        # One query row per (case, item), weights summed: repeat purchases expand only once.
        n_items = self.vocab.n_items
        query_keys, inverse = np.unique(owner[recent] * n_items + item[recent], return_inverse=True)
        query_weight = np.bincount(inverse, weights=self.decay ** ago[recent], minlength=len(query_keys))
        which, element = gather_rows(self.indptr, query_keys % n_items)
        score = query_weight[which] * self.weights[element]
        query_owner = query_keys[which] // n_items
        return rank_scored(len(cases), query_owner, self.indices[element], score, self.popularity, k, seen)


def fit_baselines(train: Training, vocab: Vocabulary) -> dict[str, Ranker]:
    """Every baseline with its default settings, by display name."""
    flat = training_arrays(train, vocab)
    return {
        "popularity (global)": PopularityRanker.fit(flat, vocab, per_scene=False),
        "popularity (per scene)": PopularityRanker.fit(flat, vocab, per_scene=True),
        "user history": UserHistoryRanker.fit(flat, vocab),
        "co-occurrence": CooccurrenceRanker.fit(flat, vocab),
    }
