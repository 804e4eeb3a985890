"""A hot swap that no request notices, with the real parts: `nsprecall serve` (uvicorn), Redis,
ONNX Runtime and hnswlib.

Every version published here is the session's trained bundle with its item ids rewritten to a
version's own id space (``v3:i17``): the encoder, the index and the probe stay valid (index
labels are positions), so a response whose items do not all carry the prefix of the version it
reports mixed two bundles. The load-test users' stored history (plain ids) is unknown to every
version; the encoder still runs on their sessions' context tokens and unknown-item tokens.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import re
import shutil
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import httpx
import numpy as np
from cli_helpers import metric, serve_process, wait_until
from recall_load import RecallLoad

from index.bundle import ENCODER_FILE, POPULARITY_FILE, PROBE_FILE, commit, read_manifest, staging
from index.item_meta import ITEM_META_FILE
from index.vocab import ITEMS_FILE, VOCAB_FILE, Vocabulary

ADMIN_TOKEN = "e2e-admin-token-0123456789"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
WATCH_INTERVAL_S = 0.2
SEED_USERS = 40
LOAD_THREADS = 4
Fault = Literal["checksum", "probe"]


def publish_copy(source: Path, root: Path, version: int, fault: Fault | None = None) -> None:
    """Publish bundle ``source`` again as ``root/<version>`` with item ids prefixed ``v<version>:``.

    ``fault="checksum"`` flips a byte of the encoder after the checksums are taken; ``"probe"``
    keeps every file intact but records probe outputs the encoder does not reproduce. Either
    way the version appears under ``root`` complete, in one rename, like a real publish.
    """
    prefix = f"v{version}:"
    manifest = read_manifest(source)
    fields = manifest.model_dump(by_alias=True, exclude={"version", "files", "created_at"})
    fields["parent_version"] = version - 1 if version > 1 else None
    scratch = root.parent / f"{root.name}-scratch"  # same file system: the final rename is atomic
    with staging(scratch) as stage:
        for name in manifest.files:
            shutil.copy2(source / name, stage / name)
        vocab = Vocabulary.load(source)
        ids = np.asarray([prefix + str(item) for item in vocab.item_ids], dtype=str)
        (stage / ITEMS_FILE).unlink()
        (stage / VOCAB_FILE).unlink()
        dataclasses.replace(vocab, item_ids=ids).save(stage)
        if ITEM_META_FILE in manifest.files:  # its ids must equal the id map's
            meta = json.loads((source / ITEM_META_FILE).read_text())
            meta["item_ids"] = ids.tolist()
            (stage / ITEM_META_FILE).write_text(json.dumps(meta))
        popularity = json.loads((source / POPULARITY_FILE).read_text())
        rewritten = {scene: [prefix + item for item in items] for scene, items in popularity.items()}
        (stage / POPULARITY_FILE).write_text(json.dumps(rewritten))
        if fault == "probe":
            with np.load(source / PROBE_FILE) as probe:
                tokens, user_vec = probe["tokens"], probe["user_vec"]
            with (stage / PROBE_FILE).open("wb") as f:
                np.savez(f, tokens=tokens, user_vec=user_vec[::-1].copy())  # users' vectors swapped
        directory = commit(scratch, stage, fields, version=version)
    if fault == "checksum":
        encoder = bytearray((directory / ENCODER_FILE).read_bytes())
        encoder[len(encoder) // 2] ^= 0xFF
        (directory / ENCODER_FILE).write_bytes(bytes(encoder))
    os.rename(directory, root / str(version))


def seeded_users(world: Path) -> list[str]:
    """The users `--seed-users` loads: the first distinct ones of the event log."""
    with (world / "events.csv").open() as f:
        users = dict.fromkeys(row["user_id"] for row in csv.DictReader(f))
    return list(users)[:SEED_USERS]


@contextmanager
def serve(root: Path, world: Path, redis_url: str, log_path: Path, instance: str) -> Iterator[httpx.Client]:
    """`nsprecall serve` on ``root`` with the first users of ``world`` seeded into Redis."""
    env = {
        "NSP_WATCH_INTERVAL_S": str(WATCH_INTERVAL_S),
        "NSP_ADMIN_TOKEN": ADMIN_TOKEN,
        "NSP_INSTANCE_NAME": instance,
    }
    seed = ["--seed-events", str(world / "events.csv"), "--seed-users", str(SEED_USERS)]
    with serve_process(
        root, redis_url, *seed, env=env, log_path=log_path, ready_timeout=90, client_timeout=30
    ) as client:
        yield client


def read_record(root: Path, instance: str) -> dict[str, Any]:
    record: dict[str, Any] = json.loads((root / ".serving" / f"{instance}.json").read_text())
    return record


def test_five_publishes_under_load_no_request_notices(
    bundle_root: Path, world: Path, redis_url: str, tmp_path: Path
) -> None:
    source, root, log_path = bundle_root / "1", tmp_path / "bundles", tmp_path / "serve.log"
    root.mkdir()
    publish_copy(source, root, 1)
    # Five publishes in a row: 3 has a corrupt encoder file, 5 intact files but a wrong probe.
    plan: list[tuple[int, Fault | None]] = [(2, None), (3, "checksum"), (4, None), (5, "probe"), (6, None)]
    with (
        serve(root, world, redis_url, log_path, "e2e-swap") as client,
        RecallLoad(str(client.base_url), seeded_users(world), LOAD_THREADS) as load,
    ):
        wait_until(lambda: load.count(1) >= 30, 60, "load on bundle 1")
        refused = 0.0
        for version, fault in plan:
            answered_before = len(load.answers)
            publish_copy(source, root, version, fault)
            if fault is None:
                wait_until(lambda v=version: load.count(v) >= 30, 60, f"load served by bundle {version}")
            else:
                refused += 1
                wait_until(
                    lambda r=refused: metric(client, "nsp_bundle_load_failures_total") == r,
                    60,
                    f"bundle {version} to be refused",
                )
                # Keep loading a little while the refused version sits there.
                wait_until(lambda n=answered_before: len(load.answers) >= n + 30, 60, "more load")
        final = client.get("/v1/bundle").json()
        failures = metric(client, "nsp_bundle_load_failures_total")
        swaps = metric(client, "nsp_bundle_swaps_total")
        record = read_record(root, "e2e-swap")
    answers = load.answers
    log = log_path.read_text()

    failed = [a for a in answers if a.status != 200]
    assert not failed, f"{len(failed)} of {len(answers)} requests failed, e.g. {failed[:3]}"
    by_version: Counter[int] = Counter()
    by_source: Counter[str] = Counter()
    versions_seen: dict[int, list[int]] = defaultdict(list)
    for answer in answers:
        assert isinstance(answer.body, dict)
        version = answer.body["bundle_version"]
        ids = [item["item_id"] for item in answer.body["items"]]
        assert len(ids) == answer.k
        mixed = [i for i in ids if not i.startswith(f"v{version}:")]
        assert not mixed, f"a response reporting bundle {version} returned {mixed[:3]}"
        by_version[version] += 1
        by_source[answer.body["source"]] += 1
        versions_seen[answer.thread].append(version)
    assert set(by_version) == {1, 2, 4, 6}, by_version  # the refused versions never answered
    assert by_source["model"] > 0 and by_source["fallback"] > 0, by_source
    for thread, seen in versions_seen.items():
        assert seen == sorted(seen), f"thread {thread} went back to an older bundle"
    assert final["version"] == 6 and final["pinned"] is False
    assert failures == 2.0
    assert swaps == 4.0  # 1 at start-up, then 2, 4 and 6
    assert record["version"] == 6 and record["pinned"] is False
    assert time.time() - record["updated"] < 30
    assert re.search(r"bundle 3 failed to load .*checksum mismatch for encoder.onnx", log)
    assert re.search(r"bundle 5 failed to load .*does not reproduce the probe", log)


def test_operator_rollback_and_pin_take_effect_without_a_restart(
    bundle_root: Path, world: Path, redis_url: str, tmp_path: Path
) -> None:
    source, root, instance = bundle_root / "1", tmp_path / "bundles", "e2e-admin"
    root.mkdir()
    for version in (1, 2, 3):
        publish_copy(source, root, version)
    user = seeded_users(world)[0]

    def recall(client: httpx.Client) -> dict[str, Any]:
        body: dict[str, Any] = client.post("/v1/recall", json={"user_id": user, "k": 20}).json()
        assert body["source"] == "model"
        assert all(item["item_id"].startswith(f"v{body['bundle_version']}:") for item in body["items"])
        return body

    with serve(root, world, redis_url, tmp_path / "serve.log", instance) as client:
        assert client.get("/v1/bundle").json()["version"] == 3
        denied = client.post("/v1/admin/rollback")
        assert denied.status_code == 401 and denied.headers["www-authenticate"] == "Bearer"
        assert client.get("/v1/bundle").json()["version"] == 3

        rolled = client.post("/v1/admin/rollback", headers=ADMIN)
        assert rolled.status_code == 200, rolled.text
        assert rolled.json()["version"] == 2 and rolled.json()["pinned"] is True
        summary = client.get("/v1/bundle").json()
        assert summary["version"] == 2 and summary["pinned"] is True
        assert recall(client)["bundle_version"] == 2
        assert read_record(root, instance)["pinned"] is True

        # The pin holds: a newer publish is not picked up, however many polls go by.
        publish_copy(source, root, 4)
        published_at = time.time()
        wait_until(
            lambda: read_record(root, instance)["updated"] > published_at + 3 * WATCH_INTERVAL_S, 30, "polls"
        )
        assert client.get("/v1/bundle").json()["version"] == 2

        pinned = client.put("/v1/admin/pin", json={"version": 1}, headers=ADMIN)
        assert pinned.json()["version"] == 1 and pinned.json()["pinned"] is True
        assert recall(client)["bundle_version"] == 1
        assert client.put("/v1/admin/pin", json={"version": 99}, headers=ADMIN).status_code == 404

        unpinned = client.delete("/v1/admin/pin", headers=ADMIN)
        assert unpinned.json()["version"] == 4 and unpinned.json()["pinned"] is False
        assert recall(client)["bundle_version"] == 4
        assert read_record(root, instance) | {"updated": 0} == {"version": 4, "pinned": False, "updated": 0}
        assert metric(client, "nsp_bundle_load_failures_total") == 0.0
    log = (tmp_path / "serve.log").read_text()
    assert "admin rollback from 127.0.0.1: serving bundle 2 (pinned)" in log
    assert not (root / ".serving" / f"{instance}.json").exists()  # withdrawn at shutdown
