"""The session store: each user's recent events, newest first (design §3.3).

``SessionStore`` is the protocol the service uses. ``RedisSessionStore`` is the real one;
``InMemorySessionStore`` has the same semantics, for unit tests and as the embedded default
when no Redis is configured. Per user the store keeps a capped list of the last
``max_events`` events that expires ``ttl_seconds`` after the user's last write.

Every store failure surfaces as ``StoreUnavailable``; callers never see a driver exception.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import orjson

from index.features import Event
from service.breaker import CircuitBreaker
from service.metrics import Metrics
from service.redis_client import (
    BoundedRedis,
    RedisClient,
    RedisUnavailable,
    bounded_redis_from_settings,
)
from service.settings import Settings

log = logging.getLogger(__name__)


class StoreUnavailable(Exception):
    """The session store could not be reached, timed out, or refused the command."""


class SessionStore(Protocol):
    """Recent events per user. Implementations are used from one event loop.

    ``append`` is all-or-nothing per user: when it returns, every event is stored; when it
    raises ``StoreUnavailable`` each user's events were applied entirely or not at all — on a
    standalone Redis the whole batch's, on a cluster possibly some users' and not others' (and
    after a timeout the caller cannot tell which, so a retried batch may store events twice).
    """

    async def append(self, events: Sequence[Event]) -> int:
        """Store a batch (any mix of users); returns how many events were stored."""
        ...

    async def recent(self, user_id: str, limit: int) -> list[Event]:
        """Up to ``limit`` of the user's events, newest first; [] for an unknown user."""
        ...

    async def ping(self) -> bool:
        """True when the store answers; never raises."""
        ...

    async def close(self) -> None: ...


def by_user(events: Sequence[Event]) -> dict[str, list[Event]]:
    """Events grouped by user, each group oldest first (stable for equal timestamps)."""
    groups: dict[str, list[Event]] = {}
    for event in events:
        groups.setdefault(event.user_id, []).append(event)
    for group in groups.values():
        group.sort(key=lambda e: e.ts)
    return groups


def newest_first(events: list[Event]) -> list[Event]:
    # A late-arriving batch can carry older timestamps than what is already stored.
    return sorted(events, key=lambda e: -e.ts)


def user_key(prefix: str, user_id: str, name: str) -> str:
    """``{prefix}:{{user_id}}:{name}``: every key of one user shares the hash tag, so all of
    them live in one Redis Cluster slot."""
    return f"{prefix}:{{{user_id}}}:{name}"


class InMemorySessionStore:
    """Process-local store with Redis semantics (cap, TTL, newest first); not persisted.

    Not thread-safe: use it from one event loop. Never raises ``StoreUnavailable``.
    """

    def __init__(
        self,
        max_events: int = 500,
        ttl_seconds: float = 30 * 86400,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._max_events = max_events
        self._ttl = ttl_seconds
        self._clock = clock
        self._lists: dict[str, tuple[deque[Event], float]] = {}  # user → (newest first, expires at)

    async def append(self, events: Sequence[Event]) -> int:
        expires = self._clock() + self._ttl
        for user_id, group in by_user(events).items():
            stored = self._live(user_id) or deque(maxlen=self._max_events)
            stored.extendleft(group)  # oldest first in, so the newest ends at the head
            self._lists[user_id] = (stored, expires)
        return len(events)

    async def recent(self, user_id: str, limit: int) -> list[Event]:
        stored = self._live(user_id)
        if stored is None or limit <= 0:
            return []
        return newest_first(list(stored)[:limit])

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        self._lists.clear()

    def _live(self, user_id: str) -> deque[Event] | None:
        entry = self._lists.get(user_id)
        if entry is None:
            return None
        if entry[1] <= self._clock():
            del self._lists[user_id]
            return None
        return entry[0]


class RedisSessionStore:
    """Redis lists, one per user, at ``{prefix}:{{user_id}}:events`` (hash-tagged by user).

    Values are compact JSON ``[item_id, ts, action, scene, request_id]``, plus the event's search
    text as a sixth element when it has one (values of either length are read, so lists written
    before search stay readable). A batch is written atomically per user (LPUSH oldest→newest,
    LTRIM, EXPIRE), so readers never see part of a user's events: one MULTI/EXEC for the whole
    batch on a standalone Redis; on a cluster, where a transaction cannot span hash slots, one
    Lua script per user, pipelined. Every call is bounded by ``timeout_s`` and goes through
    ``breaker`` (see ``service.redis_client``); failures raise ``StoreUnavailable``. Safe for
    concurrent use from one event loop.
    """

    def __init__(
        self,
        redis: str | BoundedRedis,
        *,
        key_prefix: str = "nsp",
        max_events: int = 500,
        ttl_seconds: int = 30 * 86400,
        timeout_s: float = 0.2,
        cluster: bool = False,
        tls_ca_file: Path | None = None,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        """``redis``: a URL, connected with the options after ``ttl_seconds``, or a configured
        connection (``store_from_settings``), used as it is."""
        if isinstance(redis, str):
            redis = BoundedRedis(
                redis, timeout_s=timeout_s, cluster=cluster, tls_ca_file=tls_ca_file, breaker=breaker
            )
        self._prefix = key_prefix
        self._max_events = max_events
        self._ttl = ttl_seconds
        self._redis = redis
        log.info("session store: %s at %s", "redis cluster" if redis.cluster else "redis", redis.url)

    def key(self, user_id: str) -> str:
        return user_key(self._prefix, user_id, "events")

    async def append(self, events: Sequence[Event]) -> int:
        if not events:
            return 0
        groups = by_user(events)
        try:
            write = self._write_per_user if self._redis.cluster else self._write
            await self._redis.run(lambda client: write(client, groups))
        except RedisUnavailable as exc:
            raise StoreUnavailable(f"session store write failed: {exc}") from exc
        return len(events)

    async def _write(self, client: RedisClient, groups: dict[str, list[Event]]) -> None:
        """One MULTI/EXEC for the whole batch (standalone Redis: every key on one server)."""
        async with client.pipeline(transaction=True) as pipe:
            for user_id, group in groups.items():
                key = self.key(user_id)
                pipe.lpush(key, *(_encode(e) for e in group))
                pipe.ltrim(key, 0, self._max_events - 1)
                pipe.expire(key, self._ttl)
            await pipe.execute()

    async def _write_per_user(self, client: RedisClient, groups: dict[str, list[Event]]) -> None:
        """One atomic script per user, pipelined without a transaction (a cluster refuses one
        that spans slots): one round trip per node, however many users the batch holds."""
        async with client.pipeline(transaction=False) as pipe:
            for user_id, group in groups.items():
                values = (_encode(e) for e in group)
                pipe.eval(_APPEND_SCRIPT, 1, self.key(user_id), self._max_events, self._ttl, *values)
            await pipe.execute()

    async def recent(self, user_id: str, limit: int) -> list[Event]:
        if limit <= 0:
            return []
        key = self.key(user_id)
        try:
            raw: list[bytes | str] = await self._redis.run(lambda client: _lrange(client, key, limit))
        except RedisUnavailable as exc:
            raise StoreUnavailable(f"session store read failed: {exc}") from exc
        events = []
        for value in raw:
            event = _decode(user_id, value)
            if event is not None:
                events.append(event)
        if len(events) < len(raw):
            log.warning("skipped %d malformed session-store values", len(raw) - len(events))
        return newest_first(events)

    async def ping(self) -> bool:
        return await self._redis.ping()

    async def close(self) -> None:
        await self._redis.close()


async def _lrange(client: RedisClient, key: str, limit: int) -> list[bytes | str]:
    values: list[bytes | str] = await client.lrange(key, 0, limit - 1)
    return values


# LPUSH (values oldest → newest), LTRIM and EXPIRE of one user's list, atomic as a script.
# ARGV: max events, TTL seconds, then the values.
_APPEND_SCRIPT = """
redis.call('LPUSH', KEYS[1], unpack(ARGV, 3))
redis.call('LTRIM', KEYS[1], 0, tonumber(ARGV[1]) - 1)
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
"""


def _encode(event: Event) -> bytes:
    fields: list[object] = [event.item_id, event.ts, event.action, event.scene, event.request_id]
    if event.query:  # most events carry none; values from before search have five elements
        fields.append(event.query)
    return orjson.dumps(fields)


def _decode(user_id: str, value: bytes | str) -> Event | None:
    try:
        fields = orjson.loads(value)
        if not isinstance(fields, list) or len(fields) not in (5, 6):
            return None
        item_id, ts, action, scene, request_id = fields[:5]
        query = str(fields[5]) if len(fields) == 6 else ""
        return Event(user_id, str(item_id), int(ts), str(action), str(scene), str(request_id), query)
    except (orjson.JSONDecodeError, TypeError, ValueError):
        return None


def store_from_settings(settings: Settings, metrics: Metrics | None = None) -> SessionStore:
    """Redis when ``settings.redis_url`` is set (its breaker state exported to ``metrics``),
    else the in-memory store (with a warning)."""
    if settings.redis_url is not None:
        return RedisSessionStore(
            bounded_redis_from_settings(settings, metrics, "session_store"),
            key_prefix=settings.store_key_prefix,
            max_events=settings.store_max_events,
            ttl_seconds=settings.store_ttl_seconds,
        )
    log.warning(
        "NSP_REDIS_URL is not set: using the in-memory session store; events are not persisted "
        "and not shared between replicas"
    )
    return InMemorySessionStore(settings.store_max_events, settings.store_ttl_seconds)
