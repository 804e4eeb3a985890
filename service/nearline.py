"""Nearline mode (TBGRecall's deployment blueprint): a user's new events trigger a background
recompute of their top-K, and recalls the cached list answers exactly are served from it.

The flow, per ingested batch (``events_stored``, called after the store acknowledged it):

1. The batch's users' cached entries are deleted (one pipelined round trip, awaited), so no
   list computed from older history is served once ``/v1/events`` has answered — a cached list
   could otherwise hold an item the user has just bought, which ``exclude_seen`` promises to drop.
2. A recompute per user is queued and never awaited. A user already queued is not queued again;
   a user whose recompute is running is queued once more when it ends, and the running one's
   result, computed from the older history, is discarded. When ``max_pending`` users wait, more
   are dropped (counted): ingest never waits for recomputes or fails because of them.
3. ``concurrency`` workers take users off the queue and run ``RecallPipeline.top_k`` —
   the model recall itself, on the CPU pool, with one bundle handle, ``exclude_seen`` and the
   configured scene — and write a ``TopK`` tagged with that bundle's version.

``cached`` serves a recall from the entry only when the answer equals what the model recall
would return now, up to the context time (the entry's hour and weekday, at most ``max_age_s``
old): same bundle version, same scene, ``exclude_seen``, every channel (no ``channels``), no
``query`` or ``as_of``, and at least ``k`` items left after the request's ``exclude_item_ids``.
Otherwise it returns None, counted by reason, and the caller computes. A bundle swap makes
every entry stale by version at once. The cached list is the merged one, each item with its
channels; it is written only when every channel answered.

Thread-safety: everything here runs on the event loop; only the pipeline's CPU work leaves it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from service.metrics import CacheMiss, Metrics, RecomputeOutcome
from service.recall import ChannelsIncomplete, RecallPipeline, RecallQuery
from service.runtime import Bundle
from service.schemas import ChannelHit, RecalledItem, RecallResponse
from service.settings import Settings
from service.store import StoreUnavailable
from service.topk_cache import CacheUnavailable, TopK, TopKCache, UnreadableEntry, decode, encode

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NearlineConfig:
    k: int  # items cached per user
    scene: str  # scene of the recompute; only recalls for this scene are served from the cache
    max_age_s: float  # entries older than this are not served (and expire from the cache)
    max_pending: int  # users waiting for a recompute; beyond it, recomputes are dropped
    concurrency: int  # recomputes running at once

    @classmethod
    def from_settings(cls, settings: Settings) -> NearlineConfig:
        return cls(
            k=settings.nearline_k,
            scene=settings.nearline_scene,
            max_age_s=settings.nearline_max_age_s,
            max_pending=settings.nearline_max_pending,
            concurrency=settings.nearline_concurrency,
        )


class Nearline:
    """Background top-K recomputes after ingest, and the cache check before a recall.

    ``current`` returns the bundle to compute with (the registry's ``current``). Call ``start``
    and ``stop`` on the event loop; recomputes still queued at ``stop`` are abandoned (the
    cache only ever saves work). ``events_stored`` and ``cached`` never raise.
    """

    def __init__(
        self,
        pipeline: RecallPipeline,
        current: Callable[[], Bundle | None],
        cache: TopKCache,
        metrics: Metrics,
        config: NearlineConfig,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._pipeline = pipeline
        self._current = current
        self._cache = cache
        self._metrics = metrics
        self._config = config
        self._clock = clock
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._queued: set[str] = set()  # waiting in the queue
        self._running: set[str] = set()
        self._rerun: set[str] = set()  # running, and new events arrived meanwhile
        self._workers: list[asyncio.Task[None]] = []
        self._idle = asyncio.Event()
        self._idle.set()

    def start(self) -> None:
        if not self._workers:
            workers = range(self._config.concurrency)
            self._workers = [asyncio.create_task(self._work(), name=f"nearline-{i}") for i in workers]

    async def stop(self) -> None:
        for task in self._workers:
            task.cancel()
        for task in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._workers = []

    async def events_stored(self, user_ids: Iterable[str]) -> None:
        """Invalidate these users' cached lists and queue their recomputes (not awaited)."""
        users = list(dict.fromkeys(user_ids))
        # Before the first await: a recompute running now may have read the older history, so
        # its result must not be written (it is rerun instead), even if it ends during the delete.
        self._rerun.update(self._running.intersection(users))
        try:
            await self._cache.delete(users)
        except CacheUnavailable as exc:
            # The events are stored; an old list may be served until its recompute overwrites it.
            self._metrics.cache_errors.labels(operation="invalidate").inc()
            log.warning("could not invalidate %d cached top-K lists: %s", len(users), exc)
        for user_id in users:
            self._submit(user_id)

    async def idle(self) -> None:
        """Wait until nothing is queued or running (for tests and benchmarks)."""
        await self._idle.wait()

    async def cached(self, bundle: Bundle, request: RecallQuery) -> RecallResponse | None:
        """The recall answered from the user's cached top-K, or None (a miss, counted by reason)."""
        entry = await self._lookup(bundle, request)
        if isinstance(entry, str):
            self._metrics.cache_misses.labels(reason=entry).inc()
            return None
        excluded = set(request.exclude_item_ids)
        items: list[RecalledItem] = []
        provenance = entry.channels or ({},) * len(entry.item_ids)
        for item_id, score, hits in zip(entry.item_ids, entry.scores, provenance, strict=True):
            if item_id not in excluded:
                channels = {name: ChannelHit(rank=rank, score=hit) for name, (rank, hit) in hits.items()}
                items.append(RecalledItem(item_id=item_id, score=score, channels=channels))
                if len(items) == request.k:
                    break
        if len(items) < request.k:
            self._metrics.cache_misses.labels(reason="insufficient").inc()
            return None
        self._metrics.cache_hits.inc()
        return RecallResponse(
            user_id=request.user_id,
            bundle_version=bundle.version,
            source="cache",
            degraded=False,
            items=items,
        )

    async def _lookup(self, bundle: Bundle, request: RecallQuery) -> TopK | CacheMiss:
        replay_or_subset = request.as_of is not None or request.channels is not None
        if not request.exclude_seen or request.query is not None or replay_or_subset:
            return "ineligible"
        if request.scene != self._config.scene:
            return "scene"  # decided before the read: no other scene is ever cached
        try:
            with self._metrics.stage("cache_fetch"):
                value = await self._cache.get(request.user_id)
        except CacheUnavailable as exc:
            self._metrics.cache_errors.labels(operation="get").inc()
            log.warning("top-K cache unavailable, computing instead: %s", exc)
            return "unavailable"
        if value is None:
            return "absent"
        try:
            entry = decode(value)
        except UnreadableEntry as exc:
            log.warning("ignoring the cached top-K of one user: %s", exc)
            return "unreadable"
        if entry.bundle_version != bundle.version:
            return "stale_version"
        if entry.scene != request.scene:  # written by an instance configured with another scene
            return "scene"
        if self._clock() - entry.computed_at > self._config.max_age_s:
            return "stale_age"
        return entry

    def _submit(self, user_id: str) -> None:
        if user_id in self._queued:
            return  # coalesced: the queued recompute will read these events too
        if user_id in self._running:
            self._rerun.add(user_id)
            return
        if len(self._queued) >= self._config.max_pending:
            self._count("dropped")
            return
        self._queued.add(user_id)
        self._queue.put_nowait(user_id)
        self._idle.clear()
        self._metrics.recomputes_pending.set(len(self._queued))

    async def _work(self) -> None:
        while True:
            user_id = await self._queue.get()
            self._queued.discard(user_id)
            self._metrics.recomputes_pending.set(len(self._queued))
            self._running.add(user_id)
            try:
                self._count(await self._recompute(user_id))
            except Exception:  # a bug or an encoder failure must not stop the worker
                log.exception("nearline recompute failed")
                self._count("failed")
            finally:
                self._running.discard(user_id)
                if user_id in self._rerun:
                    self._rerun.discard(user_id)
                    self._submit(user_id)
                if not self._queued and not self._running:
                    self._idle.set()

    async def _recompute(self, user_id: str) -> RecomputeOutcome:
        bundle = self._current()  # taken once: the list and its version tag come from this bundle
        if bundle is None:
            return "failed"
        started = time.perf_counter()
        now = self._clock()
        config = self._config
        try:
            items = await self._pipeline.top_k(bundle, user_id, config.scene, config.k, now)
        except StoreUnavailable as exc:
            log.warning("nearline recompute skipped, session store unavailable: %s", exc)
            return "failed"
        except ChannelsIncomplete as exc:
            log.warning("nearline recompute not cached: %s", exc)
            return "failed"
        if items is None:
            return "no_history"
        if user_id in self._rerun:
            return "superseded"  # computed from history older than what is stored now
        entry = TopK(
            bundle_version=bundle.version,
            scene=config.scene,
            computed_at=now,
            k=config.k,
            item_ids=tuple(item.item_id for item in items),
            scores=tuple(item.score for item in items),
            channels=tuple({n: (h.rank, h.score) for n, h in item.channels.items()} for item in items),
        )
        try:
            await self._cache.put(user_id, encode(entry), config.max_age_s)
        except CacheUnavailable as exc:
            self._metrics.cache_errors.labels(operation="put").inc()
            log.warning("nearline recompute not cached: %s", exc)
            return "failed"
        self._metrics.recompute_seconds.observe(time.perf_counter() - started)
        return "done"

    def _count(self, outcome: RecomputeOutcome) -> None:
        self._metrics.recomputes.labels(outcome=outcome).inc()
