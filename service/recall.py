"""The recall pipeline: a user's recent events → sessions → encoder → ANN → item ids.

Stages (each timed in ``nsp_recall_stage_duration_seconds``): ``session_fetch`` from the
store on the event loop; ``encode`` (tokens + encoder) and ``ann`` in the CPU thread pool (ONNX
Runtime and hnswlib never run on the event loop); ``postprocess`` maps labels to item ids. With
micro-batching (``service.batching``) the tokens are built on the loop (``tokens``) and the
encoder run is shared with concurrent requests; the search stays per request. The nearline
recompute (``service.nearline``) runs the same stages through ``top_k``, so they are timed too.

Results honour the API contract: exactly ``k`` items unless the catalog minus exclusions has
fewer. Users without history get the bundle's popularity fallback; when the store fails the
answer is the same fallback marked ``degraded`` (a recall never fails because of the store).
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import time
from collections.abc import Callable, Collection, Iterable
from concurrent.futures import Executor

import numpy as np

from index.features import ACTIONS, Event, Session, build_tokens, group_sessions, stack_left_padded
from service.batching import EncodeBatcher
from service.metrics import Metrics
from service.runtime import ALL_SCENES, Bundle
from service.schemas import RecalledItem, RecallRequest, RecallResponse, SessionItem, SessionOut
from service.store import SessionStore, StoreUnavailable

log = logging.getLogger(__name__)


class RecallPipeline:
    """Serves recall requests against a store and a CPU pool. Safe for concurrent requests.

    ``history_limit`` is how many recent events are read per user (the store's cap).
    """

    def __init__(
        self,
        store: SessionStore,
        executor: Executor,
        metrics: Metrics,
        *,
        history_limit: int,
        clock: Callable[[], float] = time.time,
        batcher: EncodeBatcher | None = None,
    ) -> None:
        self._store = store
        self._executor = executor
        self._metrics = metrics
        self._history_limit = history_limit
        self._clock = clock
        self._batcher = batcher

    async def recall(self, bundle: Bundle, request: RecallRequest, k: int) -> RecallResponse:
        """Top-``k`` items for the request, all computed with the one ``bundle`` given."""
        excluded = set(request.exclude_item_ids)
        try:
            with self._metrics.stage("session_fetch"):
                events = await self._history(request.user_id)
        except StoreUnavailable as exc:
            self._metrics.degraded.inc()
            log.warning("session store unavailable, answering with the fallback: %s", exc)
            return self._fallback(bundle, request, k, excluded, degraded=True)
        if not events:
            return self._fallback(bundle, request, k, excluded, degraded=False)
        if request.exclude_seen:
            excluded.update(event.item_id for event in events)
        items = await self._rank(bundle, events, request.scene, int(self._clock()), k, excluded)
        return RecallResponse(
            user_id=request.user_id,
            bundle_version=bundle.version,
            source="model",
            degraded=False,
            items=items,
        )

    async def top_k(
        self, bundle: Bundle, user_id: str, scene: str, k: int, now: float
    ) -> list[RecalledItem] | None:
        """What ``recall`` answers for ``{user_id, scene, k, exclude_seen: true}`` at time ``now``
        (the query context's time), or None when the user has no history (``recall`` would
        answer the fallback). For the nearline recompute. Raises ``StoreUnavailable``.
        """
        with self._metrics.stage("session_fetch"):
            events = await self._history(user_id)
        if not events:
            return None
        return await self._rank(bundle, events, scene, int(now), k, {event.item_id for event in events})

    async def _history(self, user_id: str) -> list[Event]:
        try:
            return await self._store.recent(user_id, self._history_limit)
        except StoreUnavailable:
            self._metrics.store_errors.labels(operation="recent").inc()
            raise

    async def _rank(
        self, bundle: Bundle, events: list[Event], scene: str, now: int, k: int, excluded: set[str]
    ) -> list[RecalledItem]:
        excluded_labels = {label for item in excluded if (label := bundle.vocab.item_index(item)) is not None}
        loop = asyncio.get_running_loop()
        if self._batcher is None:
            infer = functools.partial(
                _encode_and_search, bundle, self._metrics, events, scene, now, k, excluded_labels
            )
            labels, scores = await loop.run_in_executor(self._executor, infer)
        else:  # tokens here, the encoder run shared with concurrent requests, then the search
            with self._metrics.stage("tokens"):
                sequence = _tokens(bundle, events, scene, now)
            vector = await self._batcher.encode(bundle, sequence)
            search = functools.partial(_search, bundle, self._metrics, vector[None], k, excluded_labels)
            labels, scores = await loop.run_in_executor(self._executor, search)
        with self._metrics.stage("postprocess"):
            ids = bundle.vocab.item_ids[labels].tolist() if len(labels) else []
            pairs = zip(ids, scores.tolist(), strict=True)
            return [RecalledItem(item_id=str(i), score=float(s)) for i, s in pairs]

    async def sessions(self, user_id: str, limit: int) -> list[SessionOut]:
        """The user's ``limit`` most recent sessions, newest first. Raises ``StoreUnavailable``."""
        events = await self._history(user_id)
        return [_session_out(s) for s in reversed(group_sessions(events)[-limit:])]

    def _fallback(
        self, bundle: Bundle, request: RecallRequest, k: int, excluded: Collection[str], *, degraded: bool
    ) -> RecallResponse:
        with self._metrics.stage("postprocess"):
            reason = "store_unavailable" if degraded else "no_history"
            self._metrics.fallbacks.labels(reason=reason).inc()
            # Scene list, then all scenes, then the rest of the catalog, so k is met when it can be.
            candidates = itertools.chain(
                bundle.fallback(request.scene), bundle.fallback(ALL_SCENES), map(str, bundle.vocab.item_ids)
            )
            chosen = _take_distinct(candidates, k, excluded)
            items = [RecalledItem(item_id=item, score=1.0 / (rank + 1)) for rank, item in enumerate(chosen)]
        return RecallResponse(
            user_id=request.user_id,
            bundle_version=bundle.version,
            source="fallback",
            degraded=degraded,
            items=items,
        )


def _encode_and_search(
    bundle: Bundle,
    metrics: Metrics,
    events: list[Event],
    scene: str,
    now: int,
    k: int,
    excluded: set[int],
) -> tuple[np.ndarray, np.ndarray]:
    """Runs in the CPU pool: tokens, user vector, then the top-k labels not in ``excluded``."""
    with metrics.stage("encode"):
        sequence = _tokens(bundle, events, scene, now)
        vector = bundle.encode(stack_left_padded([sequence]))  # (1, D)
    return _search(bundle, metrics, vector, k, excluded)


def _tokens(bundle: Bundle, events: list[Event], scene: str, now: int) -> np.ndarray:
    return build_tokens(
        group_sessions(events),
        query_scene=scene,
        query_ts=now,
        vocab=bundle.vocab,
        max_sessions=bundle.manifest.encoder.max_sessions,
        max_items=bundle.manifest.encoder.max_items_per_session,
    )


def _search(
    bundle: Bundle, metrics: Metrics, vector: np.ndarray, k: int, excluded: set[int]
) -> tuple[np.ndarray, np.ndarray]:
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
                return labels[:k], scores[:k]
            want = min(want * 2, catalog)


def _take_distinct(candidates: Iterable[str], k: int, excluded: Collection[str]) -> list[str]:
    chosen: list[str] = []
    seen = set(excluded)
    for item in candidates:
        if len(chosen) == k:
            break
        if item not in seen:
            seen.add(item)
            chosen.append(item)
    return chosen


def _session_out(session: Session) -> SessionOut:
    items = [SessionItem(item_id=item, action=_action_name(code)) for item, code in session.items]
    return SessionOut(request_id=session.request_id, ts=session.ts, scene=session.scene, items=items)


def _action_name(code: int) -> str:
    return ACTIONS[code - 1] if 1 <= code <= len(ACTIONS) else "unknown"
