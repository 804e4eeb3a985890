"""Nearline mode for real: the top-K cache in Redis (key layout, TTL, failing fast), the whole
loop with the published tiny model (ingest → background recompute → recall served from the
cache, equal to what the model computes), a bundle swap, and `nsprecall serve` with
NSP_NEARLINE_ENABLED=1."""

from __future__ import annotations

import asyncio
import csv
import shutil
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from cli_helpers import serve_process, wait_until
from fakes import ids, recall

from index.bundle import commit, read_manifest, staging
from service.app import create_app
from service.metrics import Metrics
from service.recall import RecallPipeline, RecallQuery, standard_channels
from service.settings import Settings
from service.topk_cache import CacheUnavailable, RedisTopKCache, TopK, decode, encode

SCENE = "homepage"
K = 50
TIMEOUT_S = 0.2


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def bundles(bundle_root: Path, tmp_path: Path) -> Path:
    """A bundle root of its own holding a copy of the tiny world's bundle 1."""
    root = tmp_path / "bundles"
    shutil.copytree(bundle_root / "1", root / "1")
    return root


def publish_again(root: Path, version: int) -> None:
    """Publish bundle 1's files once more as ``version``: a new round, the same model."""
    manifest = read_manifest(root / "1")
    fields = manifest.model_dump(by_alias=True, exclude={"version", "files", "created_at"})
    with staging(root) as stage:
        for name in manifest.files:
            shutil.copy2(root / "1" / name, stage / name)
        commit(root, stage, {**fields, "parent_version": 1}, version=version)


def catalog_items(world: Path, n: int) -> list[str]:
    with (world / "catalog.csv").open() as f:
        return [row["item_id"] for _, row in zip(range(n), csv.DictReader(f), strict=False)]


def events_of(user: str, items: list[str], start_ts: int) -> dict[str, Any]:
    """A /v1/events body: clicks on ``items``, three to a request session, a minute apart."""
    return {
        "events": [
            {
                "user_id": user,
                "item_id": item,
                "action": "click",
                "scene": SCENE,
                "ts": start_ts + 60 * i,
                "request_id": f"{user}-r{start_ts}-{i // 3}",
            }
            for i, item in enumerate(items)
        ]
    }


@pytest.mark.anyio
async def test_each_cached_list_is_one_key_beside_the_users_events_with_a_ttl(
    admin: aioredis.Redis, prefix: str, redis_url: str
) -> None:
    cache = RedisTopKCache(redis_url, key_prefix=prefix)
    provenance = ({"nsp": (1, 0.9)}, {})
    value = encode(TopK(3, SCENE, 1_767_225_600.5, 2, ("i1", "i2"), (0.5, 0.25), provenance))
    try:
        await cache.put("alice", value, 600.5)
        assert await cache.get("alice") == value
        keys = [key.decode() async for key in admin.scan_iter(match=f"{prefix}:*")]
        assert keys == [f"{prefix}:{{alice}}:topk"]  # the events key's hash tag: same cluster slot
        assert 600 <= await admin.ttl(keys[0]) <= 601
        assert await admin.get(keys[0]) == b'{"bundle_version":3,"scene":"homepage",' + (
            b'"computed_at":1767225600.5,"k":2,"item_ids":["i1","i2"],"scores":[0.5,0.25],'
            b'"channels":[{"nsp":[1,0.9]},{}]}'
        )
        await cache.delete(["alice", "bob"])
        assert await cache.get("alice") is None
    finally:
        await cache.close()


@pytest.mark.anyio
async def test_an_unreachable_cache_raises_cache_unavailable_quickly(closed_port: int) -> None:
    cache = RedisTopKCache(f"redis://127.0.0.1:{closed_port}/0", timeout_s=TIMEOUT_S)
    try:
        calls = (lambda: cache.get("a"), lambda: cache.put("a", b"{}", 60), lambda: cache.delete(["a"]))
        for call in calls:
            async with asyncio.timeout(3 * TIMEOUT_S):
                with pytest.raises(CacheUnavailable):
                    await call()
    finally:
        await cache.close()


async def cached_entry(admin: aioredis.Redis, key: str, version: int) -> TopK:
    """The entry at ``key`` once one for bundle ``version`` appears (the recompute is async)."""
    async with asyncio.timeout(30):
        while True:
            value = await admin.get(key)
            if value is not None and (entry := decode(value)).bundle_version == version:
                return entry
            await asyncio.sleep(0.05)


@pytest.mark.anyio
async def test_a_cached_recall_equals_the_model_recall_until_the_bundle_changes(
    admin: aioredis.Redis, prefix: str, redis_url: str, bundles: Path, world: Path
) -> None:
    settings = Settings(
        bundle_root=bundles,
        redis_url=redis_url,
        store_key_prefix=prefix,
        watch_interval_s=60,
        instance_name="nearline-test",
        nearline_enabled=True,
        nearline_k=K,
        nearline_scene=SCENE,
    )
    app = create_app(settings)
    user = f"nl-{uuid.uuid4().hex[:8]}"
    key = f"{prefix}:{{{user}}}:topk"
    history = catalog_items(world, 9)
    start = int(time.time()) - 3600
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://nsp") as client,
    ):
        services = app.state.services
        assert (await client.post("/v1/events", json=events_of(user, history, start))).status_code == 202
        entry = await cached_entry(admin, key, version=1)
        cached = await recall(client, user_id=user, scene=SCENE, k=K)
        fewer = await recall(client, user_id=user, scene=SCENE, k=10, exclude_item_ids=ids(cached)[:1])
        # The model recall at the moment the entry was computed (its context's hour and weekday).
        with ThreadPoolExecutor(1) as pool:
            metrics = Metrics()
            pipeline = RecallPipeline(
                services.store,
                standard_channels(pool, metrics),
                metrics,
                history_sessions=32,
                clock=lambda: entry.computed_at,
            )
            computed = await pipeline.recall(
                services.registry.current(), RecallQuery(user_id=user, k=K, scene=SCENE)
            )

        publish_again(bundles, 2)
        await services.registry.refresh()
        after_swap = await recall(client, user_id=user, scene=SCENE, k=K)
        left_over = decode(await admin.get(key))
        more = events_of(user, catalog_items(world, 12)[9:], start + 1800)
        assert (await client.post("/v1/events", json=more)).status_code == 202
        await cached_entry(admin, key, version=2)
        cached_on_2 = await recall(client, user_id=user, scene=SCENE, k=K)
        metrics = services.metrics

    assert (cached["source"], cached["bundle_version"], cached["degraded"]) == ("cache", 1, False)
    assert computed.source == "model"
    assert cached["items"] == [item.model_dump() for item in computed.items]
    assert len(ids(cached)) == K and not set(history) & set(ids(cached))
    assert (fewer["source"], ids(fewer)) == ("cache", ids(cached)[1:11])

    assert (after_swap["source"], after_swap["bundle_version"]) == ("model", 2)
    assert left_over.bundle_version == 1  # no mass invalidation: stale by version
    assert (cached_on_2["source"], cached_on_2["bundle_version"]) == ("cache", 2)
    assert metrics.registry.get_sample_value("nsp_nearline_cache_hits_total") == 3
    stale = {"reason": "stale_version"}
    assert metrics.registry.get_sample_value("nsp_nearline_cache_misses_total", stale) == 1


def test_nsprecall_serve_with_nearline_enabled(bundles: Path, redis_url: str, world: Path) -> None:
    env = {"NSP_NEARLINE_ENABLED": "1", "NSP_NEARLINE_K": str(K), "NSP_NEARLINE_SCENE": SCENE}
    user = f"nl-e2e-{uuid.uuid4().hex[:8]}"
    history = catalog_items(world, 6)
    body = {"user_id": user, "k": 20, "scene": SCENE}
    with serve_process(bundles, redis_url, env=env) as client:
        accepted = client.post("/v1/events", json=events_of(user, history, int(time.time()) - 600))
        assert accepted.status_code == 202

        def served_from_cache() -> bool:
            return bool(client.post("/v1/recall", json=body).json()["source"] == "cache")

        wait_until(served_from_cache, 30, "a recall served from the cache")
        cached = client.post("/v1/recall", json=body).json()
        computed = client.post("/v1/recall", json={**body, "exclude_seen": False}).json()
        metrics = client.get("/metrics").text
    assert cached["bundle_version"] == 1 and len(ids(cached)) == 20
    assert not set(history) & set(ids(cached))
    assert computed["source"] == "model"
    assert 'nsp_nearline_recomputes_total{outcome="done"} 1.0' in metrics
    assert 'nsp_nearline_cache_misses_total{reason="ineligible"} 1.0' in metrics
