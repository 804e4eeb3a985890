"""Corrupt and partial bundles, with the real parts: bundles on disk (``write_real_bundle``),
``LoadedBundle``, ``BundleRegistry``, a publisher process killed for real, and `nsprecall serve`
under recall load.

Every fault is published the way a real publish lands, complete and in one rename, as the
newest version (the i2i faults add the channels to a legacy bundle's manifest, as a publish of
a multi-channel bundle would). Each must be refused with one log line naming the version, the file and the
reason, counted in ``nsp_bundle_load_failures_total``, and the served bundle must stay. A
killed publisher's staging directory must be invisible to the service and removed by the next
publish only once its publisher is gone.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import metric, serve_process, wait_until
from fakes import event_body, history, unit_rows, write_real_bundle
from recall_load import RecallLoad

from index import bundle
from index.ann import ItemIndex
from index.bundle import (
    ENCODER_FILE,
    INDEX_FILE,
    MANIFEST,
    POPULARITY_FILE,
    PROBE_FILE,
    STAGING_PREFIX,
    BundleError,
    ChannelsSpec,
    HnswParams,
    commit,
    read_manifest,
    staging,
)
from index.i2i import I2I_FILE, I2IParams, ItemToItem
from index.vocab import ITEMS_FILE, VOCAB_FILE
from service.registry import BundleRegistry
from service.runtime import LoadedBundle

pytest.importorskip("onnx")

TESTS = Path(__file__).resolve().parent
N_ITEMS, DIM = 200, 8


def rewrite_npz(name: str, change: Callable[[dict[str, np.ndarray]], None]) -> Callable[[Path], None]:
    """A ``staged`` fault: the arrays of the bundle's ``name`` changed in place by ``change``."""

    def stage(directory: Path) -> None:
        with np.load(directory / name, allow_pickle=False) as data:
            arrays = {key: data[key].copy() for key in data.files}
        change(arrays)
        with (directory / name).open("wb") as f:
            np.savez(f, **arrays)

    return stage


def unlist(*names: str) -> Callable[[Path], None]:
    """A ``staged`` fault: ``names`` left out of the bundle (and so out of its manifest)."""

    def stage(directory: Path) -> None:
        for name in names:
            (directory / name).unlink()

    return stage


def _truncate(name: str) -> Callable[[Path], None]:
    def damage(directory: Path) -> None:
        path = directory / name
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])

    return damage


def _flip_middle_byte(directory: Path) -> None:
    data = bytearray((directory / INDEX_FILE).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (directory / INDEX_FILE).write_bytes(bytes(data))


def _newer_schema(directory: Path) -> None:
    raw = json.loads((directory / MANIFEST).read_text())
    raw["schema_version"] = bundle.SCHEMA_VERSION + 1
    (directory / MANIFEST).write_text(json.dumps(raw))


def _index_of_another_dim(stage: Path) -> None:
    vectors = unit_rows(np.random.default_rng(3), N_ITEMS, 2 * DIM)
    ItemIndex.build(vectors, HnswParams(space="ip")).save(stage / INDEX_FILE)


def _probe_of_other_users(stage: Path) -> None:
    with np.load(stage / PROBE_FILE) as probe:
        tokens, user_vec = probe["tokens"], probe["user_vec"]
    with (stage / PROBE_FILE).open("wb") as f:
        np.savez(f, tokens=tokens, user_vec=user_vec[::-1].copy())


def i2i_table(n_items: int = N_ITEMS) -> ItemToItem:
    """A valid table: every item's neighbours are the next two labels."""
    rows = np.arange(n_items)
    indices = np.stack([(rows + 1) % n_items, (rows + 2) % n_items], axis=1).reshape(-1).astype(np.int32)
    weights = np.tile(np.asarray([1.0, 0.5], dtype=np.float32), n_items)
    return ItemToItem(np.arange(0, 2 * n_items + 1, 2, dtype=np.int64), indices, weights)


WITH_I2I: dict[str, object] = {
    "channels": ChannelsSpec(i2i=I2IParams()).model_dump()
}  # the manifest of a bundle with i2i


def _i2i(table: ItemToItem) -> Callable[[Path], None]:
    def stage(directory: Path) -> None:
        table.save(directory / I2I_FILE)

    return stage


def _then(*steps: Callable[[Path], None]) -> Callable[[Path], None]:
    def run(directory: Path) -> None:
        for step in steps:
            step(directory)

    return run


def _flip_middle_byte_of_i2i(directory: Path) -> None:
    data = bytearray((directory / I2I_FILE).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (directory / I2I_FILE).write_bytes(bytes(data))


def _non_finite_i2i(directory: Path) -> None:
    table = i2i_table()
    table.weights[7] = np.nan
    table.save(directory / I2I_FILE)


@dataclasses.dataclass(frozen=True)
class Fault:
    name: str
    reason: str  # regex the refusal's log line must match (it names the file)
    staged: Callable[[Path], None] | None = None  # before the checksums: a consistent bundle
    damage: Callable[[Path], None] | None = None  # after publishing: the files no longer match
    manifest: dict[str, object] = dataclasses.field(default_factory=dict)


FAULTS = [
    *(
        Fault(f"truncated {name}", rf"checksum mismatch for {re.escape(name)}", damage=_truncate(name))
        for name in (ENCODER_FILE, INDEX_FILE, ITEMS_FILE, VOCAB_FILE, POPULARITY_FILE, PROBE_FILE)
    ),
    Fault("truncated manifest", r"unreadable manifest\.json", damage=_truncate(MANIFEST)),
    Fault("missing index", r"missing file items\.hnsw", damage=lambda d: (d / INDEX_FILE).unlink()),
    Fault("flipped byte", r"checksum mismatch for items\.hnsw", damage=_flip_middle_byte),
    Fault(
        "index of another dim",
        rf"unreadable items\.hnsw: index vectors have dim {2 * DIM}, expected {DIM}",
        staged=_index_of_another_dim,
    ),
    Fault(
        "manifest dim",
        rf"encoder\.onnx: encoder output dim {DIM} != embedding_dim {2 * DIM}",
        manifest={"embedding_dim": 2 * DIM},
    ),
    Fault(
        "newer schema",
        rf"manifest\.json has schema {bundle.SCHEMA_VERSION + 1}, this build reads {bundle.SCHEMA_VERSION}",
        damage=_newer_schema,
    ),
    Fault(
        "wrong probe",
        r"encoder\.onnx does not reproduce the probe in probe\.npz",
        staged=_probe_of_other_users,
    ),
    # The i2i table: the checksum catches a file damaged after publishing; a file that was
    # already damaged when its checksum was taken (a bad export) must be caught by its reader.
    Fault(
        "corrupt i2i",
        r"checksum mismatch for i2i\.npz",
        staged=_i2i(i2i_table()),
        damage=_flip_middle_byte_of_i2i,
        manifest=WITH_I2I,
    ),
    Fault(
        "truncated i2i, checksum of the truncated file",
        r"unreadable i2i\.npz: File is not a zip file",
        staged=_then(_i2i(i2i_table()), _truncate(I2I_FILE)),
        manifest=WITH_I2I,
    ),
    Fault(
        "corrupt i2i, checksum of the corrupt file",
        r"unreadable i2i\.npz: Bad CRC-32",
        staged=_then(_i2i(i2i_table()), _flip_middle_byte_of_i2i),
        manifest=WITH_I2I,
    ),
    Fault(
        "i2i of another catalog",
        rf"unreadable i2i\.npz: i2i table has {N_ITEMS - 1} rows, the catalog {N_ITEMS} items",
        staged=_i2i(i2i_table(N_ITEMS - 1)),
        manifest=WITH_I2I,
    ),
    Fault(
        "i2i weights not finite",
        r"unreadable i2i\.npz: i2i weights are not all finite",
        staged=_non_finite_i2i,
        manifest=WITH_I2I,
    ),
    Fault(
        "i2i configured without the file",
        r"manifest configures the i2i channel but does not list i2i\.npz",
        manifest=WITH_I2I,
    ),
]


def publish_faulty(good: Path, root: Path, version: int, fault: Fault) -> Path:
    """Publish ``good`` again as ``root/<version>`` with ``fault``; it appears in one rename."""
    manifest = read_manifest(good)
    fields = manifest.model_dump(by_alias=True, exclude={"version", "files", "created_at"})
    fields.update(fault.manifest)
    scratch = root.parent / f"{root.name}-scratch"  # same file system: the rename is atomic
    with staging(scratch) as stage:
        for name in manifest.files:
            shutil.copy2(good / name, stage / name)
        if fault.staged is not None:
            fault.staged(stage)
        directory = commit(scratch, stage, fields, version=version)
    if fault.damage is not None:
        fault.damage(directory)
    target = root / str(version)
    root.mkdir(parents=True, exist_ok=True)
    os.rename(directory, target)
    return target


def failures(registry: BundleRegistry) -> float | None:
    return registry.metrics.registry.get_sample_value("nsp_bundle_load_failures_total")


async def refused_while_the_served_one_stays(
    good: Path, tmp_path: Path, fault: Fault, caplog: pytest.LogCaptureFixture
) -> None:
    """Serve ``good`` as version 1, publish it again as 2 with ``fault``, and check that 2 is
    refused with ``fault.reason`` (a ``BundleError``; one single-line error log naming it, one
    counted failure) while 1 keeps serving: the check every corrupt-file test makes."""
    root = tmp_path / "bundles"
    shutil.copytree(good, root / "1")
    registry = BundleRegistry(root, LoadedBundle.load)
    await registry.refresh()
    served = registry.current()
    assert served is not None and served.version == 1

    faulty = publish_faulty(good, root, 2, fault)
    with pytest.raises(BundleError, match=fault.reason):
        LoadedBundle.load(faulty)
    with caplog.at_level(logging.INFO, logger="service.registry"):
        assert await registry.refresh() is None
    assert registry.current() is served
    assert failures(registry) == 1.0
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "\n" not in errors[0], errors
    refusal = rf"^bundle 2 failed to load \(attempt \d.*\), keeping bundle 1: .*{fault.reason}"
    assert re.search(refusal, errors[0]), errors[0]


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_real_bundle(tmp_path_factory.mktemp("good"), 1, n_items=N_ITEMS, dim=DIM)


@pytest.fixture(scope="module")
def good_with_i2i(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A valid multi-channel bundle: the channels in its manifest and a valid ``i2i.npz``."""
    spec = ChannelsSpec(i2i=I2IParams())
    root = tmp_path_factory.mktemp("good-i2i")
    return write_real_bundle(root, 1, n_items=N_ITEMS, dim=DIM, channels=spec, i2i=i2i_table())


pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.parametrize("fault", FAULTS, ids=[f.name for f in FAULTS])
async def test_a_faulty_bundle_is_refused_logged_and_counted_and_the_served_one_stays(
    fault: Fault, good: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "bundles"
    shutil.copytree(good, root / "1")
    registry = BundleRegistry(root, LoadedBundle.load)
    await registry.refresh()
    served = registry.current()
    assert served is not None and served.version == 1

    faulty = publish_faulty(good, root, 2, fault)
    with pytest.raises(BundleError, match=fault.reason):  # a BundleError, nothing else
        LoadedBundle.load(faulty)
    with caplog.at_level(logging.INFO, logger="service.registry"):
        assert await registry.refresh() is None
        assert await registry.reload() is None  # an operator's reload retries it at once
    assert registry.current() is served
    assert failures(registry) == 2.0
    assert registry.metrics.registry.get_sample_value("nsp_bundle_version") == 1.0
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 2, errors
    for line in errors:
        assert "\n" not in line
        assert re.search(
            rf"^bundle 2 failed to load \(attempt \d.*\), keeping bundle 1: .*{fault.reason}", line
        )


@pytest.mark.parametrize("name", [ENCODER_FILE, INDEX_FILE, ITEMS_FILE, VOCAB_FILE, PROBE_FILE])
def test_checksums_are_verified_before_any_reader_opens_a_file(
    name: str, good: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """hnswlib, ONNX Runtime and numpy trust their input; a truncated file must not reach them."""
    opened: list[str] = []
    monkeypatch.setattr("service.runtime.Vocabulary.load", lambda *a, **k: opened.append("vocab"))
    monkeypatch.setattr("service.runtime._open_encoder", lambda *a, **k: opened.append("onnx"))
    monkeypatch.setattr("service.runtime.ItemIndex.load", lambda *a, **k: opened.append("hnswlib"))
    faulty = publish_faulty(good, tmp_path / "bundles", 2, Fault("t", "", damage=_truncate(name)))
    with pytest.raises(BundleError, match=f"checksum mismatch for {re.escape(name)}"):
        LoadedBundle.load(faulty)
    assert opened == []


def test_a_valid_i2i_table_loads_and_a_damaged_one_is_refused_before_numpy_reads_it(
    good: Path, good_with_i2i: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded = LoadedBundle.load(good_with_i2i)
    assert loaded.i2i is not None and loaded.i2i.n_items == N_ITEMS and loaded.i2i.nnz == 2 * N_ITEMS
    assert LoadedBundle.load(good).i2i is None  # a legacy bundle has no table and needs none
    opened: list[str] = []
    monkeypatch.setattr("service.runtime.ItemToItem.load", lambda *a, **k: opened.append("i2i"))
    fault = Fault("t", "", staged=_i2i(i2i_table()), damage=_truncate(I2I_FILE), manifest=WITH_I2I)
    with pytest.raises(BundleError, match=r"checksum mismatch for i2i\.npz"):
        LoadedBundle.load(publish_faulty(good, tmp_path / "bundles", 2, fault))
    assert opened == []


def test_hnswlib_raises_rather_than_crashes_on_a_truncated_index(good: Path, tmp_path: Path) -> None:
    """Defence in depth behind the checksum: every cut of a real index file, in a child process
    (a segfault there fails this test instead of killing pytest)."""
    size = (good / INDEX_FILE).stat().st_size
    cuts = sorted({0, 1, 47, 48, 100, size // 3, size // 2, size - 64, size - 1})
    script = """
import sys
from pathlib import Path
from index.ann import ItemIndex
from index.bundle import HnswParams
data = Path(sys.argv[1]).read_bytes()
for cut in map(int, sys.argv[3:]):
    path = Path(sys.argv[2]) / f"cut-{cut}.hnsw"
    path.write_bytes(data[:cut])
    try:
        ItemIndex.load(path, dim=8, count=200, params=HnswParams(space="ip"))
    except (RuntimeError, ValueError) as exc:
        print(cut, "refused:", exc)
    else:
        print(cut, "LOADED")
"""
    args = [str(good / INDEX_FILE), str(tmp_path), *map(str, cuts)]
    done = subprocess.run(
        [sys.executable, "-c", script, *args], cwd=TESTS.parent, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, f"exit {done.returncode}: {done.stderr[-2000:]}"
    lines = done.stdout.splitlines()
    assert len(lines) == len(cuts) and all("refused:" in line for line in lines), done.stdout


# --- a publisher killed mid-publish ---------------------------------------------------------

KILLED_PUBLISHER = """
import sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[3])
import fakes

def stop_before_the_manifest(root, stage, *args, **kwargs):
    Path(sys.argv[2]).write_text(stage.name)  # every file is staged: tell the test, then wait
    time.sleep(600)

fakes.commit = stop_before_the_manifest
fakes.write_real_bundle(Path(sys.argv[1]), n_items=200, dim=8)
"""


@contextmanager
def publisher_stuck_in_staging(root: Path, marker: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """A real publisher process (``write_real_bundle``: ``staging`` then ``commit``) stopped
    with every file staged; yields it and its staging directory, and kills it at the end."""
    command = [sys.executable, "-c", KILLED_PUBLISHER, str(root), str(marker), str(TESTS)]
    process = subprocess.Popen(command, cwd=TESTS.parent, stderr=subprocess.PIPE)
    try:
        wait_until(
            lambda: marker.exists() and marker.read_text() != "", 60, "the publisher to stage its files"
        )
        yield process, root / marker.read_text()
    finally:
        process.kill()
        process.wait(timeout=10)


def _age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    for item in [*path.iterdir(), path]:
        os.utime(item, (then, then))


async def test_a_killed_publishers_staging_is_ignored_then_removed_by_the_next_publish(
    good: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "bundles"
    shutil.copytree(good, root / "1")
    registry = BundleRegistry(root, LoadedBundle.load)
    await registry.refresh()

    with publisher_stuck_in_staging(root, tmp_path / "marker") as (publisher, stage):
        assert stage.name.startswith(STAGING_PREFIX)
        assert {ENCODER_FILE, INDEX_FILE, PROBE_FILE} <= {p.name for p in stage.iterdir()}
        # Alive: kept even when it looks idle for longer than any threshold, by prune too.
        _age(stage, 10 * bundle.STALE_STAGING_S)
        assert bundle.remove_stale_staging(root) == []
        assert bundle.prune(root, keep=1) == []
        assert stage.is_dir()
        assert await registry.refresh() is None  # invisible to the service: not a version
        publisher.send_signal(signal.SIGKILL)
        publisher.wait(timeout=10)
    assert stage.is_dir()  # SIGKILL: the publisher's own clean-up never ran

    with caplog.at_level(logging.WARNING, logger="index.bundle"):
        published = write_real_bundle(root, seed=1)  # the next publish run on this machine
    assert not stage.exists()
    assert sorted(p.name for p in root.iterdir()) == ["1", "2"]
    assert published == root / "2"
    removals = [r.getMessage() for r in caplog.records if r.name == "index.bundle"]
    assert removals == [
        f"removed staging directory {stage.name} left by a publisher that did not finish: "
        f"its publisher (pid {publisher.pid}) is gone"
    ]
    swapped = await registry.refresh()
    assert swapped is not None and swapped.version == 2
    assert failures(registry) == 0.0


def test_staging_from_another_machine_is_removed_only_after_it_went_quiet(tmp_path: Path) -> None:
    """Its pid means nothing here: only the time since anything in it changed counts."""
    foreign = tmp_path / f"{STAGING_PREFIX}0123456789abcdef4026531836-{os.getpid()}-1.0"
    foreign.mkdir()
    (foreign / INDEX_FILE).write_bytes(b"being written")
    _age(foreign, 2 * bundle.STALE_STAGING_S)
    os.utime(foreign / INDEX_FILE)  # a large file still growing: the directory's mtime is old
    assert bundle.remove_stale_staging(tmp_path) == []
    _age(foreign, bundle.STALE_STAGING_S + 60)
    assert bundle.remove_stale_staging(tmp_path) == [foreign.name]
    assert list(tmp_path.iterdir()) == []


# --- end to end: `nsprecall serve` under load while every fault is published in turn ---------

LOAD_THREADS = 3
USERS = [f"fault-user-{n}" for n in range(8)]


def test_serve_under_load_refuses_every_faulty_publish_and_fails_no_request(
    good: Path, good_with_i2i: Path, tmp_path: Path, redis_url: str
) -> None:
    """Bundle 1 serves every channel, i2i included, while the faults (corrupt i2i files among
    them) are published over it."""
    root, log_path = tmp_path / "bundles", tmp_path / "serve.log"
    shutil.copytree(good_with_i2i, root / "1")
    env = {"NSP_WATCH_INTERVAL_S": "0.2", "NSP_INSTANCE_NAME": "e2e-faults"}
    with serve_process(root, redis_url, env=env, log_path=log_path, client_timeout=30) as client:
        for user in USERS:
            events = history(user, [f"item-{(7 * n + len(user)) % N_ITEMS:04d}" for n in range(6)])
            assert (
                client.post("/v1/events", json={"events": [event_body(e) for e in events]}).status_code == 202
            )
        assert client.get("/v1/admin/bundle").status_code == 403  # no NSP_ADMIN_TOKEN: disabled
        with RecallLoad(str(client.base_url), USERS, LOAD_THREADS) as load:
            wait_until(lambda: len(load) >= 30, 30, "load on bundle 1")
            for version, fault in enumerate(FAULTS, start=2):
                publish_faulty(good, root, version, fault)
                wait_until(
                    lambda v=version: f"bundle {v} failed to load" in log_path.read_text(),
                    30,
                    f"bundle {version} ({fault.name}) to be refused",
                    poll_s=0.05,
                )
                answered = len(load)
                wait_until(lambda n=answered: len(load) >= n + 10, 30, "more load")
            # A publisher killed with every file staged, in the bundle root being served.
            with publisher_stuck_in_staging(root, tmp_path / "marker") as (_, stage):
                pass
            assert stage.is_dir()
            record = root / ".serving" / "e2e-faults.json"
            killed_at = time.time()
            wait_until(lambda: json.loads(record.read_text())["updated"] > killed_at + 1, 30, "more polls")
            summary = client.get("/v1/bundle").json()
            counted = metric(client, "nsp_bundle_load_failures_total")
            swaps = metric(client, "nsp_bundle_swaps_total")
        answers = load.answers
    log = log_path.read_text()

    failed = [a for a in answers if a.status != 200]
    assert not failed, f"{len(failed)} of {len(answers)} requests failed, e.g. {failed[:3]}"
    assert {a.version for a in answers} == {1}
    assert summary["version"] == 1 and swaps == 1.0
    refusals = [line for line in log.splitlines() if re.search(r"bundle \d+ failed to load", line)]
    assert counted == len(refusals) >= len(FAULTS)  # a retry after the back-off is logged and counted too
    for version, fault in enumerate(FAULTS, start=2):
        mine = [line for line in refusals if f"bundle {version} failed to load" in line]
        assert mine, fault.name
        assert all(re.search(f"keeping bundle 1: .*{fault.reason}", line) for line in mine), mine
    assert "Traceback" not in log
    # The i2i channel served throughout: a refused i2i file never reached the running bundle.
    from_i2i = sum(
        1 for a in answers if isinstance(a.body, dict) for e in a.body["items"] if "i2i" in e["channels"]
    )
    assert from_i2i > 0
    degraded = sum(1 for a in answers if isinstance(a.body, dict) and a.body["degraded"])
    counts = f"{len(refusals)} refusals logged, {counted:.0f} counted, {from_i2i} items from i2i"
    print(f"\n{len(answers)} recalls, {len(failed)} failed, {degraded} degraded; {counts}")
