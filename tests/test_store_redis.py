"""RedisSessionStore against a real Redis: key layout, TTL, and failing fast when Redis is gone."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis
from fakes import FakeBundle, history, post_events, registry_of

from index.features import Event
from service.app import create_app
from service.settings import Settings
from service.store import RedisSessionStore, StoreUnavailable, store_from_settings

pytestmark = pytest.mark.anyio

REDIS_URL = os.environ.get("NSP_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
TIMEOUT_S = 0.2


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def event(user: str, ts: int) -> Event:
    return Event(user, f"item-{ts}", ts, "click", "feed", "r1")


async def test_key_is_hash_tagged_by_user_and_values_are_compact(admin: aioredis.Redis, prefix: str) -> None:
    store = RedisSessionStore(REDIS_URL, key_prefix=prefix)
    try:
        await store.append([event("alice", 10)])
    finally:
        await store.close()
    keys = [key.decode() async for key in admin.scan_iter(match=f"{prefix}:*")]
    assert keys == [f"{prefix}:{{alice}}:events"]
    assert await admin.lrange(keys[0], 0, -1) == [b'["item-10",10,"click","feed","r1"]']


async def test_every_write_sets_the_ttl(admin: aioredis.Redis, prefix: str) -> None:
    store = RedisSessionStore(REDIS_URL, key_prefix=prefix, ttl_seconds=120)
    key = store.key("alice")
    try:
        await store.append([event("alice", 1)])
        assert 0 < await admin.ttl(key) <= 120
        await admin.expire(key, 5)
        await store.append([event("alice", 2)])
        assert await admin.ttl(key) > 5
    finally:
        await store.close()


async def test_list_is_capped(admin: aioredis.Redis, prefix: str) -> None:
    store = RedisSessionStore(REDIS_URL, key_prefix=prefix, max_events=3)
    try:
        await store.append([event("alice", ts) for ts in range(1, 8)])
        assert await admin.llen(store.key("alice")) == 3
        assert [e.ts for e in await store.recent("alice", 10)] == [7, 6, 5]
    finally:
        await store.close()


async def test_malformed_values_are_skipped(admin: aioredis.Redis, prefix: str) -> None:
    store = RedisSessionStore(REDIS_URL, key_prefix=prefix)
    try:
        await store.append([event("alice", 1)])
        await admin.lpush(store.key("alice"), b"not json", b'["too","short"]')
        assert [e.ts for e in await store.recent("alice", 10)] == [1]
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
    assert await admin.llen(f"{prefix}:{{alice}}:events") == 2
