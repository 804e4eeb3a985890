"""The nearline top-K cache: per user, one list computed in the background, tagged with its bundle.

``TopKCache`` is the protocol: opaque values per user with a TTL. ``RedisTopKCache`` keeps each
at ``{prefix}:{{user_id}}:topk``, beside the user's events key and under the same hash tag (one
Redis Cluster slot per user); ``InMemoryTopKCache`` is the process-local one that goes with the
in-memory session store. ``TopK`` is the value: ``encode`` writes compact JSON, ``decode`` reads
it back and refuses anything else.

Every backend failure surfaces as ``CacheUnavailable``. The cache is an optimisation: callers
treat a failure as a miss and compute instead.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Protocol

import orjson

from service.breaker import CircuitBreaker
from service.metrics import Metrics
from service.redis_client import BoundedRedis, RedisClient, RedisUnavailable, bounded_redis_from_settings
from service.settings import Settings
from service.store import user_key

log = logging.getLogger(__name__)


class CacheUnavailable(Exception):
    """The cache could not be reached, timed out, or refused the command."""


class UnreadableEntry(ValueError):
    """A cached value is not a ``TopK`` this code wrote."""


@dataclass(frozen=True)
class TopK:
    """One user's cached recall: best first, seen items already excluded."""

    bundle_version: int
    scene: str
    computed_at: float  # Unix seconds; the query context (hour, weekday) was built for this time
    k: int  # the length asked for; the lists are shorter only when the catalog ran out
    item_ids: tuple[str, ...]
    scores: tuple[float, ...]
    # Per item, the channels that proposed it: name → (rank, the channel's score); () = unknown.
    channels: tuple[dict[str, tuple[int, float]], ...] = ()


def encode(entry: TopK) -> bytes:
    return orjson.dumps(
        {
            "bundle_version": entry.bundle_version,
            "scene": entry.scene,
            "computed_at": entry.computed_at,
            "k": entry.k,
            "item_ids": entry.item_ids,
            "scores": entry.scores,
            "channels": entry.channels,
        }
    )


def decode(value: bytes) -> TopK:
    """The entry in ``value``; raises ``UnreadableEntry`` for anything ``encode`` did not write."""
    try:
        raw = orjson.loads(value)
        entry = TopK(
            bundle_version=raw["bundle_version"],
            scene=raw["scene"],
            computed_at=float(raw["computed_at"]),
            k=raw["k"],
            item_ids=tuple(raw["item_ids"]),
            scores=tuple(float(s) for s in raw["scores"]),
            channels=tuple(
                {str(name): (int(hit[0]), float(hit[1])) for name, hit in hits.items()}
                for hits in raw.get("channels", ())
            ),
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        raise UnreadableEntry(f"unreadable top-K entry: {type(exc).__name__}: {exc}") from exc
    if not (
        isinstance(entry.bundle_version, int)
        and isinstance(entry.scene, str)
        and isinstance(entry.k, int)
        and len(entry.item_ids) == len(entry.scores)
        and len(entry.channels) in (0, len(entry.item_ids))
        and all(isinstance(item, str) for item in entry.item_ids)
    ):
        raise UnreadableEntry("unreadable top-K entry: wrong field types or lengths")
    return entry


class TopKCache(Protocol):
    """One value per user that expires ``ttl_s`` after it was put. Used from one event loop."""

    async def get(self, user_id: str) -> bytes | None:
        """The user's value, None when there is none (or it expired)."""
        ...

    async def put(self, user_id: str, value: bytes, ttl_s: float) -> None: ...

    async def delete(self, user_ids: Collection[str]) -> None:
        """Remove these users' values (absent ones are fine)."""
        ...

    async def close(self) -> None: ...


class InMemoryTopKCache:
    """Process-local values with a TTL; not shared between replicas. Never raises."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._values: dict[str, tuple[bytes, float]] = {}  # user → (value, expires at)

    async def get(self, user_id: str) -> bytes | None:
        entry = self._values.get(user_id)
        if entry is None:
            return None
        if entry[1] <= self._clock():
            del self._values[user_id]
            return None
        return entry[0]

    async def put(self, user_id: str, value: bytes, ttl_s: float) -> None:
        self._values[user_id] = (value, self._clock() + ttl_s)

    async def delete(self, user_ids: Collection[str]) -> None:
        for user_id in user_ids:
            self._values.pop(user_id, None)

    async def close(self) -> None:
        self._values.clear()


class RedisTopKCache:
    """Values at ``{prefix}:{{user_id}}:topk`` with a TTL (``SET … EX``, whole seconds, rounded up).

    Bounded and broken like the session store (``service.redis_client``: one deadline per call,
    its own circuit breaker). Failures raise ``CacheUnavailable``. Safe for concurrent use from
    one event loop.
    """

    def __init__(
        self,
        redis: str | BoundedRedis,
        *,
        key_prefix: str = "nsp",
        timeout_s: float = 0.2,
        cluster: bool = False,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        """``redis``: a URL, connected with the options after ``key_prefix``, or a configured
        connection (``topk_cache_from_settings``), used as it is."""
        if isinstance(redis, str):
            redis = BoundedRedis(redis, timeout_s=timeout_s, cluster=cluster, breaker=breaker)
        self._prefix = key_prefix
        self._redis = redis
        log.info("nearline top-K cache: %s at %s", "redis cluster" if redis.cluster else "redis", redis.url)

    def key(self, user_id: str) -> str:
        return user_key(self._prefix, user_id, "topk")

    async def get(self, user_id: str) -> bytes | None:
        key = self.key(user_id)
        try:
            value: bytes | str | None = await self._redis.run(lambda client: client.get(key))
        except RedisUnavailable as exc:
            raise CacheUnavailable(f"top-K cache read failed: {exc}") from exc
        return value.encode() if isinstance(value, str) else value

    async def put(self, user_id: str, value: bytes, ttl_s: float) -> None:
        key = self.key(user_id)
        try:
            await self._redis.run(lambda client: client.set(key, value, ex=max(1, math.ceil(ttl_s))))
        except RedisUnavailable as exc:
            raise CacheUnavailable(f"top-K cache write failed: {exc}") from exc

    async def delete(self, user_ids: Collection[str]) -> None:
        if not user_ids:
            return
        keys = [self.key(user_id) for user_id in user_ids]
        try:
            await self._redis.run(lambda client: _delete_each(client, keys))
        except RedisUnavailable as exc:
            raise CacheUnavailable(f"top-K cache delete failed: {exc}") from exc

    async def close(self) -> None:
        await self._redis.close()


async def _delete_each(client: RedisClient, keys: list[str]) -> None:
    # One DEL per key, pipelined without a transaction: one round trip (per node on a cluster),
    # and no command spans two users' slots.
    async with client.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.delete(key)
        await pipe.execute()


def topk_cache_from_settings(settings: Settings, metrics: Metrics | None = None) -> TopKCache:
    """Redis (the session store's, with a breaker of its own exported to ``metrics``) when
    ``settings.redis_url`` is set, else in memory."""
    if settings.redis_url is not None:
        redis = bounded_redis_from_settings(settings, metrics, "topk_cache")
        return RedisTopKCache(redis, key_prefix=settings.store_key_prefix)
    return InMemoryTopKCache()
