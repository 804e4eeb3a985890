"""SessionStore semantics, run against both implementations (Redis skipped if unreachable)."""

from __future__ import annotations

import contextlib
import os
import random
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from index.features import Event, group_sessions
from service.redis_client import redact_url
from service.store import InMemorySessionStore, RedisSessionStore, SessionStore

pytestmark = pytest.mark.anyio

REDIS_URL = os.environ.get("NSP_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
MAX_EVENTS = 5


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@contextlib.asynccontextmanager
async def open_store(kind: str, max_events: int) -> AsyncIterator[SessionStore]:
    if kind == "memory":
        yield InMemorySessionStore(max_events=max_events, ttl_seconds=3600)
        return
    prefix = f"nsptest-{uuid.uuid4().hex}"
    admin = aioredis.Redis.from_url(REDIS_URL, socket_timeout=1, socket_connect_timeout=1)
    try:
        await admin.ping()
    except Exception as exc:
        await admin.aclose()
        pytest.skip(f"no Redis at {redact_url(REDIS_URL)}: {exc}")
    redis_store = RedisSessionStore(REDIS_URL, key_prefix=prefix, max_events=max_events, ttl_seconds=3600)
    try:
        yield redis_store
    finally:
        await redis_store.close()
        keys = [key async for key in admin.scan_iter(match=f"{prefix}:*")]
        if keys:
            await admin.delete(*keys)
        await admin.aclose()


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[SessionStore]:
    async with open_store(request.param, MAX_EVENTS) as opened:
        yield opened


@pytest.fixture(params=["memory", "redis"])
async def roomy_store(request: pytest.FixtureRequest) -> AsyncIterator[SessionStore]:
    """A store whose cap no test history reaches."""
    async with open_store(request.param, 10_000) as opened:
        yield opened


def clicks(user: str, *timestamps: int, request_id: str = "r") -> list[Event]:
    return [Event(user, f"item-{ts}", ts, "click", "feed", request_id) for ts in timestamps]


async def test_recent_is_newest_first(store: SessionStore) -> None:
    assert await store.append(clicks("alice", 1, 3, 2)) == 3
    assert await store.append(clicks("alice", 4)) == 1
    recent = await store.recent("alice", 10)
    assert [e.ts for e in recent] == [4, 3, 2, 1]
    assert recent[0] == Event("alice", "item-4", 4, "click", "feed", "r")


async def test_a_late_batch_with_older_events_is_still_read_newest_first(store: SessionStore) -> None:
    await store.append(clicks("alice", 5, 6))
    await store.append(clicks("alice", 3))
    assert [e.ts for e in await store.recent("alice", 10)] == [6, 5, 3]


async def test_recent_honours_the_limit(store: SessionStore) -> None:
    await store.append(clicks("alice", 1, 2, 3))
    assert [e.ts for e in await store.recent("alice", 2)] == [3, 2]
    assert await store.recent("alice", 0) == []


async def test_a_batch_of_several_users_lands_per_user(store: SessionStore) -> None:
    await store.append([*clicks("alice", 1, 2), *clicks("bob", 5)])
    assert [e.ts for e in await store.recent("alice", 10)] == [2, 1]
    assert [(e.user_id, e.ts) for e in await store.recent("bob", 10)] == [("bob", 5)]


async def test_unknown_user_has_no_events(store: SessionStore) -> None:
    assert await store.recent("nobody", 10) == []


async def test_only_the_newest_max_events_are_kept(store: SessionStore) -> None:
    await store.append(clicks("alice", *range(1, 5)))
    await store.append(clicks("alice", *range(5, 9)))
    assert [e.ts for e in await store.recent("alice", 100)] == [8, 7, 6, 5, 4]


async def test_ids_with_separators_and_unicode_round_trip(store: SessionStore) -> None:
    event = Event("user:{1}", 'item,"x"', 7, "pay", "search", "req:é")
    await store.append([event])
    assert await store.recent("user:{1}", 5) == [event]
    assert await store.recent("user:", 5) == []


async def test_ping(store: SessionStore) -> None:
    assert await store.ping() is True


async def test_in_memory_events_expire_after_the_ttl() -> None:
    now = [0.0]
    store = InMemorySessionStore(ttl_seconds=10, clock=lambda: now[0])
    await store.append(clicks("alice", 1))
    now[0] = 9.0
    await store.append(clicks("alice", 2))  # a write renews the TTL, as EXPIRE does
    now[0] = 18.0
    assert [e.ts for e in await store.recent("alice", 10)] == [2, 1]
    now[0] = 19.0
    assert await store.recent("alice", 10) == []


def test_redact_url_hides_only_the_password() -> None:
    assert redact_url("redis://user:s3cret@redis.internal:6380/2") == "redis://user:***@redis.internal:6380/2"
    assert redact_url("redis://:s3cret@h/0") == "redis://:***@h/0"
    assert redact_url("redis://h:6379/0") == "redis://h:6379/0"


def session_stream(seed: int, user: str = "alice") -> list[list[Event]]:
    """Batches of one user's events as a service receives them: sessions of exposures, clicks on
    some of them arriving in a later batch (sometimes after newer sessions began), search
    sessions with a query, ids with separators; seeded."""
    rng = random.Random(seed)
    batches: list[list[Event]] = []
    late: list[Event] = []
    ts = 1_000
    for s in range(rng.randint(3, 12)):
        request_id = f'req:{s},"é"' if s % 5 == 0 else f"r{s}"
        query = "oat milk" if s % 3 == 0 else ""
        scene = "search" if query else rng.choice(["feed", "home"])
        shown = [
            Event(user, f"item-{rng.randint(0, 30)}", ts + e, "exposure", scene, request_id, query)
            for e in range(rng.randint(1, 6))
        ]
        clicked = [
            Event(user, e.item_id, e.ts + 100, rng.choice(["click", "cart", "pay"]), scene, request_id, query)
            for e in shown
            if rng.random() < 0.4
        ]
        batches.append(shown)
        late.extend(clicked)
        if late and rng.random() < 0.6:
            batches.append(late)
            late = []
        ts += rng.randint(200, 5_000)
    if late:
        batches.append(late)
    return batches


@pytest.mark.parametrize("seed", range(6))
async def test_history_round_trips_every_field_and_groups_as_group_sessions(
    roomy_store: SessionStore, seed: int
) -> None:
    batches = session_stream(seed)
    events = [e for batch in batches for e in batch]
    for batch in batches:
        await roomy_store.append(batch)
    history = await roomy_store.history("alice", 1_000)
    assert sorted(history.events, key=repr) == sorted(events, key=repr)  # every field, query included
    assert [e.ts for e in history.events] == sorted((e.ts for e in events), reverse=True)
    assert group_sessions(history.events) == group_sessions(events)
    assert history.seen == {e.item_id for e in events}
    assert sorted(await roomy_store.recent("alice", 1_000), key=repr) == sorted(events, key=repr)


async def test_the_cap_keeps_whole_newest_sessions_and_their_items_seen(store: SessionStore) -> None:
    for s in range(4):
        await store.append(
            [Event("alice", f"i{s}-{e}", 10 * s + e, "click", "feed", f"r{s}") for e in range(2)]
        )
    history = await store.history("alice", 10)
    assert [e.request_id for e in history.events] == ["r3", "r3", "r2", "r2"]  # 6 > MAX_EVENTS: r1 went
    assert {f"i{s}-{e}" for s in (2, 3) for e in range(2)} <= history.seen
    assert len(history.seen) <= MAX_EVENTS


async def test_history_reads_only_the_newest_sessions_and_every_seen_item(roomy_store: SessionStore) -> None:
    store = roomy_store
    for s in range(6):
        await store.append(
            [Event("alice", f"i{s}-{e}", 10 * s + e, "click", "feed", f"r{s}") for e in range(3)]
        )
    history = await store.history("alice", 2)
    assert {e.request_id for e in history.events} == {"r5", "r4"}
    assert history.seen == {f"i{s}-{e}" for s in range(6) for e in range(3)}
    assert (await store.history("alice", 2, seen=False)).seen == frozenset()
    assert (await store.history("alice", 2, seen_before=20)).seen == {
        f"i{s}-{e}" for s in range(2) for e in range(3)
    }
