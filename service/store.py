"""The session store: each user's recent events, grouped by request session (design §3.3).

``SessionStore`` is the protocol the service uses. ``RedisSessionStore`` is the real one (its
layout: ``service.session_records``); ``InMemorySessionStore`` has the same semantics, for unit
tests and as the embedded default when no Redis is configured. Per user the store keeps the
events of the user's latest request sessions, at most ``max_events`` of them (the oldest whole
sessions go first), and the set of items those events met; both expire ``ttl_seconds`` after
the user's last write. A recall reads only the newest sessions it needs and, when it excludes
seen items, the seen set: its cost does not grow with the rest of the history.

Every store failure surfaces as ``StoreUnavailable``; callers never see a driver exception.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from index.features import Event
from service.breaker import CircuitBreaker
from service.metrics import Metrics
from service.redis_client import (
    BoundedRedis,
    RedisClient,
    RedisUnavailable,
    bounded_redis_from_settings,
)
from service.session_records import (
    APPEND_SCRIPT,
    COUNT_KEY,
    LEGACY_KEY,
    MERGE_SCAN,
    SEEN_KEY,
    SESSIONS_KEY,
    decode_legacy,
    decode_records,
    script_args,
    session_groups,
)
from service.settings import Settings

log = logging.getLogger(__name__)


class StoreUnavailable(Exception):
    """The session store could not be reached, timed out, or refused the command."""


@dataclass(frozen=True, slots=True)
class History:
    """What a recall reads of one user."""

    events: list[Event]  # the events of the user's newest sessions, newest first
    seen: frozenset[str]  # the items of every stored event (empty when not asked for)


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

    async def history(
        self, user_id: str, sessions: int, *, seen: bool = True, seen_before: int | None = None
    ) -> History:
        """The events of the user's ``sessions`` most recently written sessions and, with
        ``seen``, every stored item (only those last met before ``seen_before``, a replay's
        time, when given); empty for an unknown user. One round trip."""
        ...

    async def recent(self, user_id: str, limit: int) -> list[Event]:
        """Up to ``limit`` of the user's events, newest first; [] for an unknown user. Reads
        everything stored: for debugging and tests, not for the request path."""
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


def seen_items(events: Sequence[Event], before: int | None) -> set[str]:
    return {e.item_id for e in events if before is None or e.ts < before}


@dataclass
class _UserLog:
    """One user in the in-memory store: what the Redis layout keeps, as Python objects."""

    records: list[tuple[str, list[Event]]]  # (request id, events in arrival order), newest first
    seen: dict[str, int]  # item → last time met
    count: int
    expires: float


class InMemorySessionStore:
    """Process-local store with the Redis layout's semantics (records merged among the newest
    ``MERGE_SCAN``, the cap by whole oldest sessions, TTL); not persisted.

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
        self._users: dict[str, _UserLog] = {}

    async def append(self, events: Sequence[Event]) -> int:
        expires = self._clock() + self._ttl
        for user_id, group in by_user(events).items():
            kept = self._live(user_id) or _UserLog([], {}, 0, expires)
            for request_id, session in session_groups(group).items():
                match = next((r for r in kept.records[:MERGE_SCAN] if r[0] == request_id), None)
                if match is None:
                    kept.records.insert(0, (request_id, list(session)))
                else:
                    match[1].extend(session)
                kept.count += len(session)
                for event in session:
                    kept.seen[event.item_id] = max(event.ts, kept.seen.get(event.item_id, event.ts))
            while kept.count > self._max_events:
                if len(kept.records) > 1:
                    kept.count -= len(kept.records.pop()[1])
                else:
                    del kept.records[0][1][: kept.count - self._max_events]
                    kept.count = self._max_events
            if len(kept.seen) > self._max_events:  # the least recently met go, as ZREMRANGEBYRANK
                ranked = sorted(kept.seen.items(), key=lambda kv: (kv[1], kv[0]))
                kept.seen = dict(ranked[-self._max_events :])
            kept.expires = expires
            self._users[user_id] = kept
        return len(events)

    async def history(
        self, user_id: str, sessions: int, *, seen: bool = True, seen_before: int | None = None
    ) -> History:
        kept = self._live(user_id)
        if kept is None or sessions <= 0:
            return History([], frozenset())
        events = newest_first([e for _, record in kept.records[:sessions] for e in record])
        items: frozenset[str] = frozenset()
        if seen:
            items = frozenset(i for i, ts in kept.seen.items() if seen_before is None or ts < seen_before)
        return History(events, items)

    async def recent(self, user_id: str, limit: int) -> list[Event]:
        kept = self._live(user_id)
        if kept is None or limit <= 0:
            return []
        return newest_first([e for _, record in kept.records for e in record])[:limit]

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        self._users.clear()

    def _live(self, user_id: str) -> _UserLog | None:
        entry = self._users.get(user_id)
        if entry is None:
            return None
        if entry.expires <= self._clock():
            del self._users[user_id]
            return None
        return entry


class RedisSessionStore:
    """Session records in Redis (``service.session_records``), hash-tagged by user.

    A batch is written atomically per user by one script (records, seen set, cap, TTL), so
    readers never see part of a user's events: the scripts of a whole batch in one MULTI/EXEC on
    a standalone Redis; on a cluster, where a transaction cannot span hash slots, pipelined
    without one. A read is one pipelined round trip: the newest records, the seen set when asked
    for, and the user's format-1 list (``LEGACY_KEY``), read and merged while it exists. Every
    call is bounded by ``timeout_s`` and goes through ``breaker`` (see ``service.redis_client``);
    failures raise ``StoreUnavailable``. Safe for concurrent use from one event loop.
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

    def key(self, user_id: str, name: str = SESSIONS_KEY) -> str:
        return user_key(self._prefix, user_id, name)

    async def append(self, events: Sequence[Event]) -> int:
        if not events:
            return 0
        groups = by_user(events)
        try:
            await self._redis.run(lambda client: self._write(client, groups))
        except RedisUnavailable as exc:
            raise StoreUnavailable(f"session store write failed: {exc}") from exc
        return len(events)

    async def _write(self, client: RedisClient, groups: dict[str, list[Event]]) -> None:
        """One script per user; on a standalone Redis all of them in one MULTI/EXEC (every key
        on one server), on a cluster pipelined without a transaction (one round trip per node)."""
        async with client.pipeline(transaction=not self._redis.cluster) as pipe:
            for user_id, group in groups.items():
                keys = [self.key(user_id, name) for name in (SESSIONS_KEY, SEEN_KEY, COUNT_KEY)]
                args = [self._max_events, self._ttl, *script_args(session_groups(group))]
                pipe.eval(APPEND_SCRIPT, len(keys), *keys, *args)
            await pipe.execute()

    async def history(
        self, user_id: str, sessions: int, *, seen: bool = True, seen_before: int | None = None
    ) -> History:
        if sessions <= 0:
            return History([], frozenset())
        records, legacy, members = await self._read(user_id, sessions, seen, seen_before)
        events = self._decode(user_id, records, legacy)
        items = frozenset(m.decode() if isinstance(m, bytes) else m for m in members)
        if legacy:  # not migrated yet: its items count as seen; its sessions compete for the window
            items |= seen_items(events, seen_before) if seen else set()
            events = _newest_sessions(events, sessions)
        return History(newest_first(events), items)

    async def recent(self, user_id: str, limit: int) -> list[Event]:
        if limit <= 0:
            return []
        records, legacy, _ = await self._read(user_id, -1, False, None)
        return newest_first(self._decode(user_id, records, legacy))[:limit]

    async def _read(
        self, user_id: str, sessions: int, seen: bool, seen_before: int | None
    ) -> tuple[list[bytes | str], list[bytes | str], list[bytes | str]]:
        """The newest ``sessions`` records (-1: all), the format-1 list and the seen ids."""
        max_events = self._max_events

        async def read(client: RedisClient) -> list[list[bytes | str]]:
            async with client.pipeline(transaction=False) as pipe:
                pipe.lrange(self.key(user_id), 0, sessions - 1 if sessions > 0 else -1)
                pipe.lrange(self.key(user_id, LEGACY_KEY), 0, max_events - 1)
                if seen and seen_before is None:
                    pipe.zrange(self.key(user_id, SEEN_KEY), 0, -1)
                elif seen:
                    pipe.zrangebyscore(self.key(user_id, SEEN_KEY), "-inf", f"({seen_before}")
                answers: list[list[bytes | str]] = await pipe.execute()
                return answers

        try:
            answers = await self._redis.run(read)
        except RedisUnavailable as exc:
            raise StoreUnavailable(f"session store read failed: {exc}") from exc
        return answers[0], answers[1], answers[2] if seen else []

    def _decode(self, user_id: str, records: list[bytes | str], legacy: list[bytes | str]) -> list[Event]:
        events = decode_records(user_id, records)
        parsed = len(events)
        for value in legacy:
            if (event := decode_legacy(user_id, value)) is not None:
                events.append(event)
        if len(events) - parsed < len(legacy):
            log.warning("skipped %d malformed session-store values", len(legacy) - (len(events) - parsed))
        return events

    async def ping(self) -> bool:
        return await self._redis.ping()

    async def close(self) -> None:
        await self._redis.close()


def _newest_sessions(events: list[Event], sessions: int) -> list[Event]:
    """The events of the ``sessions`` request ids met most recently."""
    latest: dict[str, int] = {}
    for event in events:
        latest[event.request_id] = max(event.ts, latest.get(event.request_id, event.ts))
    kept = set(sorted(latest, key=lambda r: -latest[r])[:sessions])
    return [e for e in events if e.request_id in kept]


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
