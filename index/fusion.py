"""The merge stage: fuse the channels' candidate lists into one ranking, with provenance.

Two methods, both with per-channel weights fitted on the validation split
(``model_export.channel_fit``); which one a bundle serves is in its manifest:

- ``rrf``: weighted reciprocal-rank fusion, Σ_c w_c / (rrf_k + rank_c) with ranks from 1 and
  rrf_k = 60 (Elasticsearch, OpenSearch, Vespa and Milvus use the same convention; weights
  fitted under one convention do not carry to another);
- ``score``: weighted sum of min-max normalised scores per list, a one-item list scoring 1.0
  (a short list normalises badly, which is why ``rrf`` is the default).

Channels with weight 0 are still listed in the provenance of the items they proposed, but do
not move the ranking. Ties break by item label, so the merge is deterministic. Used by the
service for every request and by offline evaluation, so both compute the same list.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

RRF_K = 60
SEEN = "include_seen"  # the fusion a request with exclude_seen=false uses
UNSEEN = "exclude_seen"  # … and with exclude_seen=true (the history channel is empty then)
# A search request's (it carries a query, and the text channels answer): the same two policies.
SEARCH_SEEN = "search:include_seen"
SEARCH_UNSEEN = "search:exclude_seen"

FusionMethod = Literal["rrf", "score"]
Candidates = tuple[np.ndarray, np.ndarray]  # (labels int64, scores float32), best first, distinct
EMPTY: Candidates = (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32))  # shared: never mutate


class FusionParams(BaseModel):
    model_config = ConfigDict(frozen=True)

    method: FusionMethod = "rrf"
    weights: dict[str, float] = Field(default_factory=dict)  # channel → weight ≥ 0; absent = 1
    rrf_k: int = Field(default=RRF_K, ge=0)

    def weight(self, channel: str) -> float:
        return max(float(self.weights.get(channel, 1.0)), 0.0)


def fusion_key(exclude_seen: bool, search: bool) -> str:
    """The key of the fusion a request of this exclusion policy and scenario uses."""
    if search:
        return SEARCH_UNSEEN if exclude_seen else SEARCH_SEEN
    return UNSEEN if exclude_seen else SEEN


def contributions(candidates: Candidates, method: str, rrf_k: int) -> np.ndarray:
    """Per entry of one channel's list, its unweighted share of the fused score."""
    labels, scores = candidates
    if method == "rrf":
        return 1.0 / (rrf_k + np.arange(1, len(labels) + 1, dtype=np.float64))
    scores = scores.astype(np.float64)
    low, high = float(scores.min()), float(scores.max())
    return (scores - low) / (high - low) if high > low else np.ones(len(scores))


def fuse(lists: Mapping[str, Candidates], params: FusionParams, k: int) -> Candidates:
    """The top ``k`` of the fused lists as (labels, fused scores), best first."""
    parts, shares = [], []
    for channel, candidates in lists.items():
        weight = params.weight(channel)
        if weight > 0 and len(candidates[0]):
            parts.append(candidates[0])
            shares.append(weight * contributions(candidates, params.method, params.rrf_k))
    if not parts:
        return EMPTY
    labels, inverse = np.unique(np.concatenate(parts), return_inverse=True)
    total = np.bincount(inverse, weights=np.concatenate(shares), minlength=len(labels))
    if len(labels) > k:  # keep every label tied with the k-th, so the sort breaks ties by label
        keep = total >= -np.partition(-total, k - 1)[k - 1]
        labels, total = labels[keep], total[keep]
    order = np.lexsort((labels, -total))[:k]
    return labels[order], total[order].astype(np.float32)


def provenance(labels: np.ndarray, lists: Mapping[str, Candidates]) -> list[dict[str, int]]:
    """For each label, the channels whose list holds it, with its rank there (from 1)."""
    out: list[dict[str, int]] = [{} for _ in range(len(labels))]
    if not len(labels):
        return out
    for channel, (candidates, _) in lists.items():
        if not len(candidates):
            continue
        order = np.argsort(candidates, kind="stable")
        at = np.minimum(np.searchsorted(candidates[order], labels), len(candidates) - 1)
        found = candidates[order][at] == labels
        for row in np.flatnonzero(found).tolist():
            out[row][channel] = int(order[at[row]]) + 1
    return out


def merge(
    lists: Mapping[str, Candidates], params: FusionParams, k: int
) -> tuple[np.ndarray, np.ndarray, list[dict[str, int]]]:
    """``fuse`` and ``provenance`` together, what a request needs. When one list alone holds
    candidates under rank fusion (an nsp-only request), its order is already the fused order
    (1 / (rrf_k + rank) strictly falls), so the sort and the lookups are skipped."""
    holding = [(name, c) for name, c in lists.items() if len(c[0])]
    if len(holding) == 1 and params.method == "rrf" and params.weight(holding[0][0]) > 0:
        name, (labels, scores) = holding[0]
        labels = labels[:k]
        fused = params.weight(name) * contributions((labels, scores[:k]), params.method, params.rrf_k)
        return labels, fused.astype(np.float32), [{name: rank} for rank in range(1, len(labels) + 1)]
    labels, fused = fuse(lists, params, k)
    return labels, fused, provenance(labels, lists)


def top_indices(score: np.ndarray, key: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` highest ``score``, best first, ties by lower ``key``."""
    if len(score) > k:  # keep everything tied with the k-th, so ties break by key not by partition
        kth = -np.partition(-score, k - 1)[k - 1]
        candidates = np.flatnonzero(score >= kth)
    else:
        candidates = np.arange(len(score))
    order = np.lexsort((key[candidates], -score[candidates]))[:k]
    return candidates[order]
