import json
import os
from pathlib import Path

import pytest
from dummy_bundles import publish_dummy

from index import bundle
from index.bundle import BundleError


def test_versions_increase_and_manifest_lists_checksums(tmp_path: Path) -> None:
    first = publish_dummy(tmp_path)
    second = publish_dummy(tmp_path, b"other")
    assert (first.name, second.name) == ("1", "2")
    assert bundle.list_versions(tmp_path) == [1, 2]
    manifest = bundle.read_manifest(second)
    assert manifest.version == 2
    assert manifest.files["encoder.onnx"] == bundle.sha256_file(second / "encoder.onnx")
    bundle.verify_files(second, manifest)


def test_incomplete_directories_are_not_bundles(tmp_path: Path) -> None:
    publish_dummy(tmp_path)
    (tmp_path / "5").mkdir()  # no manifest: a copy still in progress
    (tmp_path / ".staging-123-1").mkdir()
    (tmp_path / "notes").mkdir()
    assert bundle.latest_version(tmp_path) == 1


def test_corrupt_file_fails_verification(tmp_path: Path) -> None:
    directory = publish_dummy(tmp_path)
    (directory / "encoder.onnx").write_bytes(b"dat")
    with pytest.raises(BundleError, match="checksum"):
        bundle.verify_files(directory, bundle.read_manifest(directory))


def test_unknown_schema_is_refused(tmp_path: Path) -> None:
    directory = publish_dummy(tmp_path)
    raw = json.loads((directory / bundle.MANIFEST).read_text())
    raw["schema_version"] = 99
    (directory / bundle.MANIFEST).write_text(json.dumps(raw))
    with pytest.raises(BundleError, match="schema"):
        bundle.read_manifest(directory)


def test_existing_version_is_never_overwritten(tmp_path: Path) -> None:
    publish_dummy(tmp_path, b"original")
    with pytest.raises(BundleError, match="already exists"):
        publish_dummy(tmp_path, b"replacement", version=1)
    assert (tmp_path / "1" / "encoder.onnx").read_bytes() == b"original"
    assert [p.name for p in tmp_path.iterdir()] == ["1"]  # no staging leftovers


def test_failed_publish_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), bundle.staging(tmp_path) as stage:
        (stage / "encoder.onnx").write_bytes(b"x")
        raise RuntimeError("export failed")
    assert list(tmp_path.iterdir()) == []


def _serving_record(root: Path, name: str, version: int, updated: float) -> None:
    (root / bundle.SERVING_DIR).mkdir(exist_ok=True)
    record = {"version": version, "pinned": False, "updated": updated}
    (root / bundle.SERVING_DIR / f"{name}.json").write_text(json.dumps(record))


def test_prune_keeps_the_newest_and_every_version_a_live_instance_serves(tmp_path: Path) -> None:
    for _ in range(6):
        publish_dummy(tmp_path)
    now = bundle.now_timestamp()
    _serving_record(tmp_path, "pod-a", 2, now)  # rolled back to 2: must survive
    _serving_record(tmp_path, "pod-gone", 1, now - 2 * bundle.SERVING_RECORD_MAX_AGE_S)  # stale
    (tmp_path / bundle.SERVING_DIR / "junk.json").write_text("{not json")
    stale, fresh = tmp_path / ".staging-1-1", tmp_path / ".staging-2-2"
    stale.mkdir()
    fresh.mkdir()
    old = now - bundle.STALE_STAGING_S - 60
    os.utime(stale, (old, old))
    deleted = bundle.prune(tmp_path, keep=2, protect={3})
    assert not stale.exists() and fresh.exists()  # a crashed publisher's leftovers only
    assert deleted == [1, 4]
    assert bundle.list_versions(tmp_path) == [2, 3, 5, 6]
    assert not (tmp_path / "1").exists()


def test_prune_keeps_at_least_one(tmp_path: Path) -> None:
    publish_dummy(tmp_path)
    with pytest.raises(ValueError, match="at least 1"):
        bundle.prune(tmp_path, keep=0)
    assert bundle.prune(tmp_path, keep=1) == []
