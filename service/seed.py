"""Seeding the session store from an event-log CSV at start-up (demos, load tests).

The file has the header ``user_id,item_id,ts,action,scene,request_id`` (design §3.5), optionally
with a ``query`` column (the search text of the event's request, normalised as the API does; an
empty cell or no column: no query), and may be gzipped (``.gz``). It is streamed: rows are read in
a worker thread one batch at a time and appended through the same ``SessionStore`` the API writes
to.
"""

from __future__ import annotations

import asyncio
import csv
import gzip
import io
import logging
from collections.abc import Iterator
from pathlib import Path

from index.features import ACTIONS, Event
from index.text import MAX_QUERY_CHARS, normalize_text
from service.store import SessionStore

log = logging.getLogger(__name__)

COLUMNS = ("user_id", "item_id", "ts", "action", "scene", "request_id")
QUERY_COLUMN = "query"  # optional
BATCH_SIZE = 1000


class SeedError(Exception):
    """The seed file is missing or has the wrong header."""


def read_events(path: Path, max_users: int | None = None) -> Iterator[Event]:
    """Events of the file in file order; only the first ``max_users`` distinct users if given.

    Rows with a bad ``ts``, an unknown ``action`` or a query longer than the API accepts
    (``MAX_QUERY_CHARS`` after normalisation) are skipped with one warning at the end.
    Blocking file I/O: iterate it off the event loop.
    """
    users: set[str] = set()
    skipped = 0
    with _open_text(path) as f:
        reader = csv.DictReader(f)
        missing = set(COLUMNS) - set(reader.fieldnames or ())
        if missing:
            raise SeedError(f"{path}: header lacks {', '.join(sorted(missing))}")
        for row in reader:
            user = row["user_id"]
            if user not in users:
                if max_users is not None and len(users) >= max_users:
                    continue
                users.add(user)
            try:
                ts = int(row["ts"])
            except ValueError:
                skipped += 1
                continue
            query = normalize_text(row.get(QUERY_COLUMN) or "")
            if row["action"] not in ACTIONS or ts <= 0 or len(query) > MAX_QUERY_CHARS:
                skipped += 1
                continue
            yield Event(user, row["item_id"], ts, row["action"], row["scene"], row["request_id"], query)
    if skipped:
        log.warning("%s: skipped %d rows with a bad ts, action or query", path, skipped)


async def seed_store(store: SessionStore, path: Path, max_users: int | None = None) -> tuple[int, int]:
    """Append the file's events to ``store`` in batches; returns (users, events) loaded.

    Raises ``SeedError`` for a bad file and ``StoreUnavailable`` if the store fails.
    """
    if not path.is_file():
        raise SeedError(f"{path}: no such file")
    events = read_events(path, max_users)
    users: set[str] = set()
    total = 0
    while batch := await asyncio.to_thread(_next_batch, events):
        total += await store.append(batch)
        users.update(e.user_id for e in batch)
    log.info("seeded the session store from %s: %d users, %d events", path, len(users), total)
    return len(users), total


def _next_batch(events: Iterator[Event]) -> list[Event]:
    return [event for _, event in zip(range(BATCH_SIZE), events, strict=False)]


def _open_text(path: Path) -> io.TextIOWrapper:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return path.open(encoding="utf-8", newline="")
