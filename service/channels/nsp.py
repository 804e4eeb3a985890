"""The ``nsp`` channel: the session encoder's next-session vector, searched in the HNSW index.

Tokens and the encoder run (``encode``) and the search (``ann``) run in the CPU pool; with
micro-batching (``service.batching``) the tokens are built on the loop (``tokens``) and the
encoder run is shared with concurrent requests, the search staying per request.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Sequence
from concurrent.futures import Executor

import numpy as np

from index.features import Session, build_tokens, stack_left_padded
from index.fusion import Candidates
from service.batching import EncodeBatcher
from service.channels.base import RequestContext
from service.metrics import Metrics
from service.runtime import Bundle


class NspChannel:
    name = "nsp"

    def __init__(self, executor: Executor, metrics: Metrics, batcher: EncodeBatcher | None = None) -> None:
        self._executor = executor
        self._metrics = metrics
        self._batcher = batcher

    def available(self, bundle: Bundle) -> bool:
        return True

    async def propose(self, context: RequestContext, bundle: Bundle) -> Candidates:
        loop = asyncio.get_running_loop()
        excluded, depth = context.excluded_set, context.depth
        if self._batcher is None:
            infer = functools.partial(
                _encode_and_search, bundle, self._metrics, context.sessions, context.scene, context.now,
                depth, excluded,
            )  # fmt: skip
            return await loop.run_in_executor(self._executor, infer)
        with self._metrics.stage("tokens"):
            sequence = tokens(bundle, context.sessions, context.scene, context.now)
        vector = await self._batcher.encode(bundle, sequence)
        search = functools.partial(_search, bundle, self._metrics, vector[None], depth, excluded)
        return await loop.run_in_executor(self._executor, search)


def tokens(bundle: Bundle, sessions: Sequence[Session], scene: str, now: int) -> np.ndarray:
    return build_tokens(
        sessions,
        query_scene=scene,
        query_ts=now,
        vocab=bundle.vocab,
        max_sessions=bundle.manifest.encoder.max_sessions,
        max_items=bundle.manifest.encoder.max_items_per_session,
    )


def _encode_and_search(
    bundle: Bundle,
    metrics: Metrics,
    sessions: Sequence[Session],
    scene: str,
    now: int,
    k: int,
    excluded: frozenset[int],
) -> Candidates:
    """Runs in the CPU pool: tokens, user vector, then the top-k labels not in ``excluded``."""
    with metrics.stage("encode"):
        sequence = tokens(bundle, sessions, scene, now)
        vector = bundle.encode(stack_left_padded([sequence]))  # (1, D)
    return _search(bundle, metrics, vector, k, excluded)


def _search(
    bundle: Bundle, metrics: Metrics, vector: np.ndarray, k: int, excluded: frozenset[int]
) -> Candidates:
    """The top-k labels for ``vector`` (1, D) not in ``excluded``.

    Asks the index for ``k + len(excluded)`` first, which is enough whenever the index returns
    what it is asked for, and doubles (up to the whole catalog) if it still comes up short.
    """
    catalog = bundle.vocab.n_items
    want = min(k + len(excluded), catalog)
    with metrics.stage("ann"):
        while True:
            labels, scores = bundle.search(vector, want)
            # a set lookup per candidate: np.isin sorts both arrays (~10x slower at these sizes)
            keep = np.fromiter((label not in excluded for label in labels[0].tolist()), bool, labels.shape[1])
            labels, scores = labels[0][keep], scores[0][keep]
            if len(labels) >= k or want >= catalog:
                return labels[:k].astype(np.int64), scores[:k].astype(np.float32)
            want = min(want * 2, catalog)
