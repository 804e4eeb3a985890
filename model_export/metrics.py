"""Retrieval metrics over full-catalog rankings: HR@K, Recall@K and NDCG@K.

A ranking is a row of item indices, best first, with ``-1`` as padding and no repeated item.
Relevance is binary: an item is relevant when the user engaged with it (click or deeper) in
the target session. For a case with target set T and the ranking's top K:

- HR@K = 1 if any item of T is in the top K, else 0;
- Recall@K = |T ∩ top K| / |T|;
- NDCG@K = DCG / IDCG with DCG = Σ_{rank r ≤ K, item relevant} 1 / log2(r + 1) and IDCG the
  DCG of a ranking that puts min(|T|, K) relevant items first.

Each is averaged over cases (0.0 when there are none).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

DEFAULT_KS = (20, 100, 500)


def relevance(ranked: np.ndarray, targets: Sequence[set[int]]) -> np.ndarray:
    """(N, W) bool: whether ``ranked[n, j]`` is one of case n's target items."""
    n, width = ranked.shape
    if n != len(targets):
        raise ValueError(f"{n} rankings for {len(targets)} target sets")
    owner = np.repeat(np.arange(n), [len(t) for t in targets])
    flat = np.fromiter((i for t in targets for i in t), dtype=np.int64, count=len(owner))
    if n == 0 or width == 0 or len(flat) == 0:
        return np.zeros((n, width), dtype=bool)
    # One integer key per (case, item) so a single sorted membership test covers all cases.
    span = int(max(ranked.max(), flat.max())) + 1
    target_keys = owner * span + flat
    keys = np.arange(n)[:, None] * span + ranked
    return (ranked >= 0) & np.isin(keys, target_keys)


def ideal_dcg(n_relevant: np.ndarray, k: int) -> np.ndarray:
    """(N,) DCG of a perfect top-k ranking for cases with ``n_relevant`` target items."""
    discounts = np.concatenate([[0.0], np.cumsum(1.0 / np.log2(np.arange(2, k + 2)))])
    return discounts[np.minimum(n_relevant, k)]


def hit_metrics(
    ranked: np.ndarray, targets: Sequence[set[int]], ks: Sequence[int] = DEFAULT_KS
) -> dict[str, float]:
    """``hr@K``, ``recall@K`` and ``ndcg@K`` for each K, averaged over cases.

    ``ranked`` is (N, W) item indices, best first; a row shorter than K (W < K) counts what it
    has. ``targets[n]`` must be non-empty.
    """
    rel = relevance(ranked, targets)
    n_targets = np.asarray([len(t) for t in targets], dtype=np.int64)
    if np.any(n_targets == 0):
        raise ValueError("every case needs at least one target item")
    gains = 1.0 / np.log2(np.arange(2, rel.shape[1] + 2))  # gain of a relevant item at rank r
    metrics: dict[str, float] = {}
    for k in ks:
        top = rel[:, :k]
        found = top.sum(axis=1)
        dcg = (top * gains[: top.shape[1]]).sum(axis=1)
        empty = len(targets) == 0
        metrics[f"hr@{k}"] = 0.0 if empty else float(np.mean(found > 0))
        metrics[f"recall@{k}"] = 0.0 if empty else float(np.mean(found / n_targets))
        metrics[f"ndcg@{k}"] = 0.0 if empty else float(np.mean(dcg / ideal_dcg(n_targets, k)))
    return metrics
