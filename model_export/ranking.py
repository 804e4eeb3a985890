"""The ``Ranker`` protocol and the one harness that judges every ranker the same way.

A ranker turns evaluation cases (a user's history plus the target session's scene and time)
into a ranking of the *whole* catalog, cut to k. The harness (``evaluate``) keeps the cases
with at least one target item in the catalog, asks the ranker for the top max(K) and scores
HR/Recall/NDCG@K (``model_export.metrics``). The NSP model (``model_export.evaluate``) and the
baselines (``model_export.baselines``) are all rankers, so their numbers are comparable.

``exclude_seen=True`` is what the service does by default: every item in the case's history
(any action) is removed before the cut. Rankers over-fetch so they still return k items when
the catalog has enough; ``top_k_unseen`` does the removal and the cut for them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from index.features import Session
from index.vocab import Vocabulary
from model_export.data import EvalCase
from model_export.metrics import DEFAULT_KS, hit_metrics

CHUNK = 1024  # cases per ``rank`` call: bounds a ranker's (cases, width) working set


class Ranker(Protocol):
    def rank(self, cases: Sequence[EvalCase], k: int, exclude_seen: bool) -> np.ndarray:
        """(len(cases), k) int64 item indices, best first, no repeats, ``-1`` padding at the end.

        With ``exclude_seen`` no item of a case's history appears in its row. Every case has at
        least one target item in the catalog (``case_targets`` filtered them).
        """
        ...


@dataclass(frozen=True)
class SessionArrays:
    """Sessions of many owners flattened to one row per (session, catalog item).

    Items the vocabulary does not know are left out. ``position`` counts the owner's sessions
    from the oldest (0).
    """

    owner: np.ndarray  # (R,) int64 index into the list of histories
    position: np.ndarray  # (R,) int64
    item: np.ndarray  # (R,) int64 item index
    action: np.ndarray  # (R,) int64 deepest action code in the session (1 = exposure … 4 = pay)
    ts: np.ndarray  # (R,) int64 session start
    scene: np.ndarray  # (R,) int64 the session's scene token (0 = a scene the vocabulary lacks)


def flatten_sessions(histories: Sequence[Sequence[Session]], vocab: Vocabulary) -> SessionArrays:
    sessions = [s for h in histories for s in h]
    per_owner = np.asarray([len(h) for h in histories], dtype=np.int64)
    session_owner = np.repeat(np.arange(len(histories)), per_owner)
    session_position = np.arange(len(sessions)) - np.repeat(np.cumsum(per_owner) - per_owner, per_owner)
    session_ts = np.fromiter((s.ts for s in sessions), dtype=np.int64, count=len(sessions))
    session_scene = np.fromiter((vocab.scene_token(s.scene) for s in sessions), np.int64, len(sessions))
    sizes = np.fromiter((len(s.items) for s in sessions), dtype=np.int64, count=len(sessions))
    pairs = [pair for s in sessions for pair in s.items]
    lookup = vocab.item_index
    item = np.fromiter((-1 if (i := lookup(p[0])) is None else i for p in pairs), np.int64, len(pairs))
    action = np.fromiter((p[1] for p in pairs), dtype=np.int64, count=len(pairs))
    known = item >= 0
    return SessionArrays(
        owner=np.repeat(session_owner, sizes)[known],
        position=np.repeat(session_position, sizes)[known],
        item=item[known],
        action=action[known],
        ts=np.repeat(session_ts, sizes)[known],
        scene=np.repeat(session_scene, sizes)[known],
    )


@dataclass(frozen=True)
class ItemSets:
    """One set of item indices per row (e.g. each case's seen items), stored as sorted keys
    ``row * n_items + item`` so that membership for a whole candidate matrix is one search."""

    keys: np.ndarray  # (S,) int64, sorted, unique
    n_rows: int
    n_items: int

    @classmethod
    def from_pairs(cls, row: np.ndarray, item: np.ndarray, n_rows: int, n_items: int) -> ItemSets:
        return cls(np.unique(row * n_items + item), n_rows, n_items)

    def sizes(self) -> np.ndarray:
        bounds = np.searchsorted(self.keys, np.arange(self.n_rows + 1) * self.n_items)
        return np.diff(bounds)

    def contains(self, candidates: np.ndarray) -> np.ndarray:
        """(N, W) bool: ``candidates[n, j]`` is in set n (never for ``-1`` padding)."""
        keys = np.arange(len(candidates))[:, None] * self.n_items + candidates
        at = np.minimum(np.searchsorted(self.keys, keys), max(len(self.keys) - 1, 0))
        found = self.keys[at] == keys if len(self.keys) else np.zeros(keys.shape, dtype=bool)
        return found & (candidates >= 0)


def seen_items(cases: Sequence[EvalCase], vocab: Vocabulary, flat: SessionArrays | None = None) -> ItemSets:
    """Per case, the catalog items of its history (any action). ``flat``: the cases' histories
    already flattened, to save doing it twice."""
    if flat is None:
        flat = flatten_sessions([c.history for c in cases], vocab)
    return ItemSets.from_pairs(flat.owner, flat.item, len(cases), vocab.n_items)


def fetch_width(k: int, drop: ItemSets | None, n_items: int) -> int:
    """How many candidates to fetch so that k survive removing each row's ``drop`` items."""
    extra = int(drop.sizes().max(initial=0)) if drop is not None else 0
    return min(k + extra, n_items)


def first_k(candidates: np.ndarray, keep: np.ndarray, k: int) -> np.ndarray:
    """(N, k): each row's first k candidates where ``keep``, in order; ``-1`` pads the rest."""
    order = np.argsort(~keep, axis=1, kind="stable")[:, :k]  # kept entries first, order preserved
    out = np.where(np.take_along_axis(keep, order, axis=1), np.take_along_axis(candidates, order, axis=1), -1)
    if out.shape[1] < k:
        out = np.pad(out, ((0, 0), (0, k - out.shape[1])), constant_values=-1)
    return out.astype(np.int64)


def top_k_unseen(candidates: np.ndarray, k: int, seen: ItemSets | None) -> np.ndarray:
    """(N, k) from distinct candidates (best first, ``-1`` padded): the first k not in ``seen``."""
    keep = candidates >= 0
    if seen is not None:
        keep &= ~seen.contains(candidates)
    return first_k(candidates, keep, k)


def case_targets(cases: Sequence[EvalCase], vocab: Vocabulary) -> tuple[list[EvalCase], list[set[int]]]:
    """Cases with at least one target item in the catalog, and those targets as item indices."""
    kept, targets = [], []
    for case in cases:
        indices = {i for i in map(vocab.item_index, case.target_items()) if i is not None}
        if indices:
            kept.append(case)
            targets.append(indices)
    return kept, targets


def rank_all(ranker: Ranker, cases: Sequence[EvalCase], k: int, exclude_seen: bool) -> np.ndarray:
    """The ranker's (N, k) rankings, asked for in chunks of ``CHUNK`` cases and checked.

    Cases go to the ranker grouped by history size, so that the over-fetch for excluding seen
    items (k + the chunk's largest history) stays close to what each case needs.
    """
    size = np.asarray([sum(len(s.items) for s in c.history) for c in cases], dtype=np.int64)
    order = np.argsort(size, kind="stable")
    ranked = np.empty((len(cases), k), dtype=np.int64)
    for start in range(0, len(cases), CHUNK):
        chosen = order[start : start + CHUNK]
        part = ranker.rank([cases[i] for i in chosen], k, exclude_seen)
        if part.shape != (len(chosen), k):
            raise ValueError(f"ranker returned shape {part.shape}, expected {(len(chosen), k)}")
        ranked[chosen] = part
    ordered = np.sort(ranked, axis=1)
    if np.any((ordered[:, 1:] == ordered[:, :-1]) & (ordered[:, 1:] >= 0)):
        raise ValueError("ranker returned an item twice in one ranking")
    return ranked


def evaluate(
    ranker: Ranker,
    cases: Sequence[EvalCase],
    vocab: Vocabulary,
    ks: Sequence[int] = DEFAULT_KS,
    exclude_seen: bool = False,
    *,
    per_k: bool = False,
) -> dict[str, float]:
    """HR/Recall/NDCG@K of ``ranker`` over the cases that have a target item in the catalog.

    By default the ranker is asked once for the top max(ks) and each K reads a prefix. With
    ``per_k`` it is asked once per K, as a service answering k-item requests would: the same
    for exact rankers, but an HNSW search for k items (ef = max(ef_search, k)) is not the
    prefix of a search for more, so its loss at small k only shows this way.
    """
    kept, targets = case_targets(cases, vocab)
    if not per_k:
        return hit_metrics(rank_all(ranker, kept, max(ks), exclude_seen), targets, ks)
    metrics: dict[str, float] = {}
    for k in ks:
        metrics.update(hit_metrics(rank_all(ranker, kept, k, exclude_seen), targets, [k]))
    return metrics
