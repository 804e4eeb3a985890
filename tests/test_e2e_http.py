"""The whole product for real: `nsprecall serve` (uvicorn) on a published bundle, real Redis,
real ONNX Runtime and hnswlib; then a second bundle published while it serves."""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cli_helpers import ROOT, run_cli, serve_process, wait_until


@pytest.fixture(scope="module")
def served(
    bundle_root: Path, world: Path, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[httpx.Client, Path]]:
    root = tmp_path_factory.mktemp("served_bundles")
    shutil.copytree(bundle_root / "1", root / "1")
    seed = ["--seed-events", str(world / "events.csv"), "--seed-users", "40"]
    with serve_process(root, redis_url, *seed, env={"NSP_WATCH_INTERVAL_S": "0.5"}) as client:
        yield client, root


def seeded_user(world: Path) -> tuple[str, set[str]]:
    """The first user in the log (seeded) and every item in their history."""
    with (world / "events.csv").open() as f:
        rows = list(csv.DictReader(f))
    user = rows[0]["user_id"]
    return user, {r["item_id"] for r in rows if r["user_id"] == user}


def test_recall_for_a_seeded_user_uses_the_model(served: tuple[httpx.Client, Path], world: Path) -> None:
    client, _ = served
    user, history = seeded_user(world)
    response = client.post("/v1/recall", json={"user_id": user, "k": 50, "scene": "homepage"})
    assert response.status_code == 200
    body = response.json()
    assert body["source"] == "model" and body["degraded"] is False
    assert body["bundle_version"] == 1
    ids = [item["item_id"] for item in body["items"]]
    assert len(ids) == 50 == len(set(ids))
    assert not set(ids) & history  # exclude_seen defaults to true
    scores = [item["score"] for item in body["items"]]
    assert scores == sorted(scores, reverse=True)


def test_events_then_recall_for_a_new_user(served: tuple[httpx.Client, Path]) -> None:
    client, _ = served
    user = f"new-{uuid.uuid4().hex[:6]}"
    events = [
        {
            "user_id": user,
            "item_id": f"i{i}",
            "action": "click",
            "scene": "search",
            "ts": 1767225600 + i,
            "request_id": f"{user}-r{i // 3}",
        }
        for i in range(9)
    ]
    accepted = client.post("/v1/events", json={"events": events})
    assert accepted.status_code == 202 and accepted.json()["accepted"] == 9
    sessions = client.get(f"/v1/users/{user}/sessions").json()
    assert len(sessions["sessions"]) == 3
    body = client.post("/v1/recall", json={"user_id": user, "k": 10, "exclude_item_ids": ["i100"]}).json()
    assert body["source"] == "model" and len(body["items"]) == 10
    assert {"i0", "i1", "i100"}.isdisjoint(item["item_id"] for item in body["items"])


def test_unknown_user_gets_the_popularity_fallback(served: tuple[httpx.Client, Path]) -> None:
    client, _ = served
    body = client.post("/v1/recall", json={"user_id": "nobody-ever", "k": 5, "scene": "search"}).json()
    assert body["source"] == "fallback" and len(body["items"]) == 5


@pytest.mark.parametrize(
    "payload",
    [
        {"user_id": "u1", "k": 0},
        {"user_id": "u1", "k": 1001},
        {"user_id": ""},
        {"k": 3},
        {"user_id": "u", "x": 1},
    ],
)
def test_bad_recall_requests_are_4xx(served: tuple[httpx.Client, Path], payload: dict[str, object]) -> None:
    client, _ = served
    response = client.post("/v1/recall", json=payload)
    assert response.status_code == 422, response.text


def test_metrics_expose_stage_latencies(served: tuple[httpx.Client, Path]) -> None:
    client, _ = served
    client.post("/v1/recall", json={"user_id": "nobody", "k": 3})
    text = client.get("/metrics").text
    for stage in ("session_fetch", "encode", "ann", "postprocess"):
        assert f'stage="{stage}"' in text


def test_publishing_bundle_2_swaps_without_restart(
    served: tuple[httpx.Client, Path], trained: tuple[Path, str], world: Path
) -> None:
    client, root = served
    assert client.get("/v1/bundle").json()["version"] == 1
    run_cli("publish", "--run", str(trained[0]), "--bundles", str(root))
    wait_until(lambda: client.get("/v1/bundle").json()["version"] == 2, 60, "bundle 2 to be served")
    user, _ = seeded_user(world)
    body = client.post("/v1/recall", json={"user_id": user, "k": 20}).json()
    assert body["bundle_version"] == 2 and len(body["items"]) == 20
    assert client.get("/v1/bundle").json()["parent_version"] == 1


def test_cli_module_entry_is_importable_without_torch() -> None:
    # The serving image has no torch: `nsprecall serve` must not import it.
    code = "import sys, nsprecall.cli, service.app, service.server; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
