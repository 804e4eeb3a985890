"""What the benchmark scripts share: latency summaries, waiting for a condition, a free port,
and starting a real ``nsprecall serve`` process. Imported as ``benchlib`` (the scripts run from
``bench/``, which Python puts first on the path)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def latency_summary(seconds: list[float]) -> dict[str, float]:
    """Durations in seconds → count and p50/p90/p95/p99/mean/max in milliseconds."""
    ms = np.asarray(seconds, dtype=np.float64) * 1000.0
    p50, p90, p95, p99 = np.percentile(ms, [50, 90, 95, 99])
    return {
        "n": len(ms),
        "p50_ms": float(p50),
        "p90_ms": float(p90),
        "p95_ms": float(p95),
        "p99_ms": float(p99),
        "mean_ms": float(ms.mean()),
        "max_ms": float(ms.max()),
    }


def wait_for(
    predicate: Callable[[], bool],
    timeout_s: float,
    what: str,
    interval_s: float = 0.05,
    alive: subprocess.Popen[bytes] | None = None,
) -> None:
    """Poll ``predicate`` (an HTTP error counts as not yet) until it holds; raise after
    ``timeout_s``, or at once if the process ``alive`` has exited."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except httpx.HTTPError:
            pass
        if alive is not None and alive.poll() is not None:
            raise RuntimeError(f"the server exited (status {alive.returncode}) while waiting for {what}")
        time.sleep(interval_s)
    raise RuntimeError(f"timed out after {timeout_s:.0f}s waiting for {what}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_serve(
    bundles: Path, port: int, env: Mapping[str, str | None], log: IO[bytes] | int
) -> subprocess.Popen[bytes]:
    """``nsprecall serve`` on ``bundles`` and ``port``, in this process's environment changed by
    ``env`` (a None value removes the variable); its output goes to ``log`` (a file or
    ``subprocess.DEVNULL``). Not waited for."""
    command = [sys.executable, "-m", "nsprecall.cli", "serve", "--bundles", str(bundles), "--port", str(port)]
    environment = dict(os.environ)
    for name, value in env.items():
        if value is None:
            environment.pop(name, None)
        else:
            environment[name] = value
    return subprocess.Popen(command, cwd=ROOT, env=environment, stdout=log, stderr=subprocess.STDOUT)
