"""Retrieval by vectors as a ``Ranker``: exact inner-product search or an HNSW index.

This is how the service retrieves (user vector → nearest item vectors), offline and without
torch, so the NSP model — or any model that embeds cases and items in one space — is judged
in the same harness as the baselines, and the HNSW loss relative to exact search shows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from index.ann import ItemIndex, exact_top_k
from index.vocab import Vocabulary
from model_export.data import EvalCase
from model_export.ranking import fetch_width, seen_items, top_k_unseen


class VectorRanker:
    """Ranks items by ⟨user vector, item vector⟩.

    ``user_vectors`` maps cases to (N, D) float32 vectors (for the NSP model: the encoder's
    output for each case's history plus its target session's context); ``items`` is the (M, D)
    item matrix, row = item index. With ``index`` (built from ``items``) the candidates come
    from that HNSW index instead of exact search; hnswlib searches with
    ef = max(ef_search, number of candidates asked for), as in the service.
    """

    def __init__(
        self,
        user_vectors: Callable[[Sequence[EvalCase]], np.ndarray],
        items: np.ndarray,
        vocab: Vocabulary,
        index: ItemIndex | None = None,
    ) -> None:
        if index is not None and index.count != len(items):
            raise ValueError(f"index holds {index.count} items, the item matrix {len(items)}")
        self.user_vectors = user_vectors
        self.items = items
        self.vocab = vocab
        self.index = index

    def rank(self, cases: Sequence[EvalCase], k: int, exclude_seen: bool) -> np.ndarray:
        users = self.user_vectors(cases)
        seen = seen_items(cases, self.vocab) if exclude_seen else None
        width = fetch_width(k, seen, len(self.items))
        if self.index is None:
            candidates = exact_top_k(self.items, users, width, chunk=1024)
        else:
            candidates, _ = self.index.search(users, width)
        return top_k_unseen(candidates, k, seen)
