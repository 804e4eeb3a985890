"""The Redis connection the session store and the nearline cache share: a client built from
the configured URL (standalone or cluster, AUTH and TLS by URL), whose every call has one
deadline and goes through a circuit breaker.

``BoundedRedis.run`` is the contract: a call either returns within ``timeout_s`` — connecting,
the one reconnect of a stale pooled connection and every command included — or raises
``RedisUnavailable``. While the breaker is open it raises at once, without touching the
network. The message never holds the URL's password.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ClusterDownError, RedisClusterException, RedisError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from service.breaker import CircuitBreaker, CircuitOpen
from service.metrics import BreakerClient, Metrics
from service.settings import Settings

log = logging.getLogger(__name__)

RedisClient = aioredis.Redis | RedisCluster
T = TypeVar("T")

# What says "Redis is not there" (opens the breaker); an error reply from a live server does not.
_OUTAGE = (
    RedisConnectionError, RedisTimeoutError, ClusterDownError, RedisClusterException, OSError, TimeoutError,
)  # fmt: skip
_ANY_FAILURE = (RedisError, RedisClusterException, OSError, TimeoutError)


class RedisUnavailable(Exception):
    """Redis could not be reached, timed out, refused the command, or the breaker is open."""


def redact_url(url: str) -> str:
    """The URL with any password replaced by ``***``, safe to log."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def redis_client(
    url: str, timeout_s: float, *, cluster: bool = False, tls_ca_file: Path | None = None
) -> RedisClient:
    """A pooled client whose connect and commands time out after ``timeout_s`` (socket level).

    A dropped connection is retried once at once (pooled connections go stale when Redis
    restarts), never a timeout. ``cluster``: ``url`` names one node of a Redis Cluster; the
    client discovers the others. ``tls_ca_file`` verifies a ``rediss://`` server's certificate.
    """
    options: dict[str, Any] = {
        "socket_timeout": timeout_s,
        "socket_connect_timeout": timeout_s,
        "retry": Retry(NoBackoff(), retries=1, supported_errors=(RedisConnectionError,)),
    }
    if tls_ca_file is not None:
        options["ssl_ca_certs"] = str(tls_ca_file)
    if cluster:
        return RedisCluster.from_url(url, **options)
    return aioredis.Redis.from_url(url, health_check_interval=30, **options)


class BoundedRedis:
    """One Redis client, a deadline per call, and an optional circuit breaker.

    Safe for concurrent use from one event loop (the breaker is not thread-safe).
    """

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float,
        cluster: bool = False,
        tls_ca_file: Path | None = None,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        self.client = redis_client(url, timeout_s, cluster=cluster, tls_ca_file=tls_ca_file)
        self.cluster = cluster
        self.url = redact_url(url)
        self._timeout_s = timeout_s
        self._breaker = breaker

    async def run(self, operation: Callable[[RedisClient], Awaitable[T]]) -> T:
        """``operation(client)`` within one deadline; raises ``RedisUnavailable`` on any failure.

        When the deadline cancels a write, Redis may still have applied it: the caller cannot
        tell, as with any timeout.
        """
        try:
            if self._breaker is None:
                return await self._bounded(operation)
            with self._breaker.call(_OUTAGE):
                return await self._bounded(operation)
        except CircuitOpen as exc:
            raise RedisUnavailable(f"{exc} (redis at {self.url})") from exc
        except TimeoutError as exc:
            raise RedisUnavailable(f"no answer within {self._timeout_s:g}s") from exc
        except _ANY_FAILURE as exc:
            raise RedisUnavailable(f"{type(exc).__name__}: {exc}") from exc

    async def _bounded(self, operation: Callable[[RedisClient], Awaitable[T]]) -> T:
        async with asyncio.timeout(self._timeout_s):
            return await operation(self.client)

    async def ping(self) -> bool:
        """True when Redis answers; never raises."""
        try:
            return bool(await self.run(_ping))
        except RedisUnavailable:
            return False

    async def close(self) -> None:
        await self.client.aclose()


async def _ping(client: RedisClient) -> bool:
    return bool(await client.ping())


def bounded_redis_from_settings(
    settings: Settings, metrics: Metrics | None, client: BreakerClient
) -> BoundedRedis:
    """The configured Redis (``settings.redis_url`` must be set), its breaker feeding ``metrics``."""
    assert settings.redis_url is not None
    breaker = None
    if settings.store_breaker_failures > 0:
        breaker = CircuitBreaker(
            settings.store_breaker_failures,
            settings.store_breaker_reset_s,
            on_state=None if metrics is None else metrics.store_breaker_open.labels(client=client).set,
            on_reject=None if metrics is None else metrics.store_breaker_rejected.labels(client=client).inc,
        )
    return BoundedRedis(
        settings.redis_url.get_secret_value(),
        timeout_s=settings.store_timeout_s,
        cluster=settings.redis_cluster,
        tls_ca_file=settings.redis_tls_ca_file,
        breaker=breaker,
    )
