"""The HTTP surface: events, sessions, bundle summary, probes, metrics, validation and errors."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import httpx
import pytest
from fakes import FailingStore, FakeBundle, history, post_events, registry_of, serving

from index.bundle import MANIFEST
from index.features import Event
from service.app import create_app
from service.registry import BundleRegistry
from service.settings import Settings
from service.store import InMemorySessionStore

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def event(**overrides: Any) -> dict[str, Any]:
    return {
        "user_id": "alice",
        "item_id": "item-0001",
        "action": "click",
        "scene": "default",
        "ts": 1_700_000_000,
        "request_id": "r1",
        **overrides,
    }


async def test_events_are_acknowledged_and_readable(tmp_path: Path) -> None:
    store = InMemorySessionStore()
    async with serving(tmp_path, FakeBundle(), store=store) as client:
        response = await client.post("/v1/events", json={"events": [event(), event(user_id="bob", ts=5)]})
        metrics = (await client.get("/metrics")).text
    assert response.status_code == 202
    assert response.json() == {"accepted": 2}
    assert [e.item_id for e in await store.recent("alice", 10)] == ["item-0001"]
    assert [e.ts for e in await store.recent("bob", 10)] == [5]
    assert "nsp_events_ingested_total 2.0" in metrics


async def test_events_with_store_down_are_503_with_a_reason(tmp_path: Path) -> None:
    async with serving(tmp_path, FakeBundle(), store=FailingStore()) as client:
        response = await client.post("/v1/events", json={"events": [event()]})
        sessions = await client.get("/v1/users/alice/sessions")
        metrics = (await client.get("/metrics")).text
    assert response.status_code == 503
    assert response.json()["error"] == "session_store_unavailable"
    assert "connection refused" in response.json()["detail"]
    assert response.headers["retry-after"] == "1"
    assert sessions.status_code == 503
    assert 'nsp_session_store_errors_total{operation="append"} 1.0' in metrics


INVALID_RECALLS = {
    "k=0": {"user_id": "u", "k": 0},
    "k=1001": {"user_id": "u", "k": 1001},
    "k not a number": {"user_id": "u", "k": "many"},
    "empty user_id": {"user_id": ""},
    "long user_id": {"user_id": "u" * 129},
    "no user_id": {"k": 5},
    "extra field": {"user_id": "u", "kk": 5},
    "long scene": {"user_id": "u", "scene": "s" * 65},
    "too many exclusions": {"user_id": "u", "exclude_item_ids": [f"i{n}" for n in range(1001)]},
    "long query": {"user_id": "u", "query": "q" * 513},
}


@pytest.mark.parametrize("body", INVALID_RECALLS.values(), ids=INVALID_RECALLS.keys())
async def test_invalid_recall_is_422_with_the_reason(tmp_path: Path, body: dict[str, Any]) -> None:
    async with serving(tmp_path, FakeBundle()) as client:
        response = await client.post("/v1/recall", json=body)
    assert response.status_code == 422
    assert response.json()["error"] == "invalid_request"
    assert response.json()["detail"][0]["msg"]


INVALID_EVENTS = {
    "empty batch": {"events": []},
    "too many events": {"events": [event(ts=n + 1) for n in range(1001)]},
    "bad action": {"events": [event(action="like")]},
    "ts zero": {"events": [event(ts=0)]},
    "ts not an int": {"events": [event(ts="yesterday")]},
    "empty user_id": {"events": [event(user_id="")]},
    "missing request_id": {"events": [{k: v for k, v in event().items() if k != "request_id"}]},
    "extra field": {"events": [event(price=3)]},
}


@pytest.mark.parametrize("body", INVALID_EVENTS.values(), ids=INVALID_EVENTS.keys())
async def test_invalid_events_are_422_and_nothing_is_written(tmp_path: Path, body: dict[str, Any]) -> None:
    store = InMemorySessionStore()
    body = {"events": [event(item_id="good-one"), *body["events"]]} if body["events"] else body
    async with serving(tmp_path, FakeBundle(), store=store) as client:
        response = await client.post("/v1/events", json=body)
    assert response.status_code == 422
    assert await store.recent("alice", 10) == []


async def test_malformed_json_is_a_4xx(tmp_path: Path) -> None:
    async with serving(tmp_path, FakeBundle()) as client:
        response = await client.post(
            "/v1/recall", content=b"{not json", headers={"content-type": "application/json"}
        )
    assert response.status_code == 422


async def test_deployment_limits_are_422(tmp_path: Path) -> None:
    async with serving(
        tmp_path, FakeBundle(), default_k=10, max_k=50, max_events_per_batch=2, max_exclude_ids=1
    ) as client:
        too_big_k = await client.post("/v1/recall", json={"user_id": "u", "k": 51})
        too_many_ids = await client.post("/v1/recall", json={"user_id": "u", "exclude_item_ids": ["a", "b"]})
        too_many_events = await client.post("/v1/events", json={"events": [event(), event(), event()]})
    for response in (too_big_k, too_many_ids, too_many_events):
        assert response.status_code == 422
        assert response.json()["error"] == "limit_exceeded"
    assert "max_k=50" in too_big_k.json()["detail"]


async def test_sessions_are_grouped_newest_first(tmp_path: Path) -> None:
    events = [
        Event("alice", "item-0001", 100, "exposure", "feed", "r1"),
        Event("alice", "item-0001", 101, "cart", "feed", "r1"),
        Event("alice", "item-0002", 102, "exposure", "feed", "r1"),
        Event("alice", "item-0003", 200, "click", "search", "r2"),
        Event("alice", "item-0004", 300, "pay", "default", "r3"),
    ]
    async with serving(tmp_path, FakeBundle()) as client:
        await post_events(client, events)
        response = await client.get("/v1/users/alice/sessions", params={"limit": 2})
        unknown = await client.get("/v1/users/nobody/sessions")
        bad_limit = await client.get("/v1/users/alice/sessions", params={"limit": 0})
    sessions = response.json()["sessions"]
    assert [s["request_id"] for s in sessions] == ["r3", "r2"]
    assert sessions[1] == {
        "request_id": "r2",
        "ts": 200,
        "scene": "search",
        "items": [{"item_id": "item-0003", "action": "click"}],
    }
    assert unknown.json() == {"user_id": "nobody", "sessions": []}
    assert bad_limit.status_code == 422


async def test_bundle_summary_describes_the_served_bundle(tmp_path: Path) -> None:
    async with serving(tmp_path, FakeBundle(version=3, n_items=60, dim=8)) as client:
        summary = (await client.get("/v1/bundle")).json()
    assert summary["version"] == 3
    assert summary["item_count"] == 60
    assert summary["embedding_dim"] == 8
    assert summary["hnsw"]["ef_search"] == 64
    assert summary["training"]["kind"] == "pretrain"
    assert summary["metrics"] == {"recall@100": 0.25}
    assert {"parent_version", "created_at"} <= summary.keys()


async def test_without_a_bundle_the_service_is_live_but_not_ready(tmp_path: Path) -> None:
    async with serving(tmp_path) as client:
        live = await client.get("/livez")
        ready = await client.get("/readyz")
        recall = await client.post("/v1/recall", json={"user_id": "u"})
        summary = await client.get("/v1/bundle")
        accepted = await client.post("/v1/events", json={"events": [event()]})
    assert live.status_code == 200
    assert ready.status_code == 503
    assert "no bundle" in ready.json()["reason"]
    assert recall.status_code == 503
    assert recall.json()["error"] == "no_bundle_loaded"
    assert summary.status_code == 503
    assert accepted.status_code == 202  # events do not need a bundle


async def test_watcher_makes_a_published_bundle_ready(tmp_path: Path) -> None:
    bundles: dict[int, FakeBundle] = {}
    registry = BundleRegistry(tmp_path, lambda directory: bundles[int(directory.name)])
    async with serving(tmp_path, registry=registry, watch_interval_s=0.02) as client:
        assert (await client.get("/readyz")).status_code == 503
        bundles[4] = FakeBundle(version=4)
        (tmp_path / "4").mkdir()
        (tmp_path / "4" / MANIFEST).write_text("{}")
        for _ in range(200):
            ready = await client.get("/readyz")
            if ready.status_code == 200:
                break
            await asyncio.sleep(0.01)
        recall = await client.post("/v1/recall", json={"user_id": "u", "k": 3})
    assert ready.status_code == 200
    assert ready.json()["bundle_version"] == 4
    assert recall.json()["bundle_version"] == 4


async def test_metrics_expose_request_and_stage_latencies(tmp_path: Path) -> None:
    async with serving(tmp_path, FakeBundle()) as client:
        await post_events(client, history("secret-user-7", ["item-0003", "item-0004"]))
        await client.post("/v1/recall", json={"user_id": "secret-user-7", "k": 5})
        await client.post("/v1/recall", json={"user_id": "secret-user-7", "k": 0})
        await client.get("/no/such/route")
        await client.get("/v1/users/secret-user-7/sessions")
        response = await client.get("/metrics")
    text = response.text
    assert response.headers["content-type"].startswith("text/plain")
    for stage in ("session_fetch", "encode", "ann", "postprocess"):
        assert f'nsp_recall_stage_duration_seconds_count{{stage="{stage}"}} 1.0' in text
    assert 'nsp_request_duration_seconds_count{outcome="2xx",route="/v1/recall"} 1.0' in text
    assert 'nsp_request_duration_seconds_count{outcome="4xx",route="/v1/recall"} 1.0' in text
    assert 'route="unmatched"' in text
    assert 'route="/v1/users/{user_id}/sessions"' in text
    assert 'nsp_request_duration_seconds_bucket{le="0.001",outcome="2xx",route="/v1/recall"}' in text
    assert "nsp_bundle_version 1.0" in text
    assert "nsp_bundle_swaps_total 1.0" in text
    assert "secret-user-7" not in text and "item-0003" not in text


async def test_each_app_has_its_own_metrics(tmp_path: Path) -> None:
    async with (
        serving(tmp_path / "a", FakeBundle(version=1)) as first,
        serving(tmp_path / "b", FakeBundle(version=2)) as second,
    ):
        first_text = (await first.get("/metrics")).text
        second_text = (await second.get("/metrics")).text
    assert "nsp_bundle_version 1.0" in first_text
    assert "nsp_bundle_version 2.0" in second_text


async def test_without_redis_the_app_warns_that_events_are_not_persisted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(bundle_root=tmp_path, redis_url=None, watch_interval_s=60)
    app = create_app(settings, registry=registry_of(tmp_path, FakeBundle()))
    with caplog.at_level(logging.WARNING):
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://nsp") as client:
                await post_events(client, history("alice", ["item-0001"]))
                recall = (await client.post("/v1/recall", json={"user_id": "alice", "k": 2})).json()
    assert recall["source"] == "model"
    assert any("not persisted" in record.getMessage() for record in caplog.records)
