"""What the benchmark scripts share: latency summaries, waiting for a condition, a free port,
starting a real ``nsprecall serve`` process, reading a ``service.metrics.Metrics`` registry, and
when and from which commit a result was measured. Imported as ``benchlib`` (the scripts run from
``bench/``, which Python puts first on the path)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

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


def histogram_means_ms(registry: Any, name: str, label: str) -> dict[str, dict[str, float]]:
    """A Prometheus histogram's observations per value of ``label``: count and mean in ms
    (``_sum / _count``, exact, unlike quantiles estimated from the buckets)."""
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    for family in registry.collect():
        if family.name != name:
            continue
        for sample in family.samples:
            key = sample.labels.get(label)
            if sample.name == f"{name}_sum":
                sums[key] = sample.value
            elif sample.name == f"{name}_count":
                counts[key] = sample.value
    return {
        key: {"n": int(counts[key]), "mean_ms": 1000.0 * sums[key] / counts[key]}
        for key in sorted(counts)
        if counts[key]
    }


def counter_values(registry: Any, name: str, label: str) -> dict[str, float]:
    """A Prometheus counter's totals per value of ``label`` (``name`` without ``_total``)."""
    return {
        sample.labels[label]: sample.value
        for family in registry.collect()
        if family.name == name
        for sample in family.samples
        if sample.name == f"{name}_total"
    }


def provenance() -> dict[str, str]:
    """When and from which code a result was measured: UTC time, commit, and whether the work
    tree had uncommitted changes."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
        return done.stdout.strip()

    return {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": git("rev-parse", "--short", "HEAD"),
        "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
    }


def committed_at(path: Path) -> dict[str, str]:
    """The last commit of ``path`` (a result file from before results carried their own date)."""
    done = subprocess.run(
        ["git", "log", "-1", "--format=%h %cI", "--", str(path)], cwd=ROOT, capture_output=True, text=True
    )
    commit, _, date = done.stdout.strip().partition(" ")
    return {"generated_at": date or "unknown", "commit": commit or "unknown", "dirty": False}
