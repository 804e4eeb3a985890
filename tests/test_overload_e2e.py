"""Overload and shutdown against the real server (`nsprecall serve`, uvicorn, real Redis, a
published bundle): recalls beyond NSP_MAX_IN_FLIGHT are refused at once with 503 + Retry-After
while probes keep answering; SIGTERM drains the requests in flight, refuses new connections
and exits; a request still running when NSP_SHUTDOWN_GRACE_S ends is answered 503.

Requests are held in flight by sending their headers and only part of their body (tests/raw_http):
the server has started them and waits for the rest, for as long as the test likes."""

from __future__ import annotations

import asyncio
import shutil
import signal
import socket
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cli_helpers import metric, served_process, wait_until
from raw_http import port_of, read_answer, start_json_post

MAX_IN_FLIGHT = 3
RECALL = '{route="/v1/recall"}'  # the labels of the in-flight and shed samples


@pytest.fixture(scope="module")
def root(bundle_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("overload_bundles")
    shutil.copytree(bundle_root / "1", root / "1")
    return root


@pytest.fixture(scope="module")
def server(root: Path, redis_url: str) -> Iterator[httpx.Client]:
    # A short grace time: a failing test that leaves requests open does not hold up the teardown.
    env = {"NSP_MAX_IN_FLIGHT": str(MAX_IN_FLIGHT), "NSP_CPU_WORKERS": "1", "NSP_SHUTDOWN_GRACE_S": "2"}
    with served_process(root, redis_url, env=env, log_path=root / "server.log") as (client, _):
        yield client


def hold(client: httpx.Client, n: int) -> list[tuple[socket.socket, bytes]]:
    """``n`` recalls in flight on the server (their bodies not sent yet), once it has started them."""
    port = port_of(str(client.base_url))
    held = [start_json_post(port, "/v1/recall", {"user_id": f"held-{i}", "k": 5}) for i in range(n)]
    wait_until(lambda: metric(client, "nsp_requests_in_flight", RECALL) == n, 10, f"{n} recalls in flight")
    return held


def finish(held: list[tuple[socket.socket, bytes]]) -> None:
    """Sends the rest of each held request; each must be answered in full."""
    for sock, rest in held:
        with sock:
            sock.sendall(rest)
            answer = read_answer(sock)
            assert answer.status == 200 and len(answer.json()["items"]) == 5


def test_recalls_beyond_the_limit_are_503_at_once_and_probes_still_answer(server: httpx.Client) -> None:
    before = metric(server, "nsp_requests_shed_total", RECALL)
    held = hold(server, MAX_IN_FLIGHT)
    timings = []
    for _ in range(50):
        start = time.perf_counter()
        refused = server.post("/v1/recall", json={"user_id": "u", "k": 5})
        timings.append(time.perf_counter() - start)
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "1"
        assert refused.json()["error"] == "overloaded"
    for probe in ("/livez", "/readyz", "/metrics", "/v1/bundle"):
        assert server.get(probe).status_code == 200, probe
    assert metric(server, "nsp_requests_shed_total", RECALL) - before == 50

    finish(held)
    assert server.post("/v1/recall", json={"user_id": "u", "k": 5}).status_code == 200
    assert metric(server, "nsp_requests_in_flight", RECALL) == 0
    timings.sort()
    print(
        f"503 overloaded while saturated: p50 {statistics.median(timings) * 1000:.2f} ms,"
        f" max {timings[-1] * 1000:.2f} ms over {len(timings)} requests"
    )


def test_a_burst_far_over_the_limit_gets_200s_and_503s_only(server: httpx.Client) -> None:
    before = metric(server, "nsp_requests_shed_total", RECALL)

    async def burst() -> list[tuple[int, str | None, float]]:
        limits = httpx.Limits(max_connections=64)
        async with httpx.AsyncClient(base_url=server.base_url, limits=limits, timeout=30) as client:

            async def one(n: int) -> tuple[int, str | None, float]:
                start = time.perf_counter()
                response = await client.post("/v1/recall", json={"user_id": f"burst-{n}", "k": 1000})
                return response.status_code, response.headers.get("retry-after"), time.perf_counter() - start

            return await asyncio.gather(*(one(n) for n in range(200)))

    results = asyncio.run(burst())
    statuses = [status for status, _, _ in results]
    assert set(statuses) <= {200, 503}, statuses
    assert all(retry == "1" for status, retry, _ in results if status == 503)
    assert statuses.count(200) > 0 and statuses.count(503) > 0
    assert metric(server, "nsp_requests_shed_total", RECALL) - before == statuses.count(503)
    ok = sorted(t for status, _, t in results if status == 200)
    shed = sorted(t for status, _, t in results if status == 503)
    print(
        f"burst of 200 at max_in_flight={MAX_IN_FLIGHT}: {len(ok)} x 200"
        f" (p50 {statistics.median(ok) * 1000:.1f} ms), {len(shed)} x 503"
        f" (p50 {statistics.median(shed) * 1000:.1f} ms)"
    )


def test_sigterm_drains_requests_in_flight_and_refuses_new_connections(root: Path, redis_url: str) -> None:
    env = {"NSP_MAX_IN_FLIGHT": str(MAX_IN_FLIGHT), "NSP_SHUTDOWN_GRACE_S": "15"}
    log = root / "drain.log"
    with served_process(root, redis_url, env=env, log_path=log) as (client, process):
        port = port_of(str(client.base_url))
        held = hold(client, MAX_IN_FLIGHT)
        process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()

        def refused() -> bool:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
            except ConnectionRefusedError:
                return True
            return False

        wait_until(refused, 5, "new connections to be refused", poll_s=0.05)
        time.sleep(0.5)
        assert process.poll() is None  # still draining
        finish(held)
        returncode = process.wait(timeout=15)
        exited_after = time.monotonic() - signalled
    assert returncode in (0, -signal.SIGTERM), log.read_text()[-2000:]
    print(f"drained {MAX_IN_FLIGHT} requests in flight; exited {exited_after:.2f} s after SIGTERM")


def test_a_request_still_in_flight_when_the_grace_time_ends_is_answered_503(
    root: Path, redis_url: str
) -> None:
    env = {"NSP_SHUTDOWN_GRACE_S": "1"}
    with served_process(root, redis_url, env=env, log_path=root / "grace.log") as (client, process):
        [(sock, _)] = hold(client, 1)
        with sock:
            process.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            answer = read_answer(sock)  # the rest of the body is never sent: only the grace time ends it
            answered_after = time.monotonic() - signalled
        returncode = process.wait(timeout=10)
    assert answer.status == 503 and answer.json()["error"] == "shutting_down"
    assert answer.headers["retry-after"] == "1"
    assert returncode in (0, -signal.SIGTERM)
    assert 1 <= answered_after < 5
    print(f"a request stuck in flight was answered 503 {answered_after:.2f} s after SIGTERM (grace 1 s)")
