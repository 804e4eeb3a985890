"""What the benchmark scripts share: latency summaries, waiting for a condition, a free port,
starting a real ``nsprecall serve`` process, reading a ``service.metrics.Metrics`` registry,
when and from which commit a result was measured, caching finished runs, and the statistics of
repeated runs (mean, sd, 95 % interval). Imported as ``benchlib`` (the scripts run from
``bench/``, which Python puts first on the path)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
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
    bundles: Path,
    port: int,
    env: Mapping[str, str | None],
    log: IO[bytes] | int,
    args: Sequence[str] = (),
) -> subprocess.Popen[bytes]:
    """``nsprecall serve`` on ``bundles`` and ``port`` (and ``args``, e.g. ``--seed-events``), in
    this process's environment changed by ``env`` (a None value removes the variable); its output
    goes to ``log`` (a file or ``subprocess.DEVNULL``). Not waited for."""
    command = [
        sys.executable, "-m", "nsprecall.cli", "serve", "--bundles", str(bundles), "--port", str(port), *args,
    ]  # fmt: skip
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


def cached(path: Path, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``compute()``'s result, from the JSON file ``path`` when a previous run wrote it (so an
    interrupted benchmark resumes where it stopped), else computed and written there."""
    if path.is_file():
        return dict(json.loads(path.read_text()))
    result = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    return result


def prepared(data: Path, prepare: Callable[[Path], object]) -> Path:
    """The directory ``data``, written by ``prepare(directory)`` first where absent: into a
    sibling renamed once complete, so an interrupted preparation is redone, never read
    half-written."""
    if not data.is_dir():
        partial = data.with_name(f"{data.name}.partial")
        shutil.rmtree(partial, ignore_errors=True)
        prepare(partial)
        partial.rename(data)
    return data


def timed(compute: Callable[[], dict[str, Any]]) -> Callable[[], dict[str, Any]]:
    """``compute`` with its wall time added to its result as ``wall_seconds`` (for ``cached``:
    the time a cached result took stays known when a later invocation reads it)."""

    def run() -> dict[str, Any]:
        started = time.perf_counter()
        result = compute()
        return {**result, "wall_seconds": time.perf_counter() - started}

    return run


def config_digest(config: Any) -> str:
    """A short digest of a dataclass's fields, for cache file names: a run is re-done when any
    field changes, a default included."""
    text = json.dumps(dataclasses.asdict(config), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def binomial_half_width(p: float, n: int) -> float:
    """95 % half-width of a proportion over n cases (the case-sampling noise of HR@K)."""
    return 1.96 * math.sqrt(max(p * (1 - p), 0.0) / n) if n else 0.0


# t(0.975, df) for df = 1..9 (up to 10 samples); beyond, a Cornish-Fisher expansion in 1/df.
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262)
_Z975 = 1.959964


def t975(df: int) -> float:
    """The two-sided 95 % quantile t(0.975, df) of Student's t (within 0.01 % for df >= 10)."""
    if df < 1:
        raise ValueError("a t interval needs at least one degree of freedom")
    if df <= len(_T975):
        return _T975[df - 1]
    z = _Z975
    return (
        z
        + (z**3 + z) / (4 * df)
        + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)
        + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * df**3)
    )


@dataclasses.dataclass(frozen=True)
class Interval:
    """Mean, sample standard deviation and 95 % t interval of n repeated measurements
    (``half_width`` = t(0.975, n-1) * sd / sqrt(n); NaN, and sd 0, with one value)."""

    n: int
    mean: float
    sd: float
    half_width: float

    @classmethod
    def of(cls, values: list[float]) -> Interval:
        if not values:
            raise ValueError("no values")
        n, mean = len(values), statistics.fmean(values)
        if n == 1:
            return cls(1, mean, 0.0, math.nan)
        sd = statistics.stdev(values)
        return cls(n, mean, sd, t975(n - 1) * sd / math.sqrt(n))

    @property
    def low(self) -> float:
        return self.mean - self.half_width

    @property
    def high(self) -> float:
        return self.mean + self.half_width

    def excludes(self, value: float) -> bool:
        """The 95 % interval lies wholly above or below ``value`` (False with one value)."""
        return not math.isnan(self.half_width) and (self.low > value or self.high < value)

    def mean_sd(self, digits: int = 4) -> str:
        """``mean ± sd``, or the value alone when there is one."""
        if self.n == 1:
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} ± {self.sd:.{digits}f}"

    def ci(self, digits: int = 4) -> str:
        """``[low, high]``, or ``-`` when one value gives no interval."""
        if self.n == 1:
            return "-"
        return f"[{self.low:.{digits}f}, {self.high:.{digits}f}]"

    def to_dict(self) -> dict[str, float | int | None]:
        """For JSON: without NaN (``None`` where one value gives no interval)."""
        if self.n == 1:
            return {"n": 1, "mean": self.mean, "sd": None, "ci95_low": None, "ci95_high": None}
        return {"n": self.n, "mean": self.mean, "sd": self.sd, "ci95_low": self.low, "ci95_high": self.high}


def synthetic_world(args: Any, knobs: Mapping[str, float]) -> tuple[str, Any]:
    """The synthetic world ``--users/--items/--days`` with ``knobs`` (world seed 0) and the
    directory name of its data and cached runs without the world's name: its size and a
    digest of its whole config, so a changed knob or default is a new world."""
    from model_export.synth import SynthConfig

    config = SynthConfig(**knobs, n_users=args.users, n_items=args.items, n_days=args.days, seed=0)
    return f"u{args.users}-i{args.items}-d{args.days}-{config_digest(config)}", config


def generate_world(config: Any) -> Callable[[Path], object]:
    """``prepared``'s writer of the synthetic world ``config``."""
    from model_export.synth import generate

    return lambda out: generate(config, out, progress=False)
