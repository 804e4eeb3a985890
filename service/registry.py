"""Which bundle is served: the registry holds it, the watcher keeps it up to date.

Numbered version directories, the newest complete one wins (Triton POLL mode), unless an
operator pins a version (``pin``, ``rollback``); the pin holds until ``unpin``. A bundle is
loaded and validated *before* it replaces the current one, by swapping a single reference;
requests hold the handle they took from ``current()``, so in-flight requests finish on the
bundle they started with and the old one is freed when the last of them drops it. A version
that fails to load is logged, counted and retried by the watcher only with exponential
back-off, while the current bundle keeps serving; an operator's explicit reload or pin tries
it at once.

Memory: the registry keeps at most two bundles alive, the served one and the one loading.
Loads are serialised by one lock, a candidate that fails is dropped before the next is tried,
and no old bundle is cached: a rollback loads the older version from disk again. (A request
still running on the previous bundle holds it for the few milliseconds it needs.) glibc keeps
a freed bundle's memory in its arenas, so RSS would stay at two bundles after a swap; the first
poll after a swap or failed load hands it back to the OS (``malloc_trim``), and freezes the
objects that survive out of the cyclic garbage collector's way (``settle_memory``).

The registry remembers its last ``SWAP_HISTORY`` swaps and failed loads (``state().swaps``), with
what triggered each, for operators and the console.

Every state change, and every watcher poll as a heartbeat, rewrites this instance's serving
record (``service.serving_record``) so that pruning never deletes the version it serves.

With several server processes, each has its own registry; a ``PinFile`` shared between them
carries the pin: the process that takes the admin call writes it, the others apply it at their
next poll (``service.pin_file``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import ctypes.util
import functools
import gc
import logging
import math
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from index.bundle import list_versions
from service.metrics import Metrics
from service.pin_file import PinFile
from service.runtime import Bundle
from service.serving_record import ServingRecord

log = logging.getLogger(__name__)

Loader = Callable[[Path], Bundle]
Trigger = Literal["start", "watcher", "reload", "pin", "rollback", "unpin"]
SWAP_HISTORY = 50


class UnknownVersion(Exception):
    """The requested version is not a complete bundle under the bundle root."""


class BundleLoadFailed(Exception):
    """The requested version failed to load or validate; the served bundle is unchanged."""


class NothingToRollBack(Exception):
    """No bundle is served, or no version older than the served one exists."""


class BundleRootUnavailable(Exception):
    """The bundle root cannot be listed."""


@dataclass(frozen=True)
class FailedVersion:
    version: int
    attempts: int
    retry_in_s: float | None  # None: never retried by the watcher (the directory is mislabelled)


@dataclass(frozen=True)
class Swap:
    at: float  # unix seconds
    version: int  # swapped in, or failed to load
    previous_version: int | None  # served when it happened
    outcome: Literal["swapped", "failed"]
    trigger: Trigger
    reason: str | None = None  # why the load failed


@dataclass(frozen=True)
class RegistryState:
    version: int | None  # served now; None before the first successful load
    pinned: bool
    previous_version: int | None  # served before the current one, the first rollback target
    versions: list[int]  # complete versions under the root, ascending
    failed: list[FailedVersion]
    swaps: list[Swap]  # newest first, at most SWAP_HISTORY


@dataclass
class _Failure:
    attempts: int
    retry_at: float


class BundleRegistry:
    """Holds the served bundle. ``current()`` is safe from any thread; the async methods run on
    the event loop and are serialised (concurrent calls wait for each other).

    ``loader(directory)`` must return a ready bundle or raise; it runs in ``executor``
    (default: ``asyncio.to_thread``) so loading never blocks the event loop. ``record``, when
    given, is kept up to date with the served version.
    """

    def __init__(
        self,
        root: Path,
        loader: Loader,
        *,
        metrics: Metrics | None = None,
        executor: Executor | None = None,
        record: ServingRecord | None = None,
        pin_file: PinFile | None = None,
        retry_base_s: float = 10.0,
        retry_max_s: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.root = root
        self.metrics = metrics or Metrics()
        self._loader = loader
        self._executor = executor
        self._record = record
        self._pin_file = pin_file
        self._pin_ignored: int | None = None  # a shared pin to a version not under the root, logged once
        self._retry_base_s = retry_base_s
        self._retry_max_s = retry_max_s
        self._clock = clock
        self._current: Bundle | None = None
        self._previous_version: int | None = None
        self._pinned = False
        self._failures: dict[int, _Failure] = {}
        self._settle_pending = False
        self._swaps: collections.deque[Swap] = collections.deque(maxlen=SWAP_HISTORY)
        self._lock = asyncio.Lock()

    def current(self) -> Bundle | None:
        """The bundle to serve this request with, or None before the first successful load."""
        return self._current

    @property
    def pinned(self) -> bool:
        return self._pinned

    async def refresh(self, trigger: Trigger = "watcher") -> Bundle | None:
        """The watcher's poll: load the newest version above the current one, unless pinned.

        Candidates are tried newest first; a version that fails (or is in back-off after
        failing) is skipped in favour of the next older one that is still newer than the
        current bundle. A pin shared by another process (``pin_file``) is applied first.
        Returns the bundle swapped in, if any. Never raises for a bad bundle. ``trigger`` is
        recorded with the swaps and failed loads (``start`` for the service's first load).
        """
        async with self._lock:
            if self._settle_pending:  # set by an earlier call: the old bundle's requests are done
                self._settle_pending = False
                await asyncio.to_thread(settle_memory)
            bundle = await self._follow_shared_pin(trigger)
            if not self._pinned:
                bundle = await self._upgrade(trigger, ignore_backoff=False) or bundle
            await self._write_record()
            return bundle

    async def reload(self) -> Bundle | None:
        """An operator's refresh: like ``refresh`` but versions in back-off are tried now.

        While pinned it loads nothing (unpin first). Raises ``BundleRootUnavailable``.
        """
        async with self._lock:
            await self._follow_shared_pin("reload")
            if self._pinned:
                log.info("reload: pinned to bundle %s, nothing to do", self._served())
                return None
            if (bundle := await self._upgrade("reload", ignore_backoff=True, raise_on_listing=True)) is None:
                log.info("reload: no newer loadable version, serving %s", self._served())
            await self._write_record()
            return bundle

    async def pin(self, version: int) -> Bundle:
        """Serve ``version`` (loading it unless it is the current one) until ``unpin``.

        Raises ``UnknownVersion`` if it is not a complete bundle under the root and
        ``BundleLoadFailed`` if it does not load; either way the served bundle and pin state
        are unchanged.
        """
        async with self._lock:
            bundle = self._current
            if bundle is None or bundle.version != version:
                if version not in await self._list():
                    raise UnknownVersion(f"no complete bundle {version} under {self.root}")
                bundle = await self._load(version, "pin")
                self._swap(bundle, "pin")
            self._set_pinned(True)
            await self._share_pin()
            await self._write_record()
            return bundle

    async def rollback(self) -> Bundle:
        """Serve an older version and pin it: the one served before the current one if it is
        older, else (or if it fails to load) the newest older one that loads.

        Raises ``NothingToRollBack`` when there is no older version, ``BundleLoadFailed`` when
        none of them loads; the served bundle is then unchanged.
        """
        async with self._lock:
            if self._current is None:
                raise NothingToRollBack("no bundle is served yet")
            served = self._current.version
            older = [v for v in reversed(await self._list()) if v < served]
            if self._previous_version in older:
                older.remove(self._previous_version)
                older.insert(0, self._previous_version)
            if not older:
                raise NothingToRollBack(f"no version older than {served} under {self.root}")
            reasons = []
            for version in older:
                try:
                    bundle = await self._load(version, "rollback")
                except BundleLoadFailed as exc:
                    reasons.append(str(exc))
                    continue
                self._swap(bundle, "rollback")
                self._set_pinned(True)
                await self._share_pin()
                await self._write_record()
                return bundle
            raise BundleLoadFailed(f"no older version loads, still serving {served}: " + "; ".join(reasons))

    async def unpin(self) -> Bundle | None:
        """Back to newest-wins; loads the newest version at once if it is newer than the current.

        Returns the bundle swapped in, if any.
        """
        async with self._lock:
            self._set_pinned(False)
            await self._share_pin()
            bundle = await self._upgrade("unpin", ignore_backoff=False)
            await self._write_record()
            return bundle

    async def state(self) -> RegistryState:
        """A snapshot for operators. Raises ``BundleRootUnavailable``."""
        version, pinned, previous = self._served(), self._pinned, self._previous_version
        now = self._clock()
        failed = [
            FailedVersion(v, f.attempts, None if math.isinf(f.retry_at) else max(0.0, f.retry_at - now))
            for v, f in sorted(self._failures.items())
        ]
        swaps = list(reversed(self._swaps))
        return RegistryState(version, pinned, previous, await self._list(), failed, swaps)

    async def close(self) -> None:
        """Withdraw the serving record: this instance is about to stop serving."""
        async with self._lock:
            if self._record is not None:
                await asyncio.to_thread(self._record.remove)

    async def _upgrade(
        self, trigger: Trigger, *, ignore_backoff: bool, raise_on_listing: bool = False
    ) -> Bundle | None:
        try:
            versions = await self._list()
        except BundleRootUnavailable as exc:
            if raise_on_listing:
                raise
            log.error("%s", exc)
            return None
        served = self._served() or 0
        for version in reversed(versions):
            if version <= served:
                break
            if not ignore_backoff and self._in_backoff(version):
                continue
            try:
                bundle = await self._load(version, trigger)
            except BundleLoadFailed:
                continue
            self._swap(bundle, trigger)
            return bundle
        return None

    async def _list(self) -> list[int]:
        try:
            versions = await asyncio.to_thread(list_versions, self.root)
        except OSError as exc:
            raise BundleRootUnavailable(f"cannot list bundle root {self.root}: {exc}") from exc
        for gone in self._failures.keys() - set(versions):  # pruned: forget its failures
            del self._failures[gone]
        return versions

    def _in_backoff(self, version: int) -> bool:
        failure = self._failures.get(version)
        return failure is not None and self._clock() < failure.retry_at

    async def _load(self, version: int, trigger: Trigger) -> Bundle:
        """Load and check one version; a failure is logged, counted, recorded, put in back-off
        and raised as ``BundleLoadFailed`` (holding no reference to the half-loaded bundle)."""
        directory = self.root / str(version)
        started = time.perf_counter()
        # A bundle that was still in use when ``settle_memory`` froze it, and has since become
        # cyclic garbage, must be freed before another one loads: two bundles at most.
        gc.unfreeze()
        gc.collect()
        try:
            bundle = await self._run(functools.partial(self._loader, directory))
        except Exception as exc:  # any loader failure must leave the served bundle untouched
            reason, permanent = " ".join(str(exc).split()) or type(exc).__name__, False  # one log line
        else:
            if bundle.version == version:
                self._failures.pop(version, None)
                log.info("bundle %d ready in %.2fs", version, time.perf_counter() - started)
                return bundle
            reason, permanent = f"directory {directory} holds version {bundle.version}", True
            del bundle  # the raised error's traceback must not keep it alive
        attempts = self._failures[version].attempts + 1 if version in self._failures else 1
        delay = min(self._retry_base_s * 2 ** (attempts - 1), self._retry_max_s)
        self._failures[version] = _Failure(attempts, math.inf if permanent else self._clock() + delay)
        self._settle_pending = True
        self.metrics.bundle_load_failures.inc()
        served = self._served()
        self._swaps.append(Swap(time.time(), version, served, "failed", trigger, reason))
        log.error(
            "bundle %d failed to load (attempt %d, %s), keeping %s: %s",
            version,
            attempts,
            "not retried" if permanent else f"next try in {delay:.0f}s",
            f"bundle {served}" if served is not None else "no bundle",
            reason,
        )
        raise BundleLoadFailed(f"bundle {version} failed to load: {reason}")

    async def _run(self, call: Callable[[], Bundle]) -> Bundle:
        if self._executor is None:
            return await asyncio.to_thread(call)
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    def _served(self) -> int | None:
        return self._current.version if self._current is not None else None

    def _swap(self, bundle: Bundle, trigger: Trigger) -> None:
        previous = self._served()
        self._current = bundle  # one reference assignment: atomic for readers
        self._previous_version = previous
        self._swaps.append(Swap(time.time(), bundle.version, previous, "swapped", trigger))
        self._settle_pending = True
        self.metrics.bundle_swapped(bundle.version)
        log.info("serving bundle %d (was %s)", bundle.version, previous if previous is not None else "none")

    def _set_pinned(self, pinned: bool) -> None:
        if pinned != self._pinned:
            log.info("%s bundle %s", "pinned" if pinned else "unpinned", self._served())
        self._pinned = pinned
        self.metrics.bundle_pinned.set(1 if pinned else 0)

    async def _share_pin(self) -> None:
        if self._pin_file is not None:
            await asyncio.to_thread(self._pin_file.write, self._served() if self._pinned else None)

    async def _follow_shared_pin(self, trigger: Trigger) -> Bundle | None:
        """Apply the pin another process shared; returns the bundle swapped in, if any."""
        if self._pin_file is None or (shared := await asyncio.to_thread(self._pin_file.read)) is None:
            return None
        version = shared.version
        if version is None:
            if self._pinned:
                log.info("unpinned by another process")
                self._set_pinned(False)
            return None
        if self._served() == version:
            self._set_pinned(True)
            return None
        if self._in_backoff(version):
            return None
        try:
            listed = version in await self._list()
        except BundleRootUnavailable as exc:
            log.error("%s", exc)
            return None
        if not listed:
            if self._pin_ignored != version:
                log.warning("shared pin names bundle %d, which is not under %s; ignored", version, self.root)
                self._pin_ignored = version
            return None
        try:
            bundle = await self._load(version, trigger)
        except BundleLoadFailed:
            return None
        self._swap(bundle, trigger)
        self._set_pinned(True)
        log.info("pinned to bundle %d by another process", version)
        return bundle

    async def _write_record(self) -> None:
        version = self._served()
        if self._record is None or version is None:
            return
        if not await asyncio.to_thread(self._record.write, version, self._pinned):
            self.metrics.serving_record_failures.inc()


def settle_memory() -> None:
    """After a swap, once the previous bundle's requests are done: collect what it left in
    reference cycles, freeze what survives, and return free heap memory to the OS.

    Freezing (``gc.freeze``) moves the long-lived objects (the served bundle, the app, the
    imported modules) out of the cyclic collector's generations, so a full collection no
    longer walks them all again: before, a 1M-item bundle made every full collection a ~40 ms
    pause of the event loop, about once a second under load, and that was the p99. Frozen
    objects are still freed by reference counting; a frozen one that ends up in garbage
    cycles is freed when ``_load`` unfreezes and collects before the next load (one full
    collection per load), so it never counts as a third bundle.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    if _malloc_trim is not None:  # glibc only
        _malloc_trim(0)


def _find_malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    trim: Callable[[int], int] | None = getattr(libc, "malloc_trim", None)  # glibc only
    return trim


_malloc_trim = _find_malloc_trim()


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
