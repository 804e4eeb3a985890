"""BundleRegistry / BundleWatcher: which bundle is served, and what happens when loading fails."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import weakref
from pathlib import Path

import pytest
from fakes import FakeBundle, write_real_bundle

from index.bundle import MANIFEST, SERVING_DIR, BundleError, list_versions
from service import registry as registry_module
from service.pin_file import PinFile
from service.registry import (
    BundleLoadFailed,
    BundleRegistry,
    BundleWatcher,
    FailedVersion,
    NothingToRollBack,
    RegistryState,
    UnknownVersion,
    settle_memory,
)
from service.runtime import Bundle, LoadedBundle
from service.serving_record import ServingRecord

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


# --- operator actions: rollback, pin, unpin, reload -------------------------------------------


def served(registry: BundleRegistry) -> int | None:
    bundle = registry.current()
    return bundle.version if bundle is not None else None


async def test_rollback_serves_the_previously_served_version_and_pins_it(tmp_path: Path) -> None:
    loader = Loader()
    registry = BundleRegistry(tmp_path, loader)
    publish(tmp_path, 1)
    await registry.refresh()
    publish(tmp_path, 2)
    publish(tmp_path, 3)
    await registry.refresh()  # 1 → 3 directly: 3's predecessor is 1, not 2
    assert served(registry) == 3
    rolled = await registry.rollback()
    assert rolled.version == 1 and served(registry) == 1
    assert registry.pinned
    await registry.refresh()  # the watcher does not re-upgrade a pinned registry
    assert served(registry) == 1
    assert loader.calls == [1, 3, 1]  # rolled back by loading from disk again
    assert registry.metrics.registry.get_sample_value("nsp_bundle_pinned") == 1.0


async def test_repeated_rollbacks_walk_down_to_the_oldest_version(tmp_path: Path) -> None:
    for version in (1, 2, 3):
        publish(tmp_path, version)
    registry = BundleRegistry(tmp_path, Loader())
    await registry.refresh()
    assert served(registry) == 3
    await registry.rollback()
    assert served(registry) == 2
    await registry.rollback()  # the version served before (3) is newer: take the next older one
    assert served(registry) == 1
    with pytest.raises(NothingToRollBack, match="no version older than 1"):
        await registry.rollback()
    assert served(registry) == 1 and registry.pinned


async def test_nothing_to_roll_back_before_the_first_bundle(tmp_path: Path) -> None:
    registry = BundleRegistry(tmp_path, Loader())
    with pytest.raises(NothingToRollBack, match="no bundle is served"):
        await registry.rollback()
    assert not registry.pinned


async def test_rollback_skips_older_versions_that_fail_to_load(tmp_path: Path) -> None:
    loader = Loader()
    loader.broken.add(2)
    for version in (1, 2, 3):
        publish(tmp_path, version)
    registry = BundleRegistry(tmp_path, loader)
    await registry.refresh()
    await registry.rollback()
    assert served(registry) == 1
    assert loader.calls == [3, 2, 1]
    assert failures(registry) == 1.0


async def test_rollback_where_no_older_version_loads_keeps_serving_unpinned(tmp_path: Path) -> None:
    loader = Loader()
    loader.broken.update({1, 2})
    for version in (1, 2, 3):
        publish(tmp_path, version)
    registry = BundleRegistry(tmp_path, loader)
    await registry.refresh()
    with pytest.raises(BundleLoadFailed, match="still serving 3") as failure:
        await registry.rollback()
    assert "checksum mismatch" in str(failure.value)
    assert served(registry) == 3 and not registry.pinned
    assert failures(registry) == 2.0


async def test_pin_holds_an_older_version_until_unpinned(tmp_path: Path) -> None:
    loader = Loader()
    for version in (1, 2, 3):
        publish(tmp_path, version)
    registry = BundleRegistry(tmp_path, loader)
    await registry.refresh()
    pinned = await registry.pin(1)
    assert pinned.version == 1 and served(registry) == 1 and registry.pinned
    publish(tmp_path, 4)
    await registry.refresh()
    assert served(registry) == 1
    assert loader.calls == [3, 1]  # a pinned registry does not even try the newer version
    swapped = await registry.unpin()
    assert swapped is not None and swapped.version == 4
    assert served(registry) == 4 and not registry.pinned
    assert registry.metrics.registry.get_sample_value("nsp_bundle_pinned") == 0.0


async def test_pinning_the_served_version_loads_nothing(tmp_path: Path) -> None:
    loader = Loader()
    publish(tmp_path, 1)
    registry = BundleRegistry(tmp_path, loader)
    await registry.refresh()
    before = registry.current()
    assert await registry.pin(1) is before
    assert registry.pinned and loader.calls == [1]


async def test_pinning_an_unknown_version_changes_nothing(tmp_path: Path) -> None:
    loader = Loader()
    publish(tmp_path, 1)
    (tmp_path / "2").mkdir()  # incomplete: no manifest
    registry = BundleRegistry(tmp_path, loader)
    await registry.refresh()
    for version in (2, 7):
        with pytest.raises(UnknownVersion, match=f"no complete bundle {version}"):
            await registry.pin(version)
    assert served(registry) == 1 and not registry.pinned
    assert loader.calls == [1]


async def test_pinning_a_broken_version_keeps_the_served_bundle_and_pin_state(tmp_path: Path) -> None:
    loader = Loader()
    loader.broken.add(1)
    publish(tmp_path, 1)
    publish(tmp_path, 2)
    registry = BundleRegistry(tmp_path, loader)
    await registry.refresh()
    before = registry.current()
    with pytest.raises(BundleLoadFailed, match=r"bundle 1 failed to load: .*checksum mismatch"):
        await registry.pin(1)
    assert registry.current() is before and not registry.pinned
    assert failures(registry) == 1.0
    loader.broken.clear()
    await registry.pin(1)  # an operator's pin ignores the back-off
    assert served(registry) == 1 and registry.pinned


async def test_reload_tries_a_version_in_backoff_at_once(tmp_path: Path) -> None:
    loader, clock = Loader(), Clock()
    loader.broken.add(2)
    publish(tmp_path, 1)
    publish(tmp_path, 2)
    registry = BundleRegistry(tmp_path, loader, retry_base_s=60, clock=clock)
    await registry.refresh()
    assert served(registry) == 1 and loader.calls == [2, 1]
    loader.broken.clear()  # the operator fixed the volume
    await registry.refresh()
    assert served(registry) == 1 and loader.calls == [2, 1]  # the watcher waits for the back-off
    swapped = await registry.reload()
    assert swapped is not None and swapped.version == 2
    assert (await registry.state()).failed == []


async def test_reload_while_pinned_loads_nothing(tmp_path: Path) -> None:
    loader = Loader()
    publish(tmp_path, 1)
    registry = BundleRegistry(tmp_path, loader)
    await registry.refresh()
    await registry.pin(1)
    publish(tmp_path, 2)
    assert await registry.reload() is None
    assert served(registry) == 1 and loader.calls == [1]


async def test_state_reports_what_is_served_and_what_failed(tmp_path: Path) -> None:
    loader, clock = Loader(), Clock()
    loader.broken.add(3)
    for version in (1, 2, 3):
        publish(tmp_path, version)
    registry = BundleRegistry(tmp_path, loader, retry_base_s=10, clock=clock)
    await registry.refresh()
    clock.now += 4
    await registry.rollback()
    state = await registry.state()
    assert state.version == 1 and state.pinned and state.previous_version == 2
    assert state.versions == [1, 2, 3]
    assert state.failed == [FailedVersion(version=3, attempts=1, retry_in_s=6.0)]


async def test_registry_keeps_at_most_two_bundles_alive(tmp_path: Path) -> None:
    """The served bundle and the one loading, never more: no cache of old bundles."""
    live: weakref.WeakSet[FakeBundle] = weakref.WeakSet()
    most_alive_while_loading = 0

    def loader(directory: Path) -> Bundle:
        nonlocal most_alive_while_loading
        gc.collect()
        most_alive_while_loading = max(most_alive_while_loading, len(live))
        if directory.name == "3":
            raise BundleError("probe mismatch")
        bundle = FakeBundle(version=int(directory.name), n_items=10)
        live.add(bundle)
        return bundle

    registry = BundleRegistry(tmp_path, loader)
    for version in (1, 2, 3, 4, 5):
        publish(tmp_path, version)
        await registry.refresh()
    await registry.rollback()
    await registry.rollback()
    await registry.pin(1)
    await registry.unpin()
    await registry.pin(2)
    gc.collect()
    assert served(registry) == 2
    assert most_alive_while_loading == 1  # only the served one while the next one loads
    assert len(live) == 1


# --- the serving record -----------------------------------------------------------------------


def read_record(root: Path) -> dict[str, object]:
    records = list((root / SERVING_DIR).glob("*.json"))
    assert len(records) == 1, records
    loaded: dict[str, object] = json.loads(records[0].read_text())
    return loaded


async def test_serving_record_follows_swaps_pins_and_polls(tmp_path: Path) -> None:
    wall = Clock()
    record = ServingRecord(tmp_path, "pod-a-1", clock=wall)
    registry = BundleRegistry(tmp_path, Loader(), record=record)
    await registry.refresh()
    assert not record.path.exists()  # nothing served, nothing to protect
    publish(tmp_path, 1)
    publish(tmp_path, 2)
    await registry.refresh()
    assert read_record(tmp_path) == {"version": 2, "pinned": False, "updated": 1000.0}
    assert record.path == tmp_path / SERVING_DIR / "pod-a-1.json"
    wall.now += 5
    await registry.refresh()  # nothing new: the poll is a heartbeat
    assert read_record(tmp_path) == {"version": 2, "pinned": False, "updated": 1005.0}
    await registry.rollback()
    assert read_record(tmp_path)["version"] == 1 and read_record(tmp_path)["pinned"] is True
    await registry.unpin()
    assert read_record(tmp_path)["version"] == 2 and read_record(tmp_path)["pinned"] is False
    assert list_versions(tmp_path) == [1, 2]  # the .serving directory is not a version
    await registry.close()
    assert not record.path.exists()


async def test_a_serving_record_that_cannot_be_written_never_stops_serving(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / SERVING_DIR).write_text("not a directory")
    registry = BundleRegistry(tmp_path, Loader(), record=ServingRecord(tmp_path, "pod-b-1"))
    publish(tmp_path, 1)
    with caplog.at_level(logging.WARNING):
        await registry.refresh()
        await registry.refresh()
        await registry.pin(1)
    assert served(registry) == 1 and registry.pinned
    assert registry.metrics.registry.get_sample_value("nsp_serving_record_write_failures_total") == 3.0
    warnings = [r.getMessage() for r in caplog.records if "serving record" in r.getMessage()]
    assert len(warnings) == 1  # warned once, not on every heartbeat
    assert "pod-b-1.json" in warnings[0]


async def test_the_poll_after_a_swap_settles_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    trims: list[int] = []
    monkeypatch.setattr("service.registry.settle_memory", lambda: trims.append(1))
    registry = BundleRegistry(tmp_path, Loader())
    publish(tmp_path, 1)
    await registry.refresh()  # swap: the old bundle may still be in use by requests
    assert trims == []
    await registry.refresh()  # the next poll: they are done
    await registry.refresh()  # nothing new was freed since
    assert trims == [1]


# Several server processes share one pin file: one takes the admin call, the others follow.


def two_processes(root: Path, pin_path: Path) -> tuple[BundleRegistry, BundleRegistry]:
    return (
        BundleRegistry(root, Loader(), pin_file=PinFile(pin_path)),
        BundleRegistry(root, Loader(), pin_file=PinFile(pin_path)),
    )


def served_and_pinned(registry: BundleRegistry) -> tuple[int | None, bool]:
    bundle = registry.current()
    return (bundle.version if bundle is not None else None, registry.pinned)


async def test_a_pin_taken_by_one_process_is_followed_by_the_others_at_their_next_poll(
    tmp_path: Path,
) -> None:
    root, pin_path = tmp_path / "bundles", tmp_path / "pin.json"
    for version in (1, 2, 3):
        publish(root, version)
    a, b = two_processes(root, pin_path)
    await a.refresh()
    await b.refresh()
    assert served_and_pinned(a) == served_and_pinned(b) == (3, False)

    await a.pin(1)
    assert served_and_pinned(b) == (3, False)  # not before its poll
    await b.refresh()
    assert served_and_pinned(b) == (1, True)
    publish(root, 4)
    await b.refresh()
    assert served_and_pinned(b) == (1, True)  # a pin holds against newer versions in every process

    await a.unpin()
    await b.refresh()
    assert served_and_pinned(a) == served_and_pinned(b) == (4, False)


async def test_a_rollback_is_shared_as_a_pin_of_the_version_rolled_back_to(tmp_path: Path) -> None:
    root, pin_path = tmp_path / "bundles", tmp_path / "pin.json"
    for version in (1, 2):
        publish(root, version)
    a, b = two_processes(root, pin_path)
    await a.refresh()
    await b.refresh()
    await b.rollback()
    assert json.loads(pin_path.read_text()) == {"version": 1}
    await a.refresh()
    assert served_and_pinned(a) == (1, True)


async def test_a_restarted_process_starts_on_the_shared_pin(tmp_path: Path) -> None:
    root, pin_path = tmp_path / "bundles", tmp_path / "pin.json"
    for version in (1, 2, 3):
        publish(root, version)
    a, _ = two_processes(root, pin_path)
    await a.refresh()
    await a.pin(2)
    loader = Loader()
    restarted = BundleRegistry(root, loader, pin_file=PinFile(pin_path))
    await restarted.refresh()
    assert served_and_pinned(restarted) == (2, True)
    assert loader.calls == [2]  # the pinned version only: no detour through the newest


async def test_a_shared_pin_that_cannot_be_followed_leaves_the_process_serving(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root, pin_path = tmp_path / "bundles", tmp_path / "pin.json"
    for version in (1, 2):
        publish(root, version)
    registry = BundleRegistry(root, Loader(), pin_file=PinFile(pin_path))
    pin_path.write_text('{"version": 9}')  # pruned since it was pinned
    await registry.refresh()
    assert served_and_pinned(registry) == (2, False)
    pin_path.write_text("{not json")
    with caplog.at_level(logging.WARNING):
        await registry.refresh()
    assert served_and_pinned(registry) == (2, False)
    assert "cannot read pin file" in caplog.text
    pin_path.write_text('{"version": true}')
    await registry.refresh()
    assert served_and_pinned(registry) == (2, False)


async def test_the_pin_file_is_written_atomically_and_only_by_pin_changes(tmp_path: Path) -> None:
    root, pin_path = tmp_path / "bundles", tmp_path / "state" / "pin.json"
    publish(root, 1)
    registry = BundleRegistry(root, Loader(), pin_file=PinFile(pin_path))
    await registry.refresh()
    assert not pin_path.exists()
    await registry.pin(1)
    assert json.loads(pin_path.read_text()) == {"version": 1}
    await registry.unpin()
    assert json.loads(pin_path.read_text()) == {"version": None}
    assert [p.name for p in pin_path.parent.iterdir()] == ["pin.json"]  # no temporary left


def test_settling_freezes_survivors_and_frees_cycles_an_earlier_settle_froze() -> None:
    class Node:
        pass

    try:
        cycle = Node()
        cycle.self = cycle  # type: ignore[attr-defined]
        alive = weakref.ref(cycle)
        settle_memory()  # the cycle is in use: frozen with everything else
        assert gc.get_freeze_count() > 0
        del cycle
        gc.collect()
        assert alive() is not None  # frozen: the collector no longer looks at it
        settle_memory()  # the next settle (after the next swap) unfreezes first
        assert alive() is None
    finally:
        gc.unfreeze()


def _swaps(state: RegistryState) -> list[tuple[object, ...]]:
    return [(s.version, s.previous_version, s.outcome, s.trigger, s.reason) for s in state.swaps]


async def test_swaps_and_failed_loads_are_remembered_newest_first_with_their_trigger(tmp_path: Path) -> None:
    loader = Loader()
    loader.broken = {3}
    for version in (1, 3):
        publish(tmp_path, version)
    registry = BundleRegistry(tmp_path, loader)
    await registry.refresh("start")  # 3 fails, 1 is served
    publish(tmp_path, 4)
    await registry.reload()  # 4 swapped in
    await registry.unpin()  # nothing newer: nothing recorded
    await registry.pin(1)
    reason = f"{tmp_path / '3'}: checksum mismatch for encoder.onnx"
    assert _swaps(await registry.state()) == [
        (1, 4, "swapped", "pin", None),
        (4, 1, "swapped", "reload", None),
        (1, None, "swapped", "start", None),
        (3, None, "failed", "start", reason),
    ]


async def test_the_swap_history_keeps_only_the_newest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A short history: every failed load collects garbage, seconds in a full test session at 50.
    monkeypatch.setattr(registry_module, "SWAP_HISTORY", 4)
    loader = Loader()
    loader.broken = {2}
    for version in (1, 2):
        publish(tmp_path, version)
    registry = BundleRegistry(tmp_path, loader)
    await registry.refresh()  # 2 fails, 1 served: two entries
    for _ in range(6):  # an operator insisting: each pin fails and is recorded
        with pytest.raises(BundleLoadFailed):
            await registry.pin(2)
    swaps = (await registry.state()).swaps
    assert len(swaps) == 4
    assert all((s.version, s.outcome, s.trigger) == (2, "failed", "pin") for s in swaps)
    assert swaps[0].at >= swaps[-1].at
