"""``nsprecall store-migrate``: rewrite format-1 session-store lists as session records.

Until a user's format-1 list (one JSON document per event, ``service.session_records``) is
migrated, every read of that user fetches and decodes it beside the records, as before this
layout; the service answers correctly either way, only slower for such users. The migration
scans for ``{prefix}:{user}:events`` keys and, per user, turns the list into records placed
behind any record written since and deletes it, in one atomic script (``MIGRATE_SCRIPT``), so it
can run while the service serves and writes. Running it again finds nothing to do.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

from index.features import group_sessions
from service.redis_client import BoundedRedis, RedisClient, RedisUnavailable
from service.session_records import (
    COUNT_KEY,
    LEGACY_KEY,
    MIGRATE_SCRIPT,
    SEEN_KEY,
    SESSIONS_KEY,
    decode_legacy,
    script_args,
    session_groups,
)
from service.store import StoreUnavailable, user_key

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Migrated:
    users: int
    events: int
    skipped_values: int  # format-1 values that did not parse (dropped, as reads skip them)


async def migrate(redis: BoundedRedis, prefix: str, max_events: int, ttl_seconds: int) -> Migrated:
    """Migrate every format-1 list under ``prefix``; raises ``StoreUnavailable`` when Redis
    fails (users migrated so far stay migrated; run it again to finish)."""
    pattern = user_key(prefix, "*", LEGACY_KEY)  # braces are literal in a Redis glob
    users = events = skipped = 0
    try:
        keys: list[bytes | str] = await redis.run(lambda client: _scan(client, pattern))
        for key in keys:
            name = key.decode() if isinstance(key, bytes) else key
            user_id = name[len(prefix) + 2 : -(len(LEGACY_KEY) + 2)]  # between "{prefix}:{" and "}:events"
            values = await redis.run(functools.partial(_values, key=name))
            parsed = [e for v in values if (e := decode_legacy(user_id, v)) is not None]
            skipped += len(values) - len(parsed)
            ordered = sorted(parsed, key=lambda e: e.ts)
            order = [s.request_id for s in reversed(group_sessions(ordered))]  # newest session first
            groups = session_groups(ordered)
            args = [max_events, ttl_seconds, *script_args({r: groups[r] for r in order})]
            keys_of_user = [
                user_key(prefix, user_id, n) for n in (SESSIONS_KEY, SEEN_KEY, COUNT_KEY, LEGACY_KEY)
            ]
            await redis.run(functools.partial(_rewrite, keys=keys_of_user, args=args))
            users += 1
            events += len(parsed)
            if users % 10_000 == 0:
                log.info("migrated %d users (%d events)", users, events)
    except RedisUnavailable as exc:
        raise StoreUnavailable(f"migration stopped after {users} users: {exc}") from exc
    return Migrated(users, events, skipped)


async def _values(client: RedisClient, key: str) -> list[bytes | str]:
    values: list[bytes | str] = await client.lrange(key, 0, -1)
    return values


async def _rewrite(client: RedisClient, keys: list[str], args: list[bytes | int]) -> None:
    await client.eval(MIGRATE_SCRIPT, len(keys), *keys, *args)


async def _scan(client: RedisClient, pattern: str) -> list[bytes | str]:
    return [key async for key in client.scan_iter(match=pattern, count=1000)]
