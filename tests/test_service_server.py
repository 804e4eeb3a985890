"""The service as a process: ``python -m service`` and ``serve(..., seed_events=...)``."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import redis
from fakes import write_real_bundle

pytest.importorskip("onnx")

STARTUP_TIMEOUT_S = 30.0
SERVE = "from pathlib import Path; from service.server import serve; from service.settings import Settings;"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def ready(base: str) -> bool:
    try:
        return httpx.get(f"{base}/readyz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


@contextmanager
def running(args: list[str], env: Mapping[str, str]) -> Iterator[tuple[subprocess.Popen[str], str]]:
    base = f"http://127.0.0.1:{env['NSP_PORT']}"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("NSP_") and k != "REDIS_URL"}
    process = subprocess.Popen(
        [sys.executable, *args],
        env={**clean, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not ready(base):
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"service never became ready:\n{process.communicate()[0]}")
            time.sleep(0.1)
        yield process, base
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def test_python_m_service_serves_the_newest_bundle_and_stops_cleanly(tmp_path: Path) -> None:
    write_real_bundle(tmp_path, 1)
    write_real_bundle(tmp_path, 2, seed=1)
    env = {"NSP_BUNDLE_ROOT": str(tmp_path), "NSP_PORT": str(free_port())}
    with running(["-m", "service"], env) as (process, base):
        bundle = httpx.get(f"{base}/v1/bundle").json()
        recall = httpx.post(f"{base}/v1/recall", json={"user_id": "u", "k": 5}).json()
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=10)
    assert bundle["version"] == 2
    assert recall["bundle_version"] == 2 and len(recall["items"]) == 5
    # uvicorn shuts down gracefully, then re-raises the signal so the exit status reports it.
    assert process.returncode in (0, -signal.SIGTERM), output
    assert "Application shutdown complete" in output
    assert "not persisted" in output
    assert "serving bundle 2" in output


def test_serve_seeds_the_store_from_an_event_log(tmp_path: Path) -> None:
    write_real_bundle(tmp_path / "bundles", 1)
    log = tmp_path / "events.csv"
    log.write_text(
        "user_id,item_id,ts,action,scene,request_id\n"
        "u1,item-0001,100,click,feed,r1\n"
        "u2,item-0002,100,click,feed,r2\n"
    )
    code = f"{SERVE} serve(Settings(), seed_events=Path({str(log)!r}), seed_users=1)"
    env = {"NSP_BUNDLE_ROOT": str(tmp_path / "bundles"), "NSP_PORT": str(free_port())}
    with running(["-c", code], env) as (process, base):
        seeded = httpx.get(f"{base}/v1/users/u1/sessions").json()["sessions"]
        skipped = httpx.get(f"{base}/v1/users/u2/sessions").json()["sessions"]
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=10)
    assert [s["request_id"] for s in seeded] == ["r1"]
    assert skipped == []
    assert "1 users, 1 events" in output


def test_start_up_failure_exits_non_zero(tmp_path: Path) -> None:
    code = f"{SERVE} serve(Settings(), seed_events=Path({str(tmp_path / 'missing.csv')!r}))"
    env = {"NSP_BUNDLE_ROOT": str(tmp_path), "NSP_PORT": str(free_port())}
    clean = {k: v for k, v in os.environ.items() if not k.startswith("NSP_") and k != "REDIS_URL"}
    result = subprocess.run(
        [sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 3
    assert "missing.csv: no such file" in result.stdout + result.stderr


def gauge_by_process(metrics_text: str, name: str) -> dict[str, float]:
    """``{pid: value}`` of a per-process gauge in a multiprocess exposition."""
    values = {}
    for line in metrics_text.splitlines():
        if line.startswith(name + "{"):
            labels, value = line[len(name) + 1 :].split("} ")
            pid = dict(part.split("=") for part in labels.split(","))["pid"].strip('"')
            values[pid] = float(value)
    return values


def test_two_worker_processes_share_seeding_metrics_and_pins(tmp_path: Path, redis_url: str) -> None:
    root = tmp_path / "bundles"
    write_real_bundle(root, 1)
    write_real_bundle(root, 2, seed=1)
    log = tmp_path / "events.csv"
    log.write_text("user_id,item_id,ts,action,scene,request_id\nu1,item-0001,100,click,feed,r1\n")
    token = "t" * 16
    prefix = f"test-workers-{uuid.uuid4().hex}"
    env = {
        "NSP_BUNDLE_ROOT": str(root),
        "NSP_PORT": str(free_port()),
        "NSP_WORKERS": "2",
        "NSP_WATCH_INTERVAL_S": "0.2",
        "NSP_ADMIN_TOKEN": token,
        "REDIS_URL": redis_url,
        "NSP_STORE_KEY_PREFIX": prefix,
    }
    code = f"{SERVE} serve(Settings(), seed_events=Path({str(log)!r}))"
    admin = {"Authorization": f"Bearer {token}"}

    def versions_served() -> dict[str, float]:
        return gauge_by_process(httpx.get(f"{base}/metrics").text, "nsp_bundle_version")

    try:
        with running(["-c", code], env) as (process, base):
            # Seeded once by the supervisor, not once per worker.
            sessions = httpx.get(f"{base}/v1/users/u1/sessions").json()["sessions"]
            assert [len(s["items"]) for s in sessions] == [1]
            # Both workers are up and a scrape of either one shows both (pid-labelled gauges).
            assert wait_for(lambda: len(versions_served()) == 2)
            assert set(versions_served().values()) == {2.0}
            for _ in range(30):  # a new connection each: the workers share the listening socket
                assert httpx.post(f"{base}/v1/recall", json={"user_id": "u1", "k": 5}).status_code == 200
            counts = [
                float(line.rsplit(" ", 1)[1])
                for line in httpx.get(f"{base}/metrics").text.splitlines()
                if line.startswith("nsp_request_duration_seconds_count{") and '"/v1/recall"' in line
            ]
            assert sum(counts) == 30  # summed over the processes, whichever served each request

            assert httpx.put(f"{base}/v1/admin/pin", json={"version": 1}, headers=admin).status_code == 200
            assert wait_for(lambda: set(versions_served().values()) == {1.0})  # the other one follows
            recalls = [
                httpx.post(f"{base}/v1/recall", json={"user_id": "u1", "k": 5}).json() for _ in range(10)
            ]
            assert {r["bundle_version"] for r in recalls} == {1}
            assert httpx.delete(f"{base}/v1/admin/pin", headers=admin).status_code == 200
            assert wait_for(lambda: set(versions_served().values()) == {2.0})
            process.send_signal(signal.SIGTERM)
            output, _ = process.communicate(timeout=20)
        assert "Stopping parent process" in output, output
    finally:
        client = redis.Redis.from_url(redis_url)
        for key in client.scan_iter(f"{prefix}*"):
            client.delete(key)
        client.close()


def wait_for(condition: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False
