"""The history channel's scoring: a user's own items (repeat and re-purchase), shared by the
service and offline evaluation so both compute the same list.

An item the user met in several sessions scores Σ action_weight[deepest action in the session]
· 0.5^(age / half_life) over those sessions (age = request time - session start): recency,
frequency and action depth in one number. The weights are fitted on the validation split at
train time (``model_export.channel_fit``) and travel in the bundle manifest.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from index.features import Session
from index.fusion import EMPTY
from index.vocab import Vocabulary

DAY_S = 86400.0
# Indexed by action code (0 none, 1 exposure, 2 click, 3 cart, 4 pay).
DEFAULT_ACTION_WEIGHTS = (0.0, 0.1, 1.0, 2.0, 4.0)


class HistoryParams(BaseModel):
    model_config = ConfigDict(frozen=True)

    action_weights: tuple[float, float, float, float, float] = DEFAULT_ACTION_WEIGHTS
    half_life_days: float = Field(default=30.0, gt=0)

    @field_validator("action_weights")
    @classmethod
    def _non_negative(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if any(not np.isfinite(w) or w < 0 for w in value):
            raise ValueError("action weights must be finite and >= 0")
        return value


def history_candidates(
    sessions: Sequence[Session],
    vocab: Vocabulary,
    now: float,
    params: HistoryParams,
    depth: int,
    excluded: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """(labels, scores) of the user's own catalog items, best first (ties by label), at most
    ``depth``, none in ``excluded`` (sorted item labels), only positive scores."""
    labels: list[int] = []
    weights: list[float] = []
    action_weights = params.action_weights
    for session in sessions:
        decay = 0.5 ** (max(now - session.ts, 0) / DAY_S / params.half_life_days)
        for item_id, action in session.items:
            label = vocab.item_index(item_id)
            if label is not None and 0 <= action < len(action_weights):
                labels.append(label)
                weights.append(action_weights[action] * decay)
    return top_scored(np.asarray(labels, dtype=np.int64), np.asarray(weights), depth, excluded)


def top_scored(
    labels: np.ndarray, weights: np.ndarray, depth: int, excluded: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Sum ``weights`` per label, drop non-positive totals and ``excluded`` labels, and return
    the best ``depth`` (labels, scores), best first, ties by label."""
    if len(labels) == 0 or depth <= 0:
        return EMPTY
    unique, inverse = np.unique(labels, return_inverse=True)
    total = np.bincount(inverse, weights=weights, minlength=len(unique))
    keep = total > 0
    if len(excluded):
        keep &= ~np.isin(unique, excluded, assume_unique=True)
    unique, total = unique[keep], total[keep]
    if len(unique) > depth:  # keep every label tied with the depth-th, so ties break by label
        keep_top = total >= -np.partition(-total, depth - 1)[depth - 1]
        unique, total = unique[keep_top], total[keep_top]
    order = np.lexsort((unique, -total))[:depth]
    return unique[order], total[order].astype(np.float32)
