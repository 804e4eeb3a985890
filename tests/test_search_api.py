"""Search requests through the API: the query's limits and normalisation, queries on events and
sessions (in memory and in Redis), the search scenario and its fusion, and the event logs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis.asyncio as aioredis
from fakes import FakeBundle, event_body, history, ids, post_events, recall, serving

from index.bundle import ChannelsSpec
from index.features import Event
from index.fusion import RRF_K, SEARCH_SEEN, SEARCH_UNSEEN, SEEN, UNSEEN, FusionParams, fusion_key
from index.i2i import I2IParams, ItemToItem
from index.text import MAX_QUERY_CHARS
from model_export.data import read_events
from service.seed import seed_store
from service.store import InMemorySessionStore, RedisSessionStore

pytestmark = pytest.mark.anyio

REDIS_URL = os.environ.get("NSP_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
AS_OF = 1_700_000_000 + 3600
FULL_WIDTH_SHOES = "\uff33\uff28\uff2f\uff25\uff33"  # "SHOES" in full-width letters: NFKC folds them
HISTORY = ["item-0003", "item-0011", "item-0017", "item-0029", "item-0042"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def event(**overrides: Any) -> dict[str, Any]:
    return {
        "user_id": "alice",
        "item_id": "item-0001",
        "action": "click",
        "scene": "search",
        "ts": 1_700_000_000,
        "request_id": "r1",
        **overrides,
    }


def multi_channel(**spec: Any) -> FakeBundle:
    """nsp, history, i2i (each item's neighbour: the next one) and popular; no text indexes."""
    n_items = 60
    neighbours = ItemToItem(
        np.arange(n_items + 1, dtype=np.int64),
        ((np.arange(n_items) + 1) % n_items).astype(np.int32),
        np.ones(n_items, dtype=np.float32),
    )
    return FakeBundle(
        version=3, n_items=n_items, channels=ChannelsSpec(i2i=I2IParams(), **spec), i2i=neighbours
    )


def assert_invalid_query(response: Any, message: str) -> None:
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "invalid_request"
    assert [error["loc"][-1] for error in body["detail"]] == ["query"]
    assert message in body["detail"][0]["msg"]


# --- POST /v1/recall: the query's limits ----------------------------------------------------------

BLANK_QUERIES = {"spaces": "  ", "zero-width space": "\u200b", "controls and newlines": "\x00\n\t\u2060"}


@pytest.mark.parametrize("query", BLANK_QUERIES.values(), ids=BLANK_QUERIES.keys())
async def test_a_query_empty_after_normalisation_is_422(tmp_path: Path, query: str) -> None:
    async with serving(tmp_path, FakeBundle()) as client:
        response = await client.post("/v1/recall", json={"user_id": "alice", "query": query})
    assert_invalid_query(response, "query is empty after normalisation")


async def test_an_empty_query_is_422(tmp_path: Path) -> None:
    async with serving(tmp_path, FakeBundle()) as client:
        response = await client.post("/v1/recall", json={"user_id": "alice", "query": ""})
    assert_invalid_query(response, "at least 1 character")


async def test_a_query_over_512_characters_is_422_before_and_after_normalisation(tmp_path: Path) -> None:
    async with serving(tmp_path, FakeBundle()) as client:
        long_raw = await client.post("/v1/recall", json={"user_id": "a", "query": "q" * 513})
        # 257 characters as sent, 514 after NFKC ("ǆ" is "dž").
        long_normalised = await client.post("/v1/recall", json={"user_id": "a", "query": "ǆ" * 257})
    assert_invalid_query(long_raw, "at most 512 characters")
    assert_invalid_query(long_normalised, "514 characters after normalisation")


async def test_a_query_of_exactly_512_characters_is_answered(tmp_path: Path) -> None:
    async with serving(tmp_path, FakeBundle()) as client:
        plain = await recall(client, query="q" * MAX_QUERY_CHARS)
        folded = await recall(client, query="ǆ" * (MAX_QUERY_CHARS // 2))  # 512 after NFKC
    assert plain["scenario"] == folded["scenario"] == "search"


@pytest.mark.parametrize("query", [5, ["red shoes"], {"text": "red shoes"}, True])
async def test_a_query_of_the_wrong_type_is_422(tmp_path: Path, query: object) -> None:
    async with serving(tmp_path, FakeBundle()) as client:
        response = await client.post("/v1/recall", json={"user_id": "alice", "query": query})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"][-1] == "query"


# --- POST /v1/events and GET /v1/users/{id}/sessions -------------------------------------------------


async def test_events_keep_their_normalised_query_and_sessions_show_it(tmp_path: Path) -> None:
    store = InMemorySessionStore()
    batch = [
        event(query=f"  Red\t{FULL_WIDTH_SHOES}\u200b "),
        event(item_id="item-0002", ts=1_700_000_001),  # same request, no query on this event
        event(item_id="item-0003", ts=1_700_000_100, request_id="r2", scene="feed", query=None),
    ]
    async with serving(tmp_path, FakeBundle(), store=store) as client:
        accepted = await client.post("/v1/events", json={"events": batch})
        sessions = (await client.get("/v1/users/alice/sessions")).json()["sessions"]
    assert accepted.status_code == 202
    assert [e.query for e in await store.recent("alice", 10)] == ["", "", "red shoes"]
    assert [s["request_id"] for s in sessions] == ["r2", "r1"]
    assert "query" not in sessions[0]  # a recommendation session reads as before search
    assert sessions[1]["query"] == "red shoes"
    assert [i["item_id"] for i in sessions[1]["items"]] == ["item-0001", "item-0002"]


BAD_EVENT_QUERIES = {"blank": " \u200b ", "empty": "", "too long": "q" * 513, "not text": 42}


@pytest.mark.parametrize("query", BAD_EVENT_QUERIES.values(), ids=BAD_EVENT_QUERIES.keys())
async def test_a_batch_with_one_bad_query_is_422_and_stores_nothing(tmp_path: Path, query: object) -> None:
    store = InMemorySessionStore()
    batch = [event(query="red shoes"), event(user_id="bob", request_id="r9", query=query)]
    async with serving(tmp_path, FakeBundle(), store=store) as client:
        response = await client.post("/v1/events", json={"events": batch})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "events", 1, "query"]
    assert await store.recent("alice", 10) == [] and await store.recent("bob", 10) == []


async def test_the_event_helper_posts_events_with_and_without_a_query(tmp_path: Path) -> None:
    with_query = Event("alice", "item-0001", 100, "click", "search", "r1", "red shoes")
    assert "query" not in event_body(Event("alice", "item-0001", 100, "click", "search", "r1"))
    async with serving(tmp_path, FakeBundle()) as client:
        await post_events(client, [with_query])
        sessions = (await client.get("/v1/users/alice/sessions")).json()["sessions"]
    assert sessions[0]["query"] == "red shoes"


# --- the Redis session store ---------------------------------------------------------------------


async def test_redis_keeps_the_query_and_reads_values_from_before_search(
    admin: aioredis.Redis, prefix: str
) -> None:
    store = RedisSessionStore(REDIS_URL, key_prefix=prefix)
    searched = Event("alice", "item-0001", 100, "click", "search", "r1", "red shoes")
    browsed = Event("alice", "item-0002", 200, "click", "feed", "r2")
    try:
        await store.append([searched, browsed])
        stored = await admin.lrange(store.key("alice"), 0, -1)
        # a format-1 value from before search (and before session records)
        await admin.rpush(store.key("alice", "events"), b'["item-0000",50,"pay","feed","r0"]')
        events = await store.recent("alice", 10)
    finally:
        await store.close()
    assert stored == [
        b'"r2",["item-0002",200,"click","feed"]',
        b'"r1",["item-0001",100,"click","search","red shoes"]',
    ]
    assert events == [browsed, searched, Event("alice", "item-0000", 50, "pay", "feed", "r0")]


async def test_redis_skips_values_of_another_shape(admin: aioredis.Redis, prefix: str) -> None:
    store = RedisSessionStore(REDIS_URL, key_prefix=prefix)
    key = store.key("alice", "events")  # format 1
    try:
        await admin.rpush(key, b'["i",1,"click","feed"]', b'["i",1,"click","feed","r","q","x"]', b'"abcde"')
        await admin.rpush(key, b'["item-0001",100,"click","search","r1","red shoes"]')
        events = await store.recent("alice", 10)
    finally:
        await store.close()
    assert events == [Event("alice", "item-0001", 100, "click", "search", "r1", "red shoes")]


# --- the search scenario -------------------------------------------------------------------------


async def test_a_search_recall_says_so_and_names_the_channels_that_answered(tmp_path: Path) -> None:
    async with serving(tmp_path, multi_channel()) as client:
        await post_events(client, history("alice", HISTORY))
        search = await recall(client, k=10, query="Red Shoes", as_of=AS_OF)
        browse = await recall(client, k=10, as_of=AS_OF)
        subset = await recall(client, k=10, query="red shoes", channels=["popular", "nsp"], as_of=AS_OF)
        new_user = await recall(client, user_id="nobody", k=10, query="red shoes")
    assert search["source"] == "model" and search["scenario"] == "search"
    assert search["answered_channels"] == ["nsp", "history", "i2i", "popular"]
    assert browse["scenario"] == "recommendation"
    assert browse["answered_channels"] == search["answered_channels"]
    assert subset["answered_channels"] == ["popular", "nsp"]  # in the order they ran
    # A search needs no history: the channels answer it rather than the popularity fallback.
    assert new_user["source"] == "model" and new_user["scenario"] == "search"
    assert new_user["answered_channels"] == ["nsp", "history", "i2i", "popular"]
    assert len(new_user["items"]) == 10 and not new_user["degraded"]


async def test_a_legacy_bundle_answers_search_with_the_nsp_channel(tmp_path: Path) -> None:
    async with serving(tmp_path, FakeBundle()) as client:
        await post_events(client, history("alice", HISTORY))
        result = await recall(client, k=5, query="red shoes", as_of=AS_OF)
    assert result["scenario"] == "search" and result["answered_channels"] == ["nsp"]


async def test_a_search_recall_uses_the_search_fusion_when_the_bundle_has_one(tmp_path: Path) -> None:
    only_nsp = {"nsp": 1.0, "history": 0.0, "i2i": 0.0, "popular": 0.0}
    twice_nsp = {**only_nsp, "nsp": 2.0}
    fitted = multi_channel(
        fusion={SEEN: FusionParams(weights=only_nsp), SEARCH_SEEN: FusionParams(weights=twice_nsp)}
    )
    unfitted = multi_channel(fusion={SEEN: FusionParams(weights=only_nsp), UNSEEN: FusionParams()})
    async with serving(tmp_path / "fitted", fitted) as client:
        await post_events(client, history("alice", HISTORY))
        browse = await recall(client, k=5, exclude_seen=False, as_of=AS_OF)
        search = await recall(client, k=5, exclude_seen=False, query="red shoes", as_of=AS_OF)
    async with serving(tmp_path / "unfitted", unfitted) as client:
        await post_events(client, history("alice", HISTORY))
        fallback = await recall(client, k=5, exclude_seen=False, query="red shoes", as_of=AS_OF)
    assert browse["items"][0]["score"] == pytest.approx(1 / (RRF_K + 1), rel=1e-6)
    assert search["items"][0]["score"] == pytest.approx(2 / (RRF_K + 1), rel=1e-6)
    assert ids(search) == ids(browse)  # nsp's order either way: only its weight changed
    assert fallback["items"][0]["score"] == pytest.approx(1 / (RRF_K + 1), rel=1e-6)


def test_fusion_keys_per_scenario_and_exclusion_policy() -> None:
    assert fusion_key(exclude_seen=False, search=False) == SEEN
    assert fusion_key(exclude_seen=True, search=False) == UNSEEN
    assert fusion_key(exclude_seen=False, search=True) == SEARCH_SEEN
    assert fusion_key(exclude_seen=True, search=True) == SEARCH_UNSEEN
    assert len({SEEN, UNSEEN, SEARCH_SEEN, SEARCH_UNSEEN}) == 4


def test_fusion_for_search_falls_back_to_the_recommendation_fusion_of_the_same_policy() -> None:
    seen, unseen = FusionParams(weights={"history": 2.0}), FusionParams(method="score")
    search_unseen = FusionParams(weights={"bm25": 3.0})
    spec = ChannelsSpec(fusion={SEEN: seen, UNSEEN: unseen})
    assert spec.fusion_for(False, search=True) == seen
    assert spec.fusion_for(True, search=True) == unseen
    partly = ChannelsSpec(fusion={SEEN: seen, UNSEEN: unseen, SEARCH_UNSEEN: search_unseen})
    assert partly.fusion_for(True, search=True) == search_unseen
    assert partly.fusion_for(False, search=True) == seen  # no search fusion for this policy
    assert partly.fusion_for(True) == unseen
    assert ChannelsSpec(fusion={}).fusion_for(True, search=True) == FusionParams()


def test_a_manifest_from_before_search_reads_and_round_trips() -> None:
    old = {"fusion": {SEEN: {"method": "rrf", "weights": {"nsp": 1.0}, "rrf_k": RRF_K}}}
    spec = ChannelsSpec.model_validate(old)
    assert spec.fusion_for(False, search=True).weights == {"nsp": 1.0}
    assert ChannelsSpec.model_validate(spec.model_dump()) == spec


# --- event logs ----------------------------------------------------------------------------------

HEADER = "user_id,item_id,ts,action,scene,request_id"


def test_an_old_log_without_a_query_column_loads_with_empty_queries(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_text(f"{HEADER}\nu1,item-0001,100,click,feed,r1\nu2,item-0002,101,pay,feed,r2\n")
    frame = read_events(path)
    assert frame["query"].tolist() == ["", ""]


def test_a_log_with_a_query_column_loads_normalised(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_text(
        f"{HEADER},query\n"
        f'u1,item-0001,100,click,search,r1,"  Red {FULL_WIDTH_SHOES}"\n'
        "u2,item-0002,101,pay,feed,r2,\n"
    )
    assert read_events(path)["query"].tolist() == ["red shoes", ""]


async def test_the_seed_reads_the_optional_query_column(tmp_path: Path) -> None:
    with_query = tmp_path / "with.csv"
    with_query.write_text(
        f"{HEADER},query\n"
        f'u1,item-0001,100,click,search,r1,"  Red {FULL_WIDTH_SHOES}"\n'
        "u1,item-0002,101,click,feed,r2,\n"
        f"u1,item-0003,102,click,search,r3,{'q' * 513}\n"  # longer than the API takes: skipped
    )
    without = tmp_path / "without.csv"
    without.write_text(f"{HEADER}\nu2,item-0001,100,click,feed,r1\n")
    store = InMemorySessionStore()
    assert await seed_store(store, with_query) == (1, 2)
    assert await seed_store(store, without) == (1, 1)
    assert [(e.item_id, e.query) for e in await store.recent("u1", 10)] == [
        ("item-0002", ""),
        ("item-0001", "red shoes"),
    ]
    assert [e.query for e in await store.recent("u2", 10)] == [""]
