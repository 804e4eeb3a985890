"""BundleRegistry / BundleWatcher: which bundle is served, and what happens when loading fails."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from fakes import FakeBundle, write_real_bundle

from index.bundle import MANIFEST, BundleError
from service.registry import BundleRegistry, BundleWatcher
from service.runtime import Bundle, LoadedBundle

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Loader:
    """Hands out FakeBundles by directory name; versions in ``broken`` raise."""

    def __init__(self) -> None:
        self.broken: set[int] = set()
        self.calls: list[int] = []

    def __call__(self, directory: Path) -> Bundle:
        version = int(directory.name)
        self.calls.append(version)
        if version in self.broken:
            raise BundleError(f"{directory}: checksum mismatch for encoder.onnx")
        return FakeBundle(version=version, n_items=10)


def publish(root: Path, version: int) -> None:
    (root / str(version)).mkdir(parents=True)
    (root / str(version) / MANIFEST).write_text("{}")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def failures(registry: BundleRegistry) -> float | None:
    return registry.metrics.registry.get_sample_value("nsp_bundle_load_failures_total")


async def test_loads_the_newest_complete_version_only(tmp_path: Path) -> None:
    for version in (1, 2, 10):
        publish(tmp_path, version)
    (tmp_path / "11").mkdir()  # no manifest yet: still being published
    (tmp_path / ".staging-123-1.0").mkdir()
    (tmp_path / ".staging-123-1.0" / MANIFEST).write_text("{}")
    loader = Loader()
    registry = BundleRegistry(tmp_path, loader)
    assert registry.current() is None
    swapped = await registry.refresh()
    current = registry.current()
    assert current is not None and current.version == 10
    assert swapped is current
    assert loader.calls == [10]
    assert await registry.refresh() is None  # nothing newer: no reload
    assert loader.calls == [10]


async def test_empty_or_missing_root_serves_nothing(tmp_path: Path) -> None:
    registry = BundleRegistry(tmp_path / "absent", Loader())
    assert await registry.refresh() is None
    assert registry.current() is None


async def test_failed_load_keeps_the_old_bundle_and_is_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    loader = Loader()
    registry = BundleRegistry(tmp_path, loader)
    publish(tmp_path, 1)
    await registry.refresh()
    old = registry.current()
    loader.broken.add(2)
    publish(tmp_path, 2)
    with caplog.at_level(logging.ERROR):
        assert await registry.refresh() is None
    assert registry.current() is old
    assert failures(registry) == 1.0
    assert registry.metrics.registry.get_sample_value("nsp_bundle_version") == 1.0
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(messages) == 1
    assert (
        "bundle 2" in messages[0] and "checksum mismatch" in messages[0] and "keeping bundle 1" in messages[0]
    )


async def test_failed_version_is_retried_with_exponential_backoff(tmp_path: Path) -> None:
    loader, clock = Loader(), Clock()
    loader.broken.add(1)
    publish(tmp_path, 1)
    registry = BundleRegistry(tmp_path, loader, retry_base_s=10, clock=clock)
    await registry.refresh()
    await registry.refresh()  # inside the back-off: not retried
    assert loader.calls == [1]
    clock.now += 10
    await registry.refresh()  # first retry after 10 s …
    assert loader.calls == [1, 1]
    clock.now += 10
    await registry.refresh()  # … the next only after 20 s
    assert loader.calls == [1, 1]
    clock.now += 10
    loader.broken.clear()  # e.g. a transient disk error went away
    await registry.refresh()
    assert loader.calls == [1, 1, 1]
    current = registry.current()
    assert current is not None and current.version == 1
    assert failures(registry) == 2.0


async def test_a_broken_newest_version_falls_back_to_the_next_newer_one(tmp_path: Path) -> None:
    loader = Loader()
    loader.broken.add(3)
    for version in (1, 2, 3):
        publish(tmp_path, version)
    registry = BundleRegistry(tmp_path, loader)
    await registry.refresh()
    current = registry.current()
    assert current is not None and current.version == 2
    assert loader.calls == [3, 2]


async def test_a_newer_good_version_swaps_in(tmp_path: Path) -> None:
    loader = Loader()
    registry = BundleRegistry(tmp_path, loader)
    publish(tmp_path, 1)
    await registry.refresh()
    in_flight = registry.current()  # a request holds this handle across the swap
    publish(tmp_path, 2)
    await registry.refresh()
    current = registry.current()
    assert current is not None and current.version == 2
    assert in_flight is not None and in_flight.version == 1
    sample = registry.metrics.registry.get_sample_value
    assert sample("nsp_bundle_swaps_total") == 2.0
    assert sample("nsp_bundle_version") == 2.0


async def test_real_bundles_swap_and_a_corrupt_one_is_refused(tmp_path: Path) -> None:
    registry = BundleRegistry(tmp_path, LoadedBundle.load)
    write_real_bundle(tmp_path, 1)
    await registry.refresh()
    write_real_bundle(tmp_path, 2, probe_error=0.01)
    await registry.refresh()
    current = registry.current()
    assert current is not None and current.version == 1
    write_real_bundle(tmp_path, 3, seed=1)
    await registry.refresh()
    current = registry.current()
    assert current is not None and current.version == 3
    assert failures(registry) == 1.0


async def test_watcher_polls_until_stopped(tmp_path: Path) -> None:
    loader = Loader()
    registry = BundleRegistry(tmp_path, loader)
    watcher = BundleWatcher(registry, interval_s=0.01)
    watcher.start()
    publish(tmp_path, 5)
    for _ in range(200):
        if registry.current() is not None:
            break
        await asyncio.sleep(0.01)
    await watcher.stop()
    current = registry.current()
    assert current is not None and current.version == 5
    publish(tmp_path, 6)
    await asyncio.sleep(0.05)
    assert loader.calls == [5]  # stopped: no more polling
