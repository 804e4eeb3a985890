"""POST /v1/recall with several channels: provenance, channel choice, replay time (``as_of``),
the exclude_seen default, and a channel that fails or is late, as a caller sees them."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fakes import FakeBundle, history, ids, post_events, recall, serving, write_real_bundle

from index.bundle import ChannelsSpec
from index.features import Event
from index.fusion import RRF_K, SEEN, UNSEEN, FusionParams
from index.history import HistoryParams
from index.i2i import I2IParams, ItemToItem
from service.channels import CHANNEL_NAMES, TEXT_CHANNELS
from service.channels.history import HistoryChannel
from service.registry import BundleRegistry
from service.runtime import LoadedBundle
from service.schemas import MAX_TS
from service.store import History, InMemorySessionStore

N_ITEMS = 60
START = 1_700_000_000
DAY = 86400
HISTORY = ["item-0003", "item-0011", "item-0017", "item-0029", "item-0042"]
# history() puts three items in a session: item 3, 11 and 17 first, then 29 and 42 three minutes later.
HISTORY_ORDER = ["item-0029", "item-0042", "item-0003", "item-0011", "item-0017"]
AS_OF = START + 3600  # an hour after the first event: every test answers at the same time
POPULAR = [f"item-{i:04d}" for i in range(N_ITEMS - 1, N_ITEMS - 21, -1)]  # FakeBundle's default list

# What a request without a query runs: every channel but the text ones.
RECOMMENDATION_CHANNELS = [name for name in CHANNEL_NAMES if name not in TEXT_CHANNELS]


pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def item(label: int) -> str:
    return f"item-{label:04d}"


def i2i_table(n_items: int = N_ITEMS) -> ItemToItem:
    """Every item's neighbours: the item 30 labels on (weight 1), then 31 on (weight 0.5)."""
    rows = np.arange(n_items)
    indices = np.stack([(rows + 30) % n_items, (rows + 31) % n_items], axis=1).reshape(-1)
    weights = np.tile(np.asarray([1.0, 0.5], dtype=np.float32), n_items)
    return ItemToItem(np.arange(0, 2 * n_items + 1, 2, dtype=np.int64), indices.astype(np.int32), weights)


def broken_i2i_table() -> ItemToItem:
    """A table of three rows for a 60-item catalog (``LoadedBundle`` would refuse it): looking up
    any item past the third raises inside the channel."""
    return i2i_table(3)


def multi_channel(version: int = 3, **spec: Any) -> FakeBundle:
    return FakeBundle(
        version=version, n_items=N_ITEMS, channels=ChannelsSpec(i2i=I2IParams(), **spec), i2i=i2i_table()
    )


@pytest.fixture
def bundle() -> FakeBundle:
    return multi_channel()


async def sample(client: httpx.AsyncClient, name: str, labels: str = "") -> float:
    """One sample of the app's ``/metrics`` (``cli_helpers.metric`` for an async client)."""
    text = (await client.get("/metrics")).text
    found = re.search(rf"^{re.escape(name + labels)} (\S+)$", text, re.MULTILINE)
    assert found, f"{name}{labels} is not exported"
    return float(found.group(1))


async def failures(client: httpx.AsyncClient, channel: str, reason: str) -> float:
    return await sample(client, "nsp_channel_failures_total", f'{{channel="{channel}",reason="{reason}"}}')


def provenance(result: dict[str, Any], channel: str) -> list[tuple[str, int, float]]:
    """(item, rank, score) of the answer's items that ``channel`` proposed, by its rank."""
    found = [
        (entry["item_id"], entry["channels"][channel]["rank"], entry["channels"][channel]["score"])
        for entry in result["items"]
        if channel in entry["channels"]
    ]
    return sorted(found, key=lambda hit: hit[1])


# --- provenance ------------------------------------------------------------------------------


async def test_every_item_names_the_channels_that_proposed_it_with_their_rank_and_score(
    tmp_path: Path, bundle: FakeBundle
) -> None:
    k = 20
    async with serving(tmp_path, bundle) as client:
        await post_events(client, history("alice", HISTORY))
        merged = await recall(client, k=k, exclude_seen=False, as_of=AS_OF)
        alone = {
            # The whole list each channel hands to the merge (max(k, min_depth) deep), alone.
            name: await recall(client, k=N_ITEMS, exclude_seen=False, as_of=AS_OF, channels=[name])
            for name in RECOMMENDATION_CHANNELS
        }
    assert merged["source"] == "model" and merged["degraded"] is False and merged["missing_channels"] == []
    assert len(ids(merged)) == len(set(ids(merged))) == k
    for channel in RECOMMENDATION_CHANNELS:
        # The rank and score an item carries are those of the channel's own list, as that channel
        # answers alone (first in that answer, ranked from 1).
        own = provenance(alone[channel], channel)
        assert [hit[1] for hit in own] == list(range(1, len(own) + 1))
        assert ids(alone[channel])[: len(own)] == [hit[0] for hit in own]
        hits = provenance(merged, channel)
        assert hits, f"no item from {channel}"
        assert hits == [own[rank - 1] for _, rank, _ in hits]
    # The merge is the bundle's: weighted reciprocal rank fusion, every weight 1.
    for entry in merged["items"]:
        expected = sum(1 / (RRF_K + hit["rank"]) for hit in entry["channels"].values())
        assert entry["score"] == pytest.approx(expected, rel=1e-6)
    scores = [entry["score"] for entry in merged["items"]]
    assert scores == sorted(scores, reverse=True)


async def test_the_users_own_items_come_from_history_and_their_neighbours_from_i2i(
    tmp_path: Path, bundle: FakeBundle
) -> None:
    async with serving(tmp_path, bundle) as client:
        await post_events(client, history("alice", HISTORY))
        result = await recall(client, k=N_ITEMS, exclude_seen=False, as_of=AS_OF)
    assert [hit[0] for hit in provenance(result, "history")] == HISTORY_ORDER
    neighbours = {item((int(i[-4:]) + step) % N_ITEMS) for i in HISTORY for step in (30, 31)}
    assert {hit[0] for hit in provenance(result, "i2i")} == neighbours


async def test_a_legacy_bundle_answers_with_the_nsp_channel_alone(tmp_path: Path) -> None:
    legacy = FakeBundle(version=2, n_items=N_ITEMS)
    async with serving(tmp_path, legacy) as client:
        await post_events(client, history("alice", HISTORY))
        result = await recall(client, k=15, exclude_seen=False)
        summary = (await client.get("/v1/bundle")).json()
    assert result["source"] == "model" and result["degraded"] is False and result["missing_channels"] == []
    assert len(result["items"]) == 15
    for rank, entry in enumerate(result["items"], start=1):
        assert list(entry["channels"]) == ["nsp"]
        assert entry["channels"]["nsp"]["rank"] == rank
        assert entry["score"] == pytest.approx(1 / (RRF_K + rank), rel=1e-6)
    assert set(HISTORY) & set(ids(result))  # no history channel, yet the model still sees the history
    assert summary["version"] == 2 and summary["channels"] is None


async def test_bundle_summary_shows_the_channels_settings_and_fusion_weights(tmp_path: Path) -> None:
    fusion = {
        UNSEEN: FusionParams(weights={"nsp": 1.0, "i2i": 0.5, "history": 0.0}),
        SEEN: FusionParams(method="score", weights={"history": 2.0}),
    }
    fitted = multi_channel(
        history=HistoryParams(half_life_days=7.0), fusion=fusion, validation={"recall@50": 0.3}
    )
    async with serving(tmp_path, fitted) as client:
        channels = (await client.get("/v1/bundle")).json()["channels"]
    weights = {"nsp": 1.0, "i2i": 0.5, "history": 0.0}
    assert channels["fusion"][UNSEEN] == {"method": "rrf", "weights": weights, "rrf_k": RRF_K}
    assert channels["fusion"][SEEN]["method"] == "score"
    assert channels["fusion"][SEEN]["weights"] == {"history": 2.0}
    assert channels["history"]["half_life_days"] == 7.0
    assert channels["i2i"] == I2IParams().model_dump()
    assert channels["validation"] == {"recall@50": 0.3}


async def test_the_merge_uses_the_fusion_fitted_for_the_requests_exclusion_policy(tmp_path: Path) -> None:
    only_history: dict[str, float] = {name: 1.0 if name == "history" else 0.0 for name in CHANNEL_NAMES}
    fitted = multi_channel(fusion={SEEN: FusionParams(weights=only_history), UNSEEN: FusionParams()})
    async with serving(tmp_path, fitted) as client:
        await post_events(client, history("alice", HISTORY))
        keep_seen = await recall(client, k=10, exclude_seen=False, as_of=AS_OF)
        drop_seen = await recall(client, k=10, exclude_seen=True, as_of=AS_OF)
    # With seen items kept, only history moves the ranking; the other channels are still named.
    assert ids(keep_seen)[:5] == HISTORY_ORDER
    assert any(len(entry["channels"]) > 1 for entry in keep_seen["items"][:5])
    assert all(entry["channels"] == {} for entry in keep_seen["items"][5:])  # padding
    assert not set(HISTORY) & set(ids(drop_seen))
    assert all(entry["channels"] for entry in drop_seen["items"])


async def test_channels_named_alone_answer_even_where_the_fitted_merge_weighs_them_zero(
    tmp_path: Path,
) -> None:
    only_history: dict[str, float] = {name: 1.0 if name == "history" else 0.0 for name in CHANNEL_NAMES}
    fitted = multi_channel(fusion={SEEN: FusionParams(weights=only_history), UNSEEN: FusionParams()})
    async with serving(tmp_path, fitted) as client:
        await post_events(client, history("alice", HISTORY))
        alone = await recall(client, k=10, channels=["nsp"], exclude_seen=False, as_of=AS_OF)
        both = await recall(client, k=10, channels=["nsp", "history"], exclude_seen=False, as_of=AS_OF)
    assert all(list(entry["channels"]) == ["nsp"] for entry in alone["items"])
    assert [entry["channels"]["nsp"]["rank"] for entry in alone["items"]] == list(range(1, 11))
    assert ids(both)[:5] == HISTORY_ORDER  # a named channel with weight keeps the fitted merge


async def test_a_real_bundle_with_channels_serves_them_all(tmp_path: Path) -> None:
    """``write_real_bundle`` → ``LoadedBundle`` (i2i.npz checked and loaded) → every channel."""
    root = tmp_path / "bundles"
    write_real_bundle(root, 1, n_items=N_ITEMS, channels=ChannelsSpec(i2i=I2IParams()), i2i=i2i_table())
    async with serving(root, registry=BundleRegistry(root, LoadedBundle.load)) as client:
        await post_events(client, history("alice", HISTORY))
        result = await recall(client, k=40, exclude_seen=False, as_of=AS_OF)
        summary = (await client.get("/v1/bundle")).json()
    assert summary["channels"]["i2i"] == I2IParams().model_dump()
    assert result["degraded"] is False
    proposed = {channel for entry in result["items"] for channel in entry["channels"]}
    assert proposed == set(RECOMMENDATION_CHANNELS)


# --- choosing channels -----------------------------------------------------------------------


async def test_history_alone_returns_the_users_items_then_padding_to_exactly_k(
    tmp_path: Path, bundle: FakeBundle
) -> None:
    async with serving(tmp_path, bundle) as client:
        await post_events(client, history("alice", HISTORY))
        result = await recall(client, k=12, channels=["history"], exclude_seen=False, as_of=AS_OF)
    assert result["source"] == "model" and result["degraded"] is False
    assert ids(result)[:5] == HISTORY_ORDER
    for rank, entry in enumerate(result["items"][:5], start=1):
        assert list(entry["channels"]) == ["history"] and entry["channels"]["history"]["rank"] == rank
    # Then the popularity list fills the answer to k, without provenance.
    assert ids(result)[5:] == POPULAR[:7]
    assert all(entry["channels"] == {} and entry["score"] == 0.0 for entry in result["items"][5:])


async def test_a_channel_list_runs_those_channels_only(tmp_path: Path, bundle: FakeBundle) -> None:
    async with serving(tmp_path, bundle) as client:
        await post_events(client, history("alice", HISTORY))
        nsp = await recall(client, k=10, channels=["nsp"])
        twice = await recall(client, k=10, channels=["nsp", "nsp"])
        popular = await recall(client, k=10, channels=["popular"], exclude_seen=False)
        pair = await recall(client, k=10, channels=["i2i", "nsp"])
        reversed_pair = await recall(client, k=10, channels=["nsp", "i2i"])
    assert {name for entry in nsp["items"] for name in entry["channels"]} == {"nsp"}
    assert twice["items"] == nsp["items"]
    assert ids(popular) == POPULAR[:10]
    assert [entry["channels"]["popular"]["rank"] for entry in popular["items"]] == list(range(1, 11))
    assert {name for entry in pair["items"] for name in entry["channels"]} == {"nsp", "i2i"}
    assert pair["items"] == reversed_pair["items"]


class CountingStore(InMemorySessionStore):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    async def append(self, events: Sequence[Event]) -> int:
        self.calls.append("append")
        return await super().append(events)

    async def history(
        self, user_id: str, sessions: int, *, seen: bool = True, seen_before: int | None = None
    ) -> History:
        self.calls.append("history")
        return await super().history(user_id, sessions, seen=seen, seen_before=seen_before)


@pytest.mark.parametrize(
    "channels",
    [["nsp", "bogus"], ["NSP"], [], "nsp", [None], ["nsp"] * 17],
    ids=["unknown", "case", "empty", "not-a-list", "null", "too-many"],
)
async def test_an_unknown_channel_is_a_422_that_touches_nothing(
    tmp_path: Path, bundle: FakeBundle, channels: object
) -> None:
    store = CountingStore()
    async with serving(tmp_path, bundle, store=store) as client:
        await post_events(client, history("alice", HISTORY))
        before = list(store.calls)
        response = await client.post("/v1/recall", json={"user_id": "alice", "k": 5, "channels": channels})
        after = list(store.calls)
        events = len(await store.recent("alice", 100))
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "invalid_request"
    assert all(error["loc"][:2] == ["body", "channels"] for error in body["detail"]), body
    assert after == before == ["append"]  # neither read nor written
    assert events == len(HISTORY)


async def test_asking_a_legacy_bundle_for_a_channel_it_lacks_is_not_a_store_outage(tmp_path: Path) -> None:
    legacy = FakeBundle(version=2, n_items=N_ITEMS)
    async with serving(tmp_path, legacy) as client:
        await post_events(client, history("alice", HISTORY))
        result = await recall(client, k=5, channels=["i2i"])
        outages = await sample(client, "nsp_recall_fallbacks_total", '{reason="store_unavailable"}')
    assert len(result["items"]) == 5
    assert outages == 0.0
    assert result["degraded"] is False


async def test_padding_never_returns_an_excluded_or_seen_item(tmp_path: Path) -> None:
    """The fallback honours exclusions of ids outside the catalog; the padding must as well."""
    bundle = FakeBundle(
        n_items=N_ITEMS, channels=ChannelsSpec(), popularity={"*": ["ghost", item(50), item(51)]}
    )
    async with serving(tmp_path, bundle) as client:
        await post_events(client, history("alice", [item(3), "ghost"]))
        excluded = await recall(
            client, k=5, channels=["history"], exclude_seen=False, exclude_item_ids=["ghost"]
        )
        seen = await recall(client, k=5, channels=["history"], exclude_seen=True)
        cold = await recall(client, user_id="nobody", k=3, exclude_item_ids=["ghost"])
    assert ids(cold) == [item(50), item(51), item(0)]
    assert ids(excluded) == [item(3), item(50), item(51), item(0), item(1)]
    assert ids(seen) == [item(50), item(51), item(0), item(1), item(2)]


# --- as_of: the query time of a replay ---------------------------------------------------------


async def test_as_of_ignores_events_at_or_after_it(tmp_path: Path, bundle: FakeBundle) -> None:
    events = [
        Event("alice", item(1), START, "click", "default", "r1"),
        Event("alice", item(2), START + 100, "click", "default", "r2"),
        Event("alice", item(3), START + 200, "click", "default", "r3"),
    ]
    async with serving(tmp_path, bundle) as client:
        await post_events(client, events)

        async def own(as_of: int) -> dict[str, Any]:
            return await recall(client, k=5, channels=["history"], exclude_seen=False, as_of=as_of)

        before_all = await own(START)
        at_second = await own(START + 100)
        after_second = await own(START + 101)
        everything = await own(START + 1000)
        seen_filter = ids(await recall(client, k=N_ITEMS, exclude_seen=True, as_of=START + 100))
    assert before_all["source"] == "fallback" and before_all["degraded"] is False
    assert [hit[0] for hit in provenance(at_second, "history")] == [item(1)]
    assert [hit[0] for hit in provenance(after_second, "history")] == [item(2), item(1)]
    assert [hit[0] for hit in provenance(everything, "history")] == [item(3), item(2), item(1)]
    # Only what had happened by then is seen: the later items are not excluded.
    assert set(seen_filter) == {item(n) for n in range(N_ITEMS)} - {item(1)}


async def test_a_user_whose_events_all_come_after_as_of_gets_the_fallback(
    tmp_path: Path, bundle: FakeBundle
) -> None:
    async with serving(tmp_path, bundle) as client:
        await post_events(client, history("alice", HISTORY))
        replay = await recall(client, k=5, as_of=START - 1)
        live = await recall(client, k=5)
    assert replay["source"] == "fallback" and replay["degraded"] is False
    assert ids(replay) == POPULAR[:5]
    assert live["source"] == "model"


async def test_as_of_is_the_query_time_the_history_decays_to(tmp_path: Path, bundle: FakeBundle) -> None:
    async with serving(tmp_path, bundle) as client:
        await post_events(client, [Event("alice", item(7), START, "click", "default", "r1")])

        async def score(as_of: int) -> float:
            result = await recall(client, k=1, channels=["history"], exclude_seen=False, as_of=as_of)
            return float(result["items"][0]["channels"]["history"]["score"])

        fresh, month, two_months = (
            await score(START + 1),
            await score(START + 30 * DAY),
            await score(START + 60 * DAY),
        )
    # Default history weights: a click counts 1, halved every 30 days.
    assert fresh == pytest.approx(1.0, rel=1e-4)
    assert month == pytest.approx(0.5, rel=1e-6)
    assert two_months == pytest.approx(0.25, rel=1e-6)


@pytest.mark.parametrize("as_of", [0, -1, "1700000000", 1.5, True, MAX_TS + 1, 1_700_000_000_000], ids=repr)
async def test_a_bad_as_of_is_a_422(tmp_path: Path, bundle: FakeBundle, as_of: object) -> None:
    async with serving(tmp_path, bundle) as client:
        response = await client.post("/v1/recall", json={"user_id": "alice", "as_of": as_of})
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"][:2] == ["body", "as_of"]


async def test_as_of_accepts_any_time_up_to_2100(tmp_path: Path, bundle: FakeBundle) -> None:
    async with serving(tmp_path, bundle) as client:
        await post_events(client, history("alice", HISTORY))
        late = await recall(client, k=5, as_of=MAX_TS)
        integral = await recall(client, k=5, as_of=float(AS_OF))
        exact = await recall(client, k=5, as_of=AS_OF)
    assert late["source"] == "model"
    assert integral["items"] == exact["items"]


# --- the exclude_seen default ------------------------------------------------------------------


async def test_a_deployment_that_keeps_seen_items_still_lets_a_request_drop_them(
    tmp_path: Path, bundle: FakeBundle
) -> None:
    async with serving(tmp_path, bundle, exclude_seen=False) as client:
        await post_events(client, history("alice", HISTORY))
        default = await recall(client, k=20, as_of=AS_OF)
        dropped = await recall(client, k=20, as_of=AS_OF, exclude_seen=True)
        explicit = await recall(client, k=20, as_of=AS_OF, exclude_seen=False)
    assert set(HISTORY) <= set(ids(default))  # the history channel proposed them
    assert default["items"] == explicit["items"]
    assert not set(HISTORY) & set(ids(dropped))
    assert len(ids(dropped)) == 20


async def test_exclude_seen_defaults_from_the_environment(
    tmp_path: Path, bundle: FakeBundle, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with serving(tmp_path, bundle) as client:
        await post_events(client, history("alice", HISTORY))
        excluded = await recall(client, k=20, as_of=AS_OF)
    monkeypatch.setenv("NSP_EXCLUDE_SEEN", "false")
    async with serving(tmp_path, bundle) as client:
        await post_events(client, history("alice", HISTORY))
        kept = await recall(client, k=20, as_of=AS_OF)
    assert not set(HISTORY) & set(ids(excluded))  # the service default: drop seen items
    assert set(HISTORY) <= set(ids(kept))


# --- a channel that fails or is late -----------------------------------------------------------


async def test_a_failing_channel_is_left_out_named_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broken = FakeBundle(n_items=N_ITEMS, channels=ChannelsSpec(i2i=I2IParams()), i2i=broken_i2i_table())
    async with serving(tmp_path, broken) as client:
        await post_events(client, history("alice", HISTORY))
        assert await failures(client, "i2i", "error") == 0.0
        with caplog.at_level(logging.WARNING, logger="service.recall"):
            result = await recall(client, k=20, exclude_seen=False, as_of=AS_OF)
        assert await failures(client, "i2i", "error") == 1.0
        await recall(client, k=20)
        assert await failures(client, "i2i", "error") == 2.0
        assert await failures(client, "i2i", "timeout") == 0.0
        assert await failures(client, "nsp", "error") == 0.0
    assert result["source"] == "model"
    assert result["degraded"] is True
    assert result["missing_channels"] == ["i2i"]
    assert len(set(ids(result))) == 20
    proposed = {channel for entry in result["items"] for channel in entry["channels"]}
    assert proposed == {"nsp", "history", "popular"}
    assert any("channel i2i failed" in r.getMessage() for r in caplog.records)


async def test_when_every_chosen_channel_fails_the_answer_is_the_degraded_fallback(tmp_path: Path) -> None:
    broken = FakeBundle(n_items=N_ITEMS, channels=ChannelsSpec(i2i=I2IParams()), i2i=broken_i2i_table())
    async with serving(tmp_path, broken) as client:
        await post_events(client, history("alice", HISTORY))
        result = await recall(client, k=8, channels=["i2i"])
        counted = await sample(client, "nsp_recall_fallbacks_total", '{reason="channels_failed"}')
    assert result["source"] == "fallback" and result["degraded"] is True
    assert result["missing_channels"] == ["i2i"]
    assert len(result["items"]) == 8
    assert not set(HISTORY) & set(ids(result))  # the fallback still drops seen items
    assert counted == 1.0


async def test_a_channel_that_raises_anything_fails_alone(
    tmp_path: Path, bundle: FakeBundle, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(self: HistoryChannel, *args: object) -> object:
        raise RuntimeError("history exploded")

    monkeypatch.setattr(HistoryChannel, "propose", broken)
    async with serving(tmp_path, bundle) as client:
        await post_events(client, history("alice", HISTORY))
        result = await recall(client, k=10, exclude_seen=False)
        counted = await failures(client, "history", "error")
    assert result["missing_channels"] == ["history"] and result["degraded"] is True
    assert len(result["items"]) == 10
    assert all("history" not in entry["channels"] for entry in result["items"])
    assert counted == 1.0


async def test_a_channel_past_its_deadline_is_left_out_and_the_answer_is_not_late(
    tmp_path: Path, bundle: FakeBundle, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The i2i lookup blocks a CPU-pool thread for a second; the request waits 0.2 s for it."""
    from index.i2i import i2i_candidates

    def slow(*args: Any) -> Any:
        time.sleep(1.0)
        return i2i_candidates(*args)

    monkeypatch.setattr("service.channels.i2i.i2i_candidates", slow)
    async with serving(tmp_path, bundle, channel_timeout_s=0.2, cpu_workers=2) as client:
        await post_events(client, history("alice", HISTORY))
        started = time.perf_counter()
        result = await recall(client, k=10)
        took = time.perf_counter() - started
        timeouts = await failures(client, "i2i", "timeout")
        errors = await failures(client, "i2i", "error")
    assert result["source"] == "model" and result["degraded"] is True
    assert result["missing_channels"] == ["i2i"]
    assert len(result["items"]) == 10
    assert all("i2i" not in entry["channels"] for entry in result["items"])
    assert took < 0.9, f"answered after {took:.2f} s"
    assert (timeouts, errors) == (1.0, 0.0)


async def test_a_late_async_channel_is_cancelled_at_its_deadline(
    tmp_path: Path, bundle: FakeBundle, monkeypatch: pytest.MonkeyPatch
) -> None:
    cancelled = asyncio.Event()

    async def never(self: HistoryChannel, *args: object) -> object:
        try:
            await asyncio.sleep(30)
        finally:
            cancelled.set()
        raise AssertionError("unreachable")

    monkeypatch.setattr(HistoryChannel, "propose", never)
    async with serving(tmp_path, bundle, channel_timeout_s=0.05) as client:
        await post_events(client, history("alice", HISTORY))
        result = await recall(client, k=10, exclude_seen=False)
        counted = await failures(client, "history", "timeout")
    assert result["missing_channels"] == ["history"] and result["degraded"] is True
    assert cancelled.is_set()
    assert counted == 1.0


async def test_a_smaller_k_is_the_prefix_of_a_larger_one(tmp_path: Path, bundle: FakeBundle) -> None:
    # Every channel hands max(k, min_depth) candidates to the merge, so up to min_depth the merge
    # sees the same lists whatever k is asked for.
    async with serving(tmp_path, bundle) as client:
        await post_events(client, history("alice", HISTORY))
        answers = {k: ids(await recall(client, k=k, exclude_seen=False, as_of=AS_OF)) for k in (5, 20, 40)}
    assert answers[5] == answers[20][:5] == answers[40][:5]
    assert answers[20] == answers[40][:20]
