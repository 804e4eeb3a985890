"""The ``nsp`` channel: the session encoder's next-session vector, searched in the HNSW index.

Tokens and the encoder run (``encode``) and the search (``ann``) run in the CPU pool; with
micro-batching (``service.batching``) the tokens are built on the loop (``tokens``) and the
encoder run is shared with concurrent requests, the search staying per request. An encoder that
reads search queries (``encoder.query_pieces`` > 0) gets the request's query in its last
context token and each history session's in theirs, tokenized with the bundle's tokenizer.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Sequence
from concurrent.futures import Executor

import numpy as np

from index.features import QueryText, Session, build_tokens, stack_left_padded
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
                context.query, depth, excluded,
            )  # fmt: skip
            return await loop.run_in_executor(self._executor, infer)
        with self._metrics.stage("tokens"):
            sequence = tokens(bundle, context.sessions, context.scene, context.now, context.query)
        vector = await self._batcher.encode(bundle, sequence)
        search = functools.partial(_search, bundle, self._metrics, vector[None], depth, excluded)
        return await loop.run_in_executor(self._executor, search)


def tokens(
    bundle: Bundle, sessions: Sequence[Session], scene: str, now: int, query: str | None = None
) -> np.ndarray:
    """The encoder input for one request; ``query`` (the search text) is read only by an encoder
    that reads queries (``LoadedBundle.load`` refuses such a bundle without a tokenizer)."""
    spec = bundle.manifest.encoder
    query_text = None
    if spec.query_pieces > 0 and bundle.text is not None:
        query_text = QueryText(bundle.text.tokenizer, spec.query_pieces)
    return build_tokens(
        sessions,
        query_scene=scene,
        query_ts=now,
        vocab=bundle.vocab,
        max_sessions=spec.max_sessions,
        max_items=spec.max_items_per_session,
        query=query or "",
        query_text=query_text,
    )


def _encode_and_search(
    bundle: Bundle,
    metrics: Metrics,
    sessions: Sequence[Session],
    scene: str,
    now: int,
    query: str | None,
    k: int,
    excluded: frozenset[int],
) -> Candidates:
    """Runs in the CPU pool: tokens, user vector, then the top-k labels not in ``excluded``."""
    with metrics.stage("encode"):
        sequence = tokens(bundle, sessions, scene, now, query)
        vector = bundle.encode(stack_left_padded([sequence]))  # (1, D)
    return _search(bundle, metrics, vector, k, excluded)


def _search(
    bundle: Bundle, metrics: Metrics, vector: np.ndarray, k: int, excluded: frozenset[int]
) -> Candidates:
    """The top-k labels for ``vector`` (1, D) not in ``excluded`` (``Bundle.search_excluding``)."""
    with metrics.stage("ann"):
        return bundle.search_excluding(vector, k, excluded)
