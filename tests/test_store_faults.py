"""Session-store faults for real: `nsprecall serve` on a Redis the test owns, under concurrent
recall and event load, while that Redis is killed (SIGKILL, restarted on the same port) and
then hung (SIGSTOP/SIGCONT).

What a user relies on, checked on every response: recall answers 200 throughout (the
popularity fallback with ``degraded=true`` while the store is gone) and comes back to the model
by itself within seconds; events get 202 only when stored — otherwise a 503
``session_store_unavailable`` with ``Retry-After`` — and every 202'd event is in Redis at the
end (Redis runs with ``appendfsync always``, so what it acknowledged survives the kill). Run
with and without the circuit breaker; with it, recalls against a hung Redis fail fast instead
of each waiting out the store timeout. ``pytest -s`` prints the numbers.
"""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import redis
from cli_helpers import serve_process, wait_until
from fakes import make_vocab, write_real_bundle
from redis_servers import RedisServer, running

from service.session_records import decode_records
from service.store import RedisSessionStore, StoreUnavailable

PASSWORD = "fault-test-Pa55word"
PREFIX = "faults"
TIMEOUT_S = 0.2
RESET_S = 0.5
N_ITEMS = 40
K = 5
DOWN_S = 3.0
HUNG_S = 2.0


@dataclass(frozen=True)
class Recall:
    start: float
    end: float
    status: int
    source: str | None
    degraded: bool | None
    items: tuple[str, ...]


@dataclass(frozen=True)
class Ingest:
    start: float
    end: float
    status: int
    events: tuple[tuple[str, str], ...]  # (user, item)
    error: str | None
    retry_after: str | None


@dataclass
class Load:
    """Client threads against the service: recalls for one user with history, event batches
    (two users each, items never sent before) from the others."""

    base_url: str
    user: str
    recall_threads: int = 2
    ingest_threads: int = 2
    recalls: list[Recall] = field(default_factory=list)
    ingests: list[Ingest] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        targets = [self._recall] * self.recall_threads + [self._ingest] * self.ingest_threads
        self._threads = [threading.Thread(target=t, args=(i,), daemon=True) for i, t in enumerate(targets)]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)

    def _recall(self, _: int) -> None:
        with httpx.Client(base_url=self.base_url, timeout=5) as client:
            while not self._stop.is_set():
                start = time.monotonic()
                response = client.post("/v1/recall", json={"user_id": self.user, "k": K})
                body = response.json() if response.status_code == 200 else {}
                items = tuple(item["item_id"] for item in body.get("items", []))
                self.recalls.append(
                    Recall(
                        start,
                        time.monotonic(),
                        response.status_code,
                        body.get("source"),
                        body.get("degraded"),
                        items,
                    )
                )

    def _ingest(self, thread: int) -> None:
        with httpx.Client(base_url=self.base_url, timeout=5) as client:
            n = 0
            while not self._stop.is_set():
                n += 1
                pairs = tuple(
                    (f"w{thread}-{n}-{side}", f"ev-{thread}-{n}-{i}") for side in "ab" for i in range(3)
                )
                events = [
                    {"user_id": u, "item_id": i, "action": "click", "scene": "feed", "ts": 1_767_225_600 + n,
                     "request_id": f"r{thread}-{n}"}
                    for u, i in pairs
                ]  # fmt: skip
                start = time.monotonic()
                response = client.post("/v1/events", json={"events": events})
                error = response.json().get("error") if response.status_code >= 400 else None
                retry_after = response.headers.get("retry-after")
                self.ingests.append(
                    Ingest(start, time.monotonic(), response.status_code, pairs, error, retry_after)
                )
                time.sleep(0.01)


def latencies_ms(recalls: list[Recall]) -> tuple[float, float]:
    """(p50, p99) in milliseconds."""
    values = sorted((r.end - r.start) * 1000 for r in recalls)
    return statistics.median(values), values[min(len(values) - 1, int(0.99 * len(values)))]


@pytest.mark.parametrize("variant", ["breaker", "no-breaker", "breaker+nearline"])
def test_store_outage_degrades_recall_and_refuses_events_without_losing_any(
    variant: str, tmp_path: Path
) -> None:
    breaker = "no-breaker" not in variant
    nearline = "nearline" in variant  # the top-K cache in the same Redis: hits, then misses
    server = RedisServer(
        tmp_path / "redis", ["--requirepass", PASSWORD, "--appendonly", "yes", "--appendfsync", "always"]
    )
    url = f"redis://:{PASSWORD}@127.0.0.1:{server.port}/0"
    bundles = tmp_path / "bundles"
    write_real_bundle(bundles, 1, n_items=N_ITEMS)
    env = {
        "NSP_STORE_KEY_PREFIX": PREFIX,
        "NSP_STORE_TIMEOUT_S": str(TIMEOUT_S),
        "NSP_STORE_BREAKER_FAILURES": "3" if breaker else "0",
        "NSP_NEARLINE_ENABLED": str(nearline).lower(),
        "NSP_STORE_BREAKER_RESET_S": str(RESET_S),
        "NSP_CPU_WORKERS": "2",
    }
    log_path = tmp_path / "service.log"
    with running(server, ping_url=url), serve_process(bundles, url, env=env, log_path=log_path) as client:
        history = [
            {"user_id": "loyal", "item_id": item, "action": "click", "scene": "feed", "ts": 1_767_225_600 + i,
             "request_id": f"h{i // 2}"}
            for i, item in enumerate(map(str, make_vocab(N_ITEMS).item_ids[:6]))
        ]  # fmt: skip
        assert client.post("/v1/events", json={"events": history}).status_code == 202
        fresh = {"model", "cache"} if nearline else {"model"}  # what a healthy store answers
        assert client.post("/v1/recall", json={"user_id": "loyal", "k": K}).json()["source"] == "model"
        popular = client.post("/v1/recall", json={"user_id": "nobody", "k": K}).json()
        assert popular["source"] == "fallback" and not popular["degraded"]
        fallback = tuple(item["item_id"] for item in popular["items"])

        load = Load(str(client.base_url), "loyal")
        load.start()
        try:
            time.sleep(1.0)
            killed = time.monotonic()
            server.kill()
            time.sleep(DOWN_S)
            restarting = time.monotonic()
            server.start(ping_url=url)  # same port; replays its append-only file
            restarted = time.monotonic()
            wait_until(
                lambda: any(r.start > restarted and r.source in fresh for r in load.recalls),
                10,
                "recall to recover",
            )
            recovered = min(r.end for r in load.recalls if r.start > restarted and r.source in fresh)
            time.sleep(0.5)
            hung = time.monotonic()
            server.pause()
            time.sleep(HUNG_S)
            server.resume()
            resumed = time.monotonic()
            wait_until(
                lambda: any(r.start > resumed and r.source in fresh for r in load.recalls),
                10,
                "recall after the hang",
            )
            time.sleep(0.5)
        finally:
            load.stop()
            server.resume()
        metrics = client.get("/metrics").text

        # Every event that got a 202 is in Redis (the service is still up: its keys are there).
        store = redis.Redis.from_url(url)
        try:
            accepted = [pair for ingest in load.ingests if ingest.status == 202 for pair in ingest.events]
            users = sorted({user for user, _ in accepted})
            with store.pipeline(transaction=False) as pipe:
                for user in users:
                    pipe.lrange(f"{PREFIX}:{{{user}}}:sessions", 0, -1)
                stored_lists = pipe.execute()
        finally:
            store.close()
        stored = {
            (user, event.item_id)
            for user, records in zip(users, stored_lists, strict=True)
            for event in decode_records(user, records)
        }
        lost = [pair for pair in accepted if pair not in stored]

    recalls, ingests = load.recalls, load.ingests
    down = [r for r in recalls if killed + 0.05 < r.start and r.end < restarting]
    during_hang = [r for r in recalls if hung + 0.05 < r.start and r.end < resumed]
    refused = [i for i in ingests if i.status == 503]
    statuses = {s: sum(1 for r in recalls if r.status == s) for s in {r.status for r in recalls}}
    event_statuses = {s: sum(1 for i in ingests if i.status == s) for s in {i.status for i in ingests}}
    down_p50, down_p99 = latencies_ms(down)
    hung_p50, hung_p99 = latencies_ms(during_hang)
    print(
        f"\n[{variant}] recalls {statuses}, events {event_statuses}, accepted events {len(accepted)},"
        f" lost {len(lost)}; killed {DOWN_S:g}s: {len(down)} recalls"
        f" p50 {down_p50:.1f} ms p99 {down_p99:.1f} ms;"
        f" hung {HUNG_S:g}s: {len(during_hang)} recalls p50 {hung_p50:.1f} ms p99 {hung_p99:.1f} ms;"
        f" recovered {recovered - restarted:.2f}s after the restart"
    )

    assert set(statuses) == {200}, f"recall answered {statuses}"
    assert set(event_statuses) <= {202, 503}, f"events answered {event_statuses}"
    assert not lost, f"{len(lost)} events got a 202 but are not in Redis: {lost[:5]}"
    # Before the kill: the model. While down: the popularity fallback, marked degraded.
    assert all(r.source in fresh and r.degraded is False for r in recalls if r.end < killed)
    if nearline:
        assert any(r.source == "cache" for r in recalls if r.end < killed)
    assert len(down) >= 10 and len(during_hang) >= 5
    for r in [*down, *during_hang]:
        assert (r.source, r.degraded, r.items) == ("fallback", True, fallback)
    assert all(r.degraded is (r.source == "fallback") for r in recalls)  # never a silent fallback
    # Events: a clear 503 while the store could not acknowledge, 202 again after.
    assert any(killed < i.start and i.end < restarting for i in refused)
    assert all(i.error == "session_store_unavailable" and i.retry_after is not None for i in refused)
    assert any(i.start > resumed and i.status == 202 for i in ingests)
    # Recovered by itself: the model again within seconds of the restart, and at the end.
    assert recovered - restarted < 5
    assert all(r.source in fresh for r in recalls if r.start > resumed + 1.0)
    assert PASSWORD not in log_path.read_text()
    if breaker:
        # Fail fast: a hung store costs a few probes one timeout each, not every recall.
        assert hung_p50 < TIMEOUT_S * 1000 / 4
        assert 'nsp_store_breaker_rejected_total{client="session_store"} 0.0' not in metrics
        assert 'nsp_store_breaker_open{client="session_store"} 0.0' in metrics
        if nearline:
            assert 'nsp_store_breaker_rejected_total{client="topk_cache"} 0.0' not in metrics
    else:
        # Without it every recall waits out the store timeout: what the breaker saves.
        assert hung_p50 >= TIMEOUT_S * 1000 * 0.8
        assert 'nsp_store_breaker_rejected_total{client="session_store"} 0.0' in metrics


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def slow_redis() -> AsyncIterator[int]:
    """A port speaking just enough RESP, answering each command after ``SLOW_S``: each read
    is within the socket timeout, the connection handshake and the command together are not."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                # Commands are arrays of bulk strings; none of these arguments holds "*".
                for command in data.split(b"*")[1:]:
                    await asyncio.sleep(SLOW_S)
                    writer.write(b"*0\r\n" if b"LRANGE" in command.upper() else b"+OK\r\n")
                    await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]


SLOW_S = 0.25


@pytest.mark.anyio
async def test_one_deadline_bounds_a_whole_store_call(slow_redis: int) -> None:
    timeout_s = 0.3  # above SLOW_S: no single socket read times out
    store = RedisSessionStore(f"redis://127.0.0.1:{slow_redis}/0", timeout_s=timeout_s)
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="no answer within"):
            await store.recent("alice", 10)
        # Connect, the client's set-up commands and LRANGE would take >= 3 x SLOW_S.
        assert time.monotonic() - started < 2 * timeout_s
    finally:
        await store.close()
