"""POST /v1/recall: the pipeline's contract as a ranking service sees it."""

from __future__ import annotations

from pathlib import Path

import pytest
from fakes import FailingStore, FakeBundle, history, ids, post_events, recall, serving

from index.features import Event
from service.store import InMemorySessionStore

HISTORY = ["item-0003", "item-0011", "item-0017", "item-0029", "item-0042"]


pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def bundle() -> FakeBundle:
    return FakeBundle(version=7, n_items=60)


async def test_user_with_history_gets_exactly_k_model_items(tmp_path: Path, bundle: FakeBundle) -> None:
    async with serving(tmp_path, bundle) as client:
        await post_events(client, history("alice", HISTORY))
        result = await recall(client, k=10)
    assert result["source"] == "model"
    assert result["bundle_version"] == 7
    assert result["degraded"] is False
    assert result["user_id"] == "alice"
    assert len(ids(result)) == 10
    assert len(set(ids(result))) == 10
    scores = [item["score"] for item in result["items"]]
    assert scores == sorted(scores, reverse=True)
    assert bundle.encode_calls == 1


async def test_default_k_comes_from_settings(tmp_path: Path, bundle: FakeBundle) -> None:
    async with serving(tmp_path, bundle, default_k=12) as client:
        await post_events(client, history("alice", HISTORY))
        assert len(ids(await recall(client))) == 12


async def test_exclude_seen_drops_history_and_still_returns_k(tmp_path: Path, bundle: FakeBundle) -> None:
    async with serving(tmp_path, bundle) as client:
        await post_events(client, history("alice", HISTORY))
        with_seen = ids(await recall(client, k=10, exclude_seen=False))
        without_seen = ids(await recall(client, k=10))
    # The fake encoder points at the user's own items, so they rank high unless excluded.
    assert set(HISTORY) & set(with_seen)
    assert not set(HISTORY) & set(without_seen)
    assert len(without_seen) == 10


async def test_exclusions_need_one_search_sized_by_what_is_excluded(
    tmp_path: Path, bundle: FakeBundle
) -> None:
    async with serving(tmp_path, bundle) as client:
        await post_events(client, history("alice", HISTORY))
        await recall(client, k=10, exclude_item_ids=["item-0000", "not-in-catalog"])
    assert bundle.search_ks == [10 + len(HISTORY) + 1]


async def test_exclude_item_ids_are_never_returned(tmp_path: Path, bundle: FakeBundle) -> None:
    async with serving(tmp_path, bundle) as client:
        await post_events(client, history("alice", HISTORY))
        top = ids(await recall(client, k=10))
        result = ids(await recall(client, k=10, exclude_item_ids=top[:5]))
    assert not set(top[:5]) & set(result)
    assert len(result) == 10


async def test_k_beyond_catalog_returns_the_whole_catalog_minus_exclusions(
    tmp_path: Path, bundle: FakeBundle
) -> None:
    async with serving(tmp_path, bundle) as client:
        await post_events(client, history("alice", HISTORY))
        everything = ids(await recall(client, k=1000, exclude_seen=False))
        result = ids(await recall(client, k=1000, exclude_item_ids=["item-0001"]))
    assert sorted(everything) == sorted(str(i) for i in bundle.vocab.item_ids)
    assert len(result) == 60 - len(HISTORY) - 1
    assert len(set(result)) == len(result)


async def test_events_for_unknown_items_still_use_the_model(tmp_path: Path, bundle: FakeBundle) -> None:
    async with serving(tmp_path, bundle) as client:
        await post_events(client, history("alice", ["brand-new-item", *HISTORY[:2]]))
        result = await recall(client, k=5)
    assert result["source"] == "model"
    assert len(result["items"]) == 5


async def test_unknown_user_gets_the_popularity_fallback(tmp_path: Path) -> None:
    popular = [f"item-{i:04d}" for i in (5, 9, 1, 30, 2, 8)]
    bundle = FakeBundle(popularity={"*": popular, "search": ["item-0050", "item-0051"]})
    async with serving(tmp_path, bundle) as client:
        result = await recall(client, user_id="nobody", k=4, exclude_item_ids=["item-0009"])
        search = await recall(client, user_id="nobody", k=3, scene="search")
    assert result["source"] == "fallback"
    assert result["degraded"] is False
    assert ids(result) == ["item-0005", "item-0001", "item-0030", "item-0002"]
    scores = [item["score"] for item in result["items"]]
    assert scores == sorted(scores, reverse=True) and len(set(scores)) == 4
    # The scene's own list comes first; the all-scenes list fills it up to k.
    assert ids(search) == ["item-0050", "item-0051", "item-0005"]
    assert bundle.encode_calls == 0


async def test_fallback_fills_up_to_k_from_the_catalog(tmp_path: Path) -> None:
    bundle = FakeBundle(n_items=30, popularity={"*": ["item-0007"]})
    async with serving(tmp_path, bundle) as client:
        result = ids(await recall(client, user_id="nobody", k=25))
        everything = ids(await recall(client, user_id="nobody", k=1000))
    assert result[0] == "item-0007"
    assert len(result) == 25 and len(set(result)) == 25
    assert len(everything) == 30


async def test_expired_history_counts_as_no_history(tmp_path: Path, bundle: FakeBundle) -> None:
    now = [0.0]
    store = InMemorySessionStore(ttl_seconds=10, clock=lambda: now[0])
    async with serving(tmp_path, bundle, store=store) as client:
        await post_events(client, history("alice", HISTORY))
        assert (await recall(client))["source"] == "model"
        now[0] = 11.0
        assert (await recall(client))["source"] == "fallback"


async def test_store_down_answers_degraded_fallback(tmp_path: Path, bundle: FakeBundle) -> None:
    async with serving(tmp_path, bundle, store=FailingStore()) as client:
        result = await recall(client, k=5)
        metrics = (await client.get("/metrics")).text
    assert result["source"] == "fallback"
    assert result["degraded"] is True
    assert len(result["items"]) == 5
    assert 'nsp_recall_fallbacks_total{reason="store_unavailable"} 1.0' in metrics
    assert "nsp_recall_degraded_total 1.0" in metrics


async def test_late_events_are_ordered_by_time(tmp_path: Path, bundle: FakeBundle) -> None:
    async with serving(tmp_path, bundle) as client:
        await post_events(client, [Event("alice", "item-0001", 2_000, "click", "feed", "r2")])
        await post_events(client, [Event("alice", "item-0002", 1_000, "pay", "default", "r1")])
        sessions = (await client.get("/v1/users/alice/sessions")).json()["sessions"]
    assert [s["request_id"] for s in sessions] == ["r2", "r1"]
    assert sessions[1]["items"] == [{"item_id": "item-0002", "action": "pay"}]


async def test_micro_batched_recalls_equal_unbatched_ones(tmp_path: Path, bundle: FakeBundle) -> None:
    import asyncio

    users = [f"user-{n}" for n in range(12)]
    answers = {}
    for batch_max in (1, 8):
        async with serving(tmp_path, bundle, encode_batch_max=batch_max) as client:
            for n, user in enumerate(users):
                await post_events(client, history(user, [*HISTORY[n % 5 :], f"item-00{n + 20}"]))
            calls_before = bundle.encode_calls
            results = await asyncio.gather(*(recall(client, user_id=u, k=10) for u in users))
            answers[batch_max] = [ids(r) for r in results]
            assert all(r["source"] == "model" for r in results)
            runs = bundle.encode_calls - calls_before
        if batch_max == 1:
            assert runs == len(users)
        else:
            assert runs < len(users)  # concurrent requests shared encoder runs
    assert answers[1] == answers[8]
