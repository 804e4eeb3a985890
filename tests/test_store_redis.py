"""RedisSessionStore against a real Redis: key layout, TTL, and failing fast when Redis is gone."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
import redis.asyncio as aioredis
from fakes import FakeBundle, history, post_events, registry_of

from index.features import Event
from nsprecall import cli
from service.app import create_app
from service.redis_client import BoundedRedis
from service.settings import Settings
from service.store import RedisSessionStore, StoreUnavailable, store_from_settings
from service.store_migrate import migrate

pytestmark = pytest.mark.anyio

REDIS_URL = os.environ.get("NSP_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
TIMEOUT_S = 0.2


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def event(user: str, ts: int) -> Event:
    return Event(user, f"item-{ts}", ts, "click", "feed", "r1")


async def test_keys_are_hash_tagged_by_user_and_a_session_is_one_compact_record(
    admin: aioredis.Redis, prefix: str
) -> None:
    store = RedisSessionStore(REDIS_URL, key_prefix=prefix)
    try:
        await store.append(
            [event("alice", 10), Event("alice", "item-9", 11, "exposure", "feed", "r1", "milk")]
        )
    finally:
        await store.close()
    keys = sorted([key.decode() async for key in admin.scan_iter(match=f"{prefix}:*")])
    assert keys == [f"{prefix}:{{alice}}:{name}" for name in ("count", "seen", "sessions")]
    assert await admin.lrange(f"{prefix}:{{alice}}:sessions", 0, -1) == [
        b'"r1",["item-10",10,"click","feed"],["item-9",11,"exposure","feed","milk"]'
    ]
    assert await admin.zrange(f"{prefix}:{{alice}}:seen", 0, -1, withscores=True) == [
        (b"item-10", 10.0),
        (b"item-9", 11.0),
    ]
    assert await admin.get(f"{prefix}:{{alice}}:count") == b"2"


async def test_every_write_sets_the_ttl_of_every_key(admin: aioredis.Redis, prefix: str) -> None:
    store = RedisSessionStore(REDIS_URL, key_prefix=prefix, ttl_seconds=120)
    keys = [store.key("alice", name) for name in ("sessions", "seen", "count")]
    try:
        await store.append([event("alice", 1)])
        for key in keys:
            assert 0 < await admin.ttl(key) <= 120
            await admin.expire(key, 5)
        await store.append([event("alice", 2)])
        for key in keys:
            assert await admin.ttl(key) > 5
    finally:
        await store.close()


async def test_a_lone_session_over_the_cap_keeps_its_newest_events(
    admin: aioredis.Redis, prefix: str
) -> None:
    store = RedisSessionStore(REDIS_URL, key_prefix=prefix, max_events=3)
    try:
        await store.append([event("alice", ts) for ts in range(1, 8)])
        assert await admin.llen(store.key("alice")) == 1
        assert await admin.get(store.key("alice", "count")) == b"3"
        assert [e.ts for e in await store.recent("alice", 10)] == [7, 6, 5]
        assert await admin.zcard(store.key("alice", "seen")) == 3
    finally:
        await store.close()


async def test_the_cap_drops_whole_oldest_sessions(admin: aioredis.Redis, prefix: str) -> None:
    store = RedisSessionStore(REDIS_URL, key_prefix=prefix, max_events=5)
    try:
        for s in range(4):  # four sessions of two events
            await store.append(
                [Event("alice", f"i{s}-{e}", 10 * s + e, "click", "feed", f"r{s}") for e in range(2)]
            )
        assert [e.request_id for e in await store.recent("alice", 10)] == ["r3", "r3", "r2", "r2"]
        assert await admin.get(store.key("alice", "count")) == b"4"
    finally:
        await store.close()


async def test_malformed_records_are_skipped(admin: aioredis.Redis, prefix: str) -> None:
    store = RedisSessionStore(REDIS_URL, key_prefix=prefix)
    try:
        await store.append([event("alice", 1)])
        await admin.lpush(store.key("alice"), b"not json", b'"r9",["too","short"]', b'"r8",[')
        assert [e.ts for e in await store.recent("alice", 10)] == [1]
        assert [e.ts for e in (await store.history("alice", 10)).events] == [1]
    finally:
        await store.close()


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port that accepts TCP connections and never answers: a hung Redis."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield s.getsockname()[1]


@pytest.mark.parametrize("server", ["closed_port", "silent_server"])
async def test_unreachable_redis_raises_store_unavailable_quickly(
    server: str, request: pytest.FixtureRequest
) -> None:
    port = request.getfixturevalue(server)
    store = RedisSessionStore(f"redis://127.0.0.1:{port}/0", timeout_s=TIMEOUT_S)
    try:
        # Each call gives up after about one timeout (generous margin for a loaded CI box).
        async with asyncio.timeout(3 * TIMEOUT_S):
            with pytest.raises(StoreUnavailable):
                await store.recent("alice", 10)
        async with asyncio.timeout(3 * TIMEOUT_S):
            with pytest.raises(StoreUnavailable):
                await store.append([event("alice", 1)])
        async with asyncio.timeout(3 * TIMEOUT_S):
            assert await store.ping() is False
    finally:
        await store.close()


async def test_settings_build_a_redis_store_and_never_log_the_password(
    closed_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(redis_url=f"redis://nsp:hunter2@127.0.0.1:{closed_port}/0", store_timeout_s=TIMEOUT_S)
    with caplog.at_level(logging.DEBUG):
        store = store_from_settings(settings)
        try:
            assert isinstance(store, RedisSessionStore)
            with pytest.raises(StoreUnavailable) as failure:
                await store.recent("alice", 1)
        finally:
            await store.close()
    assert "hunter2" not in caplog.text
    assert "hunter2" not in str(failure.value)
    assert "hunter2" not in repr(settings)


async def test_app_keeps_sessions_in_redis_when_configured(
    admin: aioredis.Redis, prefix: str, tmp_path: Path
) -> None:
    settings = Settings(
        bundle_root=tmp_path, redis_url=REDIS_URL, store_key_prefix=prefix, watch_interval_s=60
    )
    app = create_app(settings, registry=registry_of(tmp_path, FakeBundle()))
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://nsp") as client,
    ):
        await post_events(client, history("alice", ["item-0001", "item-0002"]))
        recall = (await client.post("/v1/recall", json={"user_id": "alice", "k": 3})).json()
    assert recall["source"] == "model"
    assert await admin.get(f"{prefix}:{{alice}}:count") == b"2"


async def write_format_1(admin: aioredis.Redis, prefix: str, events: list[Event]) -> None:
    """Events as every release before session records stored them: one JSON array each,
    ``[item_id, ts, action, scene, request_id(, query)]``, newest first."""
    values = [
        orjson.dumps([e.item_id, e.ts, e.action, e.scene, e.request_id, *([e.query] if e.query else [])])
        for e in sorted(events, key=lambda e: e.ts)
    ]
    await admin.lpush(f"{prefix}:{{{events[0].user_id}}}:events", *values)


def old_and_new() -> tuple[list[Event], list[Event]]:
    old = [
        Event("alice", f"old-{s}-{e}", 100 * s + e, "click", "feed", f"o{s}", "milk" if s == 1 else "")
        for s in range(3)
        for e in range(2)
    ]
    new = [Event("alice", f"new-{e}", 1_000 + e, "exposure", "home", "n0") for e in range(2)]
    return old, new


async def test_format_1_lists_still_read_merged_with_records_written_since(
    admin: aioredis.Redis, prefix: str
) -> None:
    old, new = old_and_new()
    await write_format_1(admin, prefix, old)
    store = RedisSessionStore(REDIS_URL, key_prefix=prefix)
    try:
        await store.append(new)
        history = await store.history("alice", 2)
        assert {e.request_id for e in history.events} == {"n0", "o2"}  # the two newest sessions
        assert history.seen == {e.item_id for e in old + new}
        assert sorted(await store.recent("alice", 100), key=repr) == sorted(old + new, key=repr)
    finally:
        await store.close()


async def test_store_migrate_rewrites_format_1_lists_as_records_behind_newer_ones(
    admin: aioredis.Redis, prefix: str
) -> None:
    old, new = old_and_new()
    await write_format_1(admin, prefix, old)
    await admin.lpush(f"{prefix}:{{alice}}:events", b"not json")
    store = RedisSessionStore(REDIS_URL, key_prefix=prefix)
    try:
        await store.append(new)
        before = await store.history("alice", 2)
        done = await migrate(BoundedRedis(REDIS_URL, timeout_s=5), prefix, 500, 3600)
        assert (done.users, done.events, done.skipped_values) == (1, len(old), 1)
        assert not await admin.exists(f"{prefix}:{{alice}}:events")
        records = await admin.lrange(store.key("alice"), 0, -1)
        assert [r.split(b",")[0] for r in records] == [b'"n0"', b'"o2"', b'"o1"', b'"o0"']  # newest first
        after = await store.history("alice", 2)
        assert sorted(after.events, key=repr) == sorted(before.events, key=repr) and after.seen == before.seen
        assert sorted(await store.recent("alice", 100), key=repr) == sorted(old + new, key=repr)
        assert await admin.get(store.key("alice", "count")) == str(len(old + new)).encode()
        again = await migrate(BoundedRedis(REDIS_URL, timeout_s=5), prefix, 500, 3600)
        assert again.users == 0
    finally:
        await store.close()


def test_store_migrate_cli_names_what_to_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NSP_REDIS_URL", raising=False)
    with pytest.raises(SystemExit, match="NSP_REDIS_URL"):
        cli.main(["store-migrate"])
    with pytest.raises(SystemExit, match="--timeout"):
        cli.main(["store-migrate", "--timeout", "-1"])


async def test_a_history_longer_than_a_recall_reads_is_all_excluded_and_k_stays_exact(
    admin: aioredis.Redis, prefix: str, tmp_path: Path
) -> None:
    """40 sessions, 120 items: a recall reads the newest 4 sessions, yet excludes all 120."""
    settings = Settings(
        bundle_root=tmp_path,
        redis_url=REDIS_URL,
        store_key_prefix=prefix,
        watch_interval_s=60,
        history_sessions=4,
    )
    app = create_app(settings, registry=registry_of(tmp_path, FakeBundle(n_items=300)))
    stored = [f"item-{i:04d}" for i in range(120)]
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://nsp") as client,
    ):
        await post_events(client, history("alice", stored, per_session=3))
        sessions = (await client.get("/v1/users/alice/sessions", params={"limit": 100})).json()["sessions"]
        answers = {
            (k, exclude): (
                await client.post("/v1/recall", json={"user_id": "alice", "k": k, "exclude_seen": exclude})
            )
            .raise_for_status()
            .json()
            for k in (10, 50, 180)
            for exclude in (True, False)
        }
    assert len(sessions) == 40  # every session is kept (and listed on request)
    for (k, exclude), answer in answers.items():
        returned = [item["item_id"] for item in answer["items"]]
        assert answer["source"] == "model" and len(returned) == len(set(returned)) == k
        if exclude:
            assert not set(returned) & set(stored)  # the oldest sessions' items too
    # without exclusions the window's own items come back: the history is really read
    kept = [item["item_id"] for item in answers[(50, False)]["items"]]
    assert set(kept) & set(stored[-12:])
