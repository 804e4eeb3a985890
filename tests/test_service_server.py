"""The service as a process: ``python -m service`` and ``serve(..., seed_events=...)``."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
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
