"""Which bundle is served: the registry holds it, the watcher keeps it up to date.

Numbered version directories, the newest complete one wins (Triton POLL mode). A new bundle
is loaded and validated *before* it replaces the current one, by swapping a single reference;
requests hold the handle they took from ``current()``, so in-flight requests finish on the
bundle they started with and the old one is freed when the last of them drops it. A version
that fails to load is logged, counted and retried only with exponential back-off, while the
current bundle keeps serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path

from index.bundle import list_versions
from service.metrics import Metrics
from service.runtime import Bundle

log = logging.getLogger(__name__)

Loader = Callable[[Path], Bundle]


@dataclass
class _Failure:
    attempts: int
    retry_at: float


class BundleRegistry:
    """Holds the served bundle. ``current()`` is safe from any thread; ``refresh()`` runs on
    the event loop and is serialised (concurrent calls wait for each other).

    ``loader(directory)`` must return a ready bundle or raise; it runs in ``executor``
    (default: ``asyncio.to_thread``) so loading never blocks the event loop.
    """

    def __init__(
        self,
        root: Path,
        loader: Loader,
        *,
        metrics: Metrics | None = None,
        executor: Executor | None = None,
        retry_base_s: float = 10.0,
        retry_max_s: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.root = root
        self.metrics = metrics or Metrics()
        self._loader = loader
        self._executor = executor
        self._retry_base_s = retry_base_s
        self._retry_max_s = retry_max_s
        self._clock = clock
        self._current: Bundle | None = None
        self._failures: dict[int, _Failure] = {}
        self._lock = asyncio.Lock()

    def current(self) -> Bundle | None:
        """The bundle to serve this request with, or None before the first successful load."""
        return self._current

    async def refresh(self) -> Bundle | None:
        """Load the newest version above the current one, if any; returns the bundle swapped in.

        Candidates are tried newest first; a version that fails (or is in back-off after
        failing) is skipped in favour of the next older one that is still newer than the
        current bundle. Never raises for a bad bundle.
        """
        async with self._lock:
            try:
                versions = await asyncio.to_thread(list_versions, self.root)
            except OSError as exc:
                log.error("cannot list bundle root %s: %s", self.root, exc)
                return None
            served = self._current.version if self._current is not None else 0
            for version in reversed(versions):
                if version <= served:
                    break
                if self._in_backoff(version):
                    continue
                bundle = await self._try_load(version)
                if bundle is not None:
                    self._swap(bundle)
                    return bundle
            return None

    def _in_backoff(self, version: int) -> bool:
        failure = self._failures.get(version)
        return failure is not None and self._clock() < failure.retry_at

    async def _try_load(self, version: int) -> Bundle | None:
        directory = self.root / str(version)
        started = time.perf_counter()
        try:
            bundle = await self._run(functools.partial(self._loader, directory))
        except Exception as exc:  # any loader failure must leave the served bundle untouched
            attempts = self._failures[version].attempts + 1 if version in self._failures else 1
            delay = min(self._retry_base_s * 2 ** (attempts - 1), self._retry_max_s)
            self._failures[version] = _Failure(attempts, self._clock() + delay)
            self.metrics.bundle_load_failures.inc()
            log.error(
                "bundle %d failed to load (attempt %d, next try in %.0fs), keeping %s: %s",
                version,
                attempts,
                delay,
                f"bundle {self._current.version}" if self._current else "no bundle",
                exc,
            )
            return None
        if bundle.version != version:
            log.error("bundle directory %s holds version %d; skipped", directory, bundle.version)
            self._failures[version] = _Failure(1, float("inf"))
            self.metrics.bundle_load_failures.inc()
            return None
        self._failures.pop(version, None)
        log.info("bundle %d ready in %.2fs", version, time.perf_counter() - started)
        return bundle

    async def _run(self, call: Callable[[], Bundle]) -> Bundle:
        if self._executor is None:
            return await asyncio.to_thread(call)
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    def _swap(self, bundle: Bundle) -> None:
        previous = self._current
        self._current = bundle  # one reference assignment: atomic for readers
        self.metrics.bundle_swapped(bundle.version)
        log.info("serving bundle %d (was %s)", bundle.version, previous.version if previous else "none")


class BundleWatcher:
    """Polls the registry every ``interval_s`` on the event loop until stopped."""

    def __init__(self, registry: BundleRegistry, interval_s: float) -> None:
        self._registry = registry
        self._interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="bundle-watcher")

    async def stop(self) -> None:
        """Cancel the poll loop and wait for it; a load in progress is abandoned."""
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                await self._registry.refresh()
            except Exception:  # keep watching; refresh already handles bad bundles
                log.exception("bundle refresh failed")
