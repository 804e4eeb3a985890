"""The session store and the nearline cache unchanged against the Redis deployments production
uses, each a real `redis-server` the test starts: a three-master Redis Cluster, a Redis with a
password (AUTH in the URL, never printed) and a Redis that speaks only TLS (rediss://)."""

from __future__ import annotations

import logging
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis
from redis.crc import key_slot
from redis_servers import RedisServer, redis_cluster, running

from index.features import Event
from service.settings import Settings
from service.store import RedisSessionStore, StoreUnavailable, store_from_settings
from service.topk_cache import RedisTopKCache, topk_cache_from_settings

pytestmark = pytest.mark.anyio

PASSWORD = "s3cret-Pa55-for-tests"
TIMEOUT_S = 0.5


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def events_of(users: int, per_user: int) -> list[Event]:
    return [
        Event(f"user-{u}", f"item-{u}-{i}", 1_767_225_600 + i, "click", "feed", f"r{u}-{i // 2}")
        for u in range(users)
        for i in range(per_user)
    ]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[RedisServer]]:
    with redis_cluster(tmp_path_factory.mktemp("cluster")) as nodes:
        yield nodes


@pytest.fixture
async def cluster_store(cluster: list[RedisServer]) -> AsyncIterator[RedisSessionStore]:
    settings = Settings(
        redis_url=cluster[0].url, redis_cluster=True, store_max_events=4, store_timeout_s=TIMEOUT_S
    )
    store = store_from_settings(settings)
    assert isinstance(store, RedisSessionStore)
    yield store
    await store.close()


def test_every_key_of_a_user_is_in_the_users_slot() -> None:
    store = RedisSessionStore("redis://127.0.0.1:1/0")
    store_keys = [store.key("alice", name) for name in ("sessions", "seen", "count", "events")]
    cache_key = RedisTopKCache("redis://127.0.0.1:1/0").key("alice")
    assert store_keys[0] == "nsp:{alice}:sessions" and cache_key == "nsp:{alice}:topk"
    assert {key_slot(key.encode()) for key in [*store_keys, cache_key]} == {key_slot(b"alice")}


async def test_multi_user_batches_span_the_cluster(
    cluster: list[RedisServer], cluster_store: RedisSessionStore
) -> None:
    batch = events_of(users=60, per_user=6)
    assert await cluster_store.append(batch) == len(batch)
    for u in (0, 17, 59):  # newest first, capped at 4
        stored = await cluster_store.recent(f"user-{u}", 10)
        assert [e.item_id for e in stored] == [f"item-{u}-{i}" for i in (5, 4, 3, 2)]
    cluster_client = redis.RedisCluster(host="127.0.0.1", port=cluster[0].port)
    try:
        assert 0 < cluster_client.ttl(cluster_store.key("user-42")) <= Settings().store_ttl_seconds
    finally:
        cluster_client.close()
    # The batch really crossed slots and nodes: each master holds some of its users.
    per_node = []
    for node in cluster:
        client = redis.Redis(port=node.port)
        try:
            per_node.append(client.dbsize())
        finally:
            client.close()
    assert len(per_node) == 3 and all(n > 0 for n in per_node) and sum(per_node) == 60 * 3  # 3 keys a user


async def test_nearline_cache_on_the_cluster(cluster: list[RedisServer]) -> None:
    cache = topk_cache_from_settings(
        # A generous timeout: the first call discovers the cluster's slots, which on a loaded
        # machine can take longer than the 0.2 s default; what is checked here is the behaviour.
        Settings(redis_url=cluster[0].url, redis_cluster=True, nearline_enabled=True, store_timeout_s=5.0)
    )
    users = [f"cached-{u}" for u in range(30)]
    try:
        for user in users:
            await cache.put(user, user.encode(), 60)
        assert [await cache.get(user) for user in users] == [user.encode() for user in users]
        await cache.delete(users[:20])  # one pipelined call across slots and nodes
        assert [await cache.get(user) for user in users] == [None] * 20 + [u.encode() for u in users[20:]]
    finally:
        await cache.close()


@pytest.fixture(scope="module")
def with_password(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("auth"), ["--requirepass", PASSWORD])
    with running(server, ping_url=f"redis://:{PASSWORD}@127.0.0.1:{server.port}/0"):
        yield server


async def test_auth_by_url_and_the_password_is_never_printed(
    with_password: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    good = f"redis://:{PASSWORD}@127.0.0.1:{with_password.port}/0"
    wrong = f"redis://:not-{PASSWORD}@127.0.0.1:{with_password.port}/0"
    with caplog.at_level(logging.DEBUG):
        settings = Settings(redis_url=good, store_timeout_s=TIMEOUT_S)
        store = store_from_settings(settings)
        try:
            await store.append(events_of(users=2, per_user=3))
            assert [e.item_id for e in await store.recent("user-1", 10)] == [
                "item-1-2",
                "item-1-1",
                "item-1-0",
            ]
        finally:
            await store.close()
        refused = store_from_settings(Settings(redis_url=wrong, store_timeout_s=TIMEOUT_S))
        try:
            with pytest.raises(StoreUnavailable) as failure:
                await refused.recent("user-1", 10)
        finally:
            await refused.close()
    assert "redis://:***@127.0.0.1" in caplog.text  # the start-up line names the store, masked
    for text in (caplog.text, str(failure.value), repr(failure.value), repr(settings), str(settings)):
        assert PASSWORD not in text


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A throw-away CA and a server certificate it signed, for 127.0.0.1."""
    d = tmp_path_factory.mktemp("tls")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True, timeout=60)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=nsp test CA",
            "-keyout", "ca.key", "-out", "ca.crt")  # fmt: skip
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", "server.key",
            "-out", "server.csr")  # fmt: skip
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "1", "-extfile", "san.ext", "-out", "server.crt")  # fmt: skip
    return {"ca": d / "ca.crt", "cert": d / "server.crt", "key": d / "server.key"}


@pytest.fixture(scope="module")
def tls_only(tmp_path_factory: pytest.TempPathFactory, tls_files: dict[str, Path]) -> Iterator[RedisServer]:
    tls_port = RedisServer(tmp_path_factory.mktemp("tls-port")).port
    args = ["--port", "0", "--tls-port", str(tls_port), "--tls-cert-file", str(tls_files["cert"])]
    args += ["--tls-key-file", str(tls_files["key"]), "--tls-ca-cert-file", str(tls_files["ca"])]
    args += ["--tls-auth-clients", "no"]
    server = RedisServer(tmp_path_factory.mktemp("tls-redis"), args)
    server.port = tls_port  # clients reach it on the TLS port only
    try:
        with running(server, ssl_ca_certs=str(tls_files["ca"]), ping_url=f"rediss://127.0.0.1:{tls_port}/0"):
            yield server
    except AssertionError as exc:
        if "tls" in str(exc).lower() and "not supported" in str(exc).lower():
            pytest.skip(f"this redis-server was built without TLS: {exc}")
        raise


async def test_tls_by_url_with_the_configured_ca(tls_only: RedisServer, tls_files: dict[str, Path]) -> None:
    url = f"rediss://127.0.0.1:{tls_only.port}/0"
    settings = Settings(redis_url=url, redis_tls_ca_file=tls_files["ca"], store_timeout_s=TIMEOUT_S)
    store = store_from_settings(settings)
    try:
        await store.append(events_of(users=1, per_user=2))
        assert [e.item_id for e in await store.recent("user-0", 10)] == ["item-0-1", "item-0-0"]
    finally:
        await store.close()
    # Without the CA the server's certificate is not trusted: the store refuses, it does not
    # silently talk to an unverified server.
    unverified = store_from_settings(Settings(redis_url=url, store_timeout_s=TIMEOUT_S))
    try:
        with pytest.raises(StoreUnavailable):
            await unverified.recent("user-0", 10)
    finally:
        await unverified.close()


def test_tls_ca_file_needs_a_rediss_url(tls_files: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match="rediss://"):
        Settings(redis_url="redis://127.0.0.1:6379/0", redis_tls_ca_file=tls_files["ca"])
