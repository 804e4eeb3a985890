"""Nearline mode with the in-memory store and cache: when a recall is served from the cached
top-K, when it is computed instead (each miss reason), and how ingest schedules recomputes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from fakes import (
    FailingCache,
    FailingStore,
    FakeBundle,
    history,
    ids,
    post_events,
    recall,
    registry_of,
    serving_app,
)
from fastapi import FastAPI

from index.bundle import MANIFEST
from index.features import Event
from service.metrics import CACHE_MISSES, Metrics
from service.nearline import Nearline, NearlineConfig
from service.recall import RecallPipeline, RecallQuery, standard_channels
from service.store import History, InMemorySessionStore, SessionStore
from service.topk_cache import InMemoryTopKCache, TopK, decode, encode

pytestmark = pytest.mark.anyio

HISTORY = ["item-0003", "item-0011", "item-0017", "item-0029", "item-0042"]
NEARLINE = {"nearline_enabled": True, "nearline_k": 20}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def bundle() -> FakeBundle:
    return FakeBundle(version=7, n_items=60)


class CountingStore(InMemorySessionStore):
    """Counts history reads; while ``gate`` is clear, a read returns only once it is set."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0
        self.gate = asyncio.Event()
        self.gate.set()
        self.reading = asyncio.Event()  # set when a read is waiting at the gate

    async def history(
        self, user_id: str, sessions: int, *, seen: bool = True, seen_before: int | None = None
    ) -> History:
        self.reads += 1
        history = await super().history(user_id, sessions, seen=seen, seen_before=seen_before)
        if not self.gate.is_set():
            self.reading.set()
            await self.gate.wait()
        return history


def nearline_of(app: FastAPI) -> Nearline:
    nearline: Nearline | None = app.state.services.nearline
    assert nearline is not None
    return nearline


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def misses(metrics: Metrics) -> dict[str, float]:
    counts = {r: sample(metrics, "nsp_nearline_cache_misses_total", reason=r) for r in CACHE_MISSES}
    return {reason: n for reason, n in counts.items() if n}


def outcome(metrics: Metrics, name: str) -> float:
    return sample(metrics, "nsp_nearline_recomputes_total", outcome=name)


async def test_ingest_recomputes_in_the_background_and_recall_serves_the_cache(
    tmp_path: Path, bundle: FakeBundle
) -> None:
    store = CountingStore()
    async with serving_app(tmp_path, bundle, store=store, **NEARLINE) as (client, app):
        services = app.state.services
        await post_events(client, history("alice", HISTORY))
        await nearline_of(app).idle()
        reads, encodes = store.reads, bundle.encode_calls
        cached = await recall(client, k=10)
        assert (store.reads, bundle.encode_calls) == (reads, encodes)  # one cache read, nothing else
        fresh = await services.pipeline.recall(bundle, RecallQuery(user_id="alice", k=10))
        metrics = services.metrics
    assert cached["source"] == "cache"
    assert cached["bundle_version"] == 7 and cached["degraded"] is False
    assert fresh.source == "model"
    assert cached["items"] == [item.model_dump() for item in fresh.items]
    assert not set(HISTORY) & set(ids(cached))
    assert sample(metrics, "nsp_nearline_cache_hits_total") == 1
    assert outcome(metrics, "done") == 1
    assert sample(metrics, "nsp_nearline_recompute_duration_seconds_count") == 1
    assert misses(metrics) == {}


async def test_nearline_is_off_by_default(tmp_path: Path, bundle: FakeBundle) -> None:
    async with serving_app(tmp_path, bundle) as (client, app):
        await post_events(client, history("alice", HISTORY))
        result = await recall(client, k=10)
        services = app.state.services
    assert services.nearline is None
    assert result["source"] == "model"
    assert sample(services.metrics, "nsp_nearline_cache_hits_total") == 0
    assert misses(services.metrics) == {}
    assert outcome(services.metrics, "done") == 0


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"exclude_seen": False}, "ineligible"),
        ({"query": "red shoes"}, "ineligible"),
        ({"scene": "search"}, "scene"),
        ({"k": 21}, "insufficient"),  # more than nearline_k
        ({"k": 20}, None),
    ],
)
async def test_requests_the_cache_cannot_answer_are_computed(
    tmp_path: Path, bundle: FakeBundle, body: dict[str, Any], reason: str | None
) -> None:
    async with serving_app(tmp_path, bundle, **NEARLINE) as (client, app):
        await post_events(client, history("alice", HISTORY))
        await nearline_of(app).idle()
        result = await recall(client, **body)
        metrics = app.state.services.metrics
    assert result["source"] == ("cache" if reason is None else "model")
    assert misses(metrics) == ({} if reason is None else {reason: 1})


def entry_for(bundle: FakeBundle, **overrides: Any) -> bytes:
    # Items the model would not return first, so a wrongly served entry shows in the answer.
    items = [str(i) for i in bundle.vocab.item_ids[-20:]]
    fields: dict[str, Any] = {
        "bundle_version": bundle.version,
        "scene": "default",
        "computed_at": time.time(),
        "k": 20,
        "item_ids": tuple(items),
        "scores": tuple(1.0 - i / 100 for i in range(20)),
    }
    return encode(TopK(**{**fields, **overrides}))


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        (None, "absent"),
        ({}, None),
        ({"bundle_version": 6}, "stale_version"),
        ({"scene": "feed"}, "scene"),  # written by an instance configured with another scene
        ({"computed_at": time.time() - 601}, "stale_age"),
    ],
)
async def test_cached_entries_are_served_only_when_fresh_for_this_bundle(
    tmp_path: Path, bundle: FakeBundle, overrides: dict[str, Any] | None, reason: str | None
) -> None:
    store, cache = InMemorySessionStore(), InMemoryTopKCache()
    await store.append(history("alice", HISTORY))  # stored directly: no recompute runs
    if overrides is not None:
        await cache.put("alice", entry_for(bundle, **overrides), 600)
    async with serving_app(tmp_path, bundle, store=store, topk_cache=cache, **NEARLINE) as (client, app):
        result = await recall(client, k=10)
        metrics = app.state.services.metrics
    if reason is None:
        assert result["source"] == "cache"
        assert ids(result) == [str(i) for i in bundle.vocab.item_ids[-20:-10]]
    else:
        assert result["source"] == "model" and len(ids(result)) == 10
        assert ids(result) != [str(i) for i in bundle.vocab.item_ids[-20:-10]]
    assert misses(metrics) == ({} if reason is None else {reason: 1})


@pytest.mark.parametrize("value", [b"not json", b'{"bundle_version": 7}', b'{"scores": [1], "item_ids": 3}'])
async def test_an_unreadable_entry_is_a_miss_not_an_error(
    tmp_path: Path, bundle: FakeBundle, value: bytes
) -> None:
    store, cache = InMemorySessionStore(), InMemoryTopKCache()
    await store.append(history("alice", HISTORY))
    await cache.put("alice", value, 600)
    async with serving_app(tmp_path, bundle, store=store, topk_cache=cache, **NEARLINE) as (client, app):
        result = await recall(client, k=10)
        metrics = app.state.services.metrics
    assert result["source"] == "model" and len(ids(result)) == 10
    assert misses(metrics) == {"unreadable": 1}


async def test_exclude_item_ids_are_taken_out_of_the_cached_list(tmp_path: Path, bundle: FakeBundle) -> None:
    async with serving_app(tmp_path, bundle, **{**NEARLINE, "nearline_k": 12}) as (client, app):
        await post_events(client, history("alice", HISTORY))
        await nearline_of(app).idle()
        full = await recall(client, k=12)
        excluded = ids(full)[:3]
        enough = await recall(client, k=9, exclude_item_ids=excluded)
        short = await recall(client, k=10, exclude_item_ids=excluded)
        metrics = app.state.services.metrics
    assert full["source"] == enough["source"] == "cache"
    assert ids(enough) == ids(full)[3:]
    assert short["source"] == "model"  # only 9 cached items are left
    assert len(ids(short)) == 10 and not set(excluded) & set(ids(short))
    assert misses(metrics) == {"insufficient": 1}


async def test_new_events_invalidate_the_cached_list_before_the_ingest_answers(
    tmp_path: Path, bundle: FakeBundle
) -> None:
    async with serving_app(tmp_path, bundle, **NEARLINE) as (client, app):
        await post_events(client, history("alice", HISTORY))
        await nearline_of(app).idle()
        before = await recall(client, k=5)
        await nearline_of(app).stop()  # no recompute from here on: only the invalidation acts
        bought = ids(before)[0]
        await post_events(client, [Event("alice", bought, 1_700_009_000, "pay", "default", "alice-req-9")])
        after = await recall(client, k=5)
        metrics = app.state.services.metrics
    assert before["source"] == "cache"
    assert after["source"] == "model"
    assert bought not in ids(after)  # exclude_seen covers the event /v1/events just acknowledged
    assert misses(metrics) == {"absent": 1}


async def test_a_bundle_swap_makes_cached_lists_stale(tmp_path: Path, bundle: FakeBundle) -> None:
    registry = registry_of(tmp_path, bundle, FakeBundle(version=8, n_items=60, seed=1))
    manifest_8 = tmp_path / "8" / MANIFEST
    manifest_8.unlink()  # published later
    async with serving_app(tmp_path, registry=registry, **NEARLINE) as (client, app):
        await post_events(client, history("alice", HISTORY))
        await nearline_of(app).idle()
        on_7 = await recall(client, k=10)
        manifest_8.write_text("{}")
        await registry.refresh()
        first_on_8 = await recall(client, k=10)
        await post_events(client, history("alice", ["item-0001"], start_ts=1_700_009_000))
        await nearline_of(app).idle()
        later_on_8 = await recall(client, k=10)
        metrics = app.state.services.metrics
    assert (on_7["source"], on_7["bundle_version"]) == ("cache", 7)
    assert (first_on_8["source"], first_on_8["bundle_version"]) == ("model", 8)
    assert (later_on_8["source"], later_on_8["bundle_version"]) == ("cache", 8)
    assert misses(metrics) == {"stale_version": 1}


async def test_cache_down_means_computing_never_an_error(tmp_path: Path, bundle: FakeBundle) -> None:
    async with serving_app(tmp_path, bundle, topk_cache=FailingCache(), **NEARLINE) as (client, app):
        await post_events(client, history("alice", HISTORY))
        await nearline_of(app).idle()
        result = await recall(client, k=10)
        metrics = app.state.services.metrics
    assert result["source"] == "model" and len(ids(result)) == 10
    assert misses(metrics) == {"unavailable": 1}
    for operation in ("invalidate", "put", "get"):
        assert sample(metrics, "nsp_nearline_cache_errors_total", operation=operation) == 1
    assert outcome(metrics, "failed") == 1


async def test_ingest_does_not_wait_for_the_recompute(tmp_path: Path, bundle: FakeBundle) -> None:
    store = CountingStore()
    async with serving_app(tmp_path, bundle, store=store, **NEARLINE) as (client, app):
        store.gate.clear()  # every history read now hangs until the gate opens
        async with asyncio.timeout(5):
            await post_events(client, history("alice", HISTORY))
            await store.reading.wait()  # the recompute started and is stuck
        store.gate.set()
        await nearline_of(app).idle()
        assert (await recall(client, k=10))["source"] == "cache"


class SlowDeleteCache(InMemoryTopKCache):
    """Deletes at once, but while ``gate`` is clear the call returns only once it is set (a DEL
    that Redis has applied but whose reply is still on its way)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.gate.set()
        self.deleting = asyncio.Event()

    async def delete(self, user_ids: Collection[str]) -> None:
        await super().delete(user_ids)
        if not self.gate.is_set():
            self.deleting.set()
            await self.gate.wait()


def nearline_over(
    store: SessionStore,
    bundle: FakeBundle,
    pool: ThreadPoolExecutor,
    cache: InMemoryTopKCache | None = None,
    **config: Any,
) -> tuple[Nearline, InMemoryTopKCache, Metrics]:
    metrics, cache = Metrics(), cache or InMemoryTopKCache()
    pipeline = RecallPipeline(store, standard_channels(pool, metrics), metrics, history_sessions=32)
    fields = {"k": 10, "scene": "default", "max_age_s": 600.0, "max_pending": 100, "concurrency": 1}
    nearline = Nearline(pipeline, lambda: bundle, cache, metrics, NearlineConfig(**{**fields, **config}))
    return nearline, cache, metrics


async def test_pending_recomputes_are_coalesced_and_overflow_is_dropped(bundle: FakeBundle) -> None:
    store = CountingStore()
    for user in ("a", "b", "c"):
        await store.append(history(user, HISTORY))
    with ThreadPoolExecutor(1) as pool:
        nearline, cache, metrics = nearline_over(store, bundle, pool, max_pending=2)
        await nearline.events_stored(["a", "a", "b"])  # workers not started: both stay queued
        await nearline.events_stored(["b", "a"])
        await nearline.events_stored(["c"])  # the queue is full
        assert sample(metrics, "nsp_nearline_recomputes_pending") == 2
        nearline.start()
        await nearline.idle()
        await nearline.stop()
    assert store.reads == 2 and bundle.encode_calls == 2
    assert outcome(metrics, "done") == 2 and outcome(metrics, "dropped") == 1
    assert sample(metrics, "nsp_nearline_recomputes_pending") == 0
    assert await cache.get("a") is not None and await cache.get("b") is not None
    assert await cache.get("c") is None


async def test_a_recompute_overtaken_by_new_events_is_discarded_and_run_again(bundle: FakeBundle) -> None:
    store = CountingStore()
    await store.append(history("a", HISTORY))
    with ThreadPoolExecutor(1) as pool:
        nearline, cache, metrics = nearline_over(store, bundle, pool)
        nearline.start()
        await nearline.events_stored(["a"])
        await nearline.idle()
        first = decode(await cache.get("a") or b"")
        bought = first.item_ids[0]
        store.gate.clear()
        await nearline.events_stored(["a"])  # a recompute that reads the history as it is now…
        await store.reading.wait()
        await store.append([Event("a", bought, 1_700_009_000, "pay", "default", "a-req-9")])
        await nearline.events_stored(["a"])  # …and new events arrive while it runs
        store.gate.set()
        await nearline.idle()
        await nearline.stop()
    assert outcome(metrics, "superseded") == 1 and outcome(metrics, "done") == 2
    assert store.reads == 3
    last = decode(await cache.get("a") or b"")
    assert bought not in last.item_ids


async def test_a_recompute_ending_while_its_invalidation_is_in_flight_writes_nothing(
    bundle: FakeBundle,
) -> None:
    store, slow = CountingStore(), SlowDeleteCache()
    await store.append(history("a", HISTORY))
    with ThreadPoolExecutor(1) as pool:
        nearline, cache, metrics = nearline_over(store, bundle, pool, cache=slow)
        nearline.start()
        await nearline.events_stored(["a"])
        await nearline.idle()
        bought = decode(await cache.get("a") or b"").item_ids[0]
        store.gate.clear()
        await nearline.events_stored(["a"])
        await store.reading.wait()  # a recompute has read the history without the new event
        await store.append([Event("a", bought, 1_700_009_000, "pay", "default", "a-req-9")])
        slow.gate.clear()
        ingest = asyncio.create_task(nearline.events_stored(["a"]))
        await slow.deleting.wait()  # the old list is deleted; the ingest awaits the reply
        store.gate.set()
        async with asyncio.timeout(5):
            while outcome(metrics, "superseded") + outcome(metrics, "done") < 2:
                await asyncio.sleep(0.01)
        # The recompute from the older history wrote nothing (its rerun may have written already).
        value = await cache.get("a")
        assert value is None or bought not in decode(value).item_ids
        slow.gate.set()
        await ingest
        await nearline.idle()
        await nearline.stop()
    assert outcome(metrics, "superseded") == 1
    assert outcome(metrics, "done") >= 2  # a third run if the rerun ended before the ingest resumed
    assert bought not in decode(await cache.get("a") or b"").item_ids


async def test_recomputes_without_history_or_store_cache_nothing(bundle: FakeBundle) -> None:
    with ThreadPoolExecutor(1) as pool:
        nearline, cache, metrics = nearline_over(InMemorySessionStore(), bundle, pool)
        down, _, down_metrics = nearline_over(FailingStore(), bundle, pool)
        for n in (nearline, down):
            n.start()
            await n.events_stored(["ghost"])
            await n.idle()
            await n.stop()
    assert outcome(metrics, "no_history") == 1
    assert outcome(down_metrics, "failed") == 1
    assert await cache.get("ghost") is None
