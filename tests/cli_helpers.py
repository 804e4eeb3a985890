"""Running the real `nsprecall` command line (one-off commands and `serve` as a process), for
integration tests."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx
import redis

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "nsprecall.cli"]


def run_cli(*args: str, cwd: Path = ROOT) -> str:
    done = subprocess.run([*CLI, *args], cwd=cwd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"nsprecall {args[0]} failed:\n{done.stderr[-3000:]}"
    return done.stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, poll_s: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except httpx.HTTPError:
            pass
        time.sleep(poll_s)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


@contextmanager
def serve_process(
    bundles: Path,
    redis_url: str,
    *args: str,
    env: Mapping[str, str] | None = None,
    log_path: Path | None = None,
    ready_timeout: float = 60,
    client_timeout: float = 10,
) -> Iterator[httpx.Client]:
    """`nsprecall serve --bundles BUNDLES` on a free port, with Redis keys under a prefix of its
    own; yields a client once it is ready, then stops it and deletes its keys. With
    ``log_path`` the server's output goes there (else stderr is piped and stdout dropped)."""
    with served_process(
        bundles,
        redis_url,
        *args,
        env=env,
        log_path=log_path,
        ready_timeout=ready_timeout,
        client_timeout=client_timeout,
    ) as (client, _):
        yield client


@contextmanager
def served_process(
    bundles: Path,
    redis_url: str,
    *args: str,
    env: Mapping[str, str] | None = None,
    log_path: Path | None = None,
    ready_timeout: float = 60,
    client_timeout: float = 10,
) -> Iterator[tuple[httpx.Client, subprocess.Popen[bytes]]]:
    """``serve_process``, also yielding the server process (to signal it)."""
    port = free_port()
    prefix = f"nsptest-{uuid.uuid4().hex[:8]}"
    environment = {**os.environ, "NSP_REDIS_URL": redis_url, "NSP_STORE_KEY_PREFIX": prefix, **(env or {})}
    command = [*CLI, "serve", "--bundles", str(bundles), "--port", str(port), *args]
    if log_path is None:
        process = subprocess.Popen(
            command, cwd=ROOT, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
    else:
        with log_path.open("w") as log:
            process = subprocess.Popen(
                command, cwd=ROOT, env=environment, stdout=log, stderr=subprocess.STDOUT
            )
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=client_timeout)
    try:
        wait_until(lambda: client.get("/readyz").status_code == 200, ready_timeout, "readiness")
        yield client, process
    finally:
        client.close()
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:  # still draining requests a failed test left open
            process.kill()
            process.wait()
        store = redis.Redis.from_url(redis_url)
        keys = list(store.scan_iter(f"{prefix}:*"))
        if keys:
            store.delete(*keys)


def metric(client: httpx.Client, name: str, labels: str = "") -> float:
    """The value of one sample on the server's ``/metrics``, e.g. ``metric(c, "x_total")`` or
    ``metric(c, "x", '{route="/v1/recall"}')``; fails the test if it is not exported."""
    pattern = rf"^{re.escape(name + labels)} (\S+)$"
    found = re.search(pattern, client.get("/metrics").text, re.MULTILINE)
    assert found, f"{name}{labels} is not exported"
    return float(found.group(1))
