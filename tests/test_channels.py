"""The recall channels and the merge, one at a time, against hand-built histories and tables.

Every expected list and score here is computed by hand from the formulas the modules document
(``index.history``, ``index.i2i``, ``index.fusion``): a change to the scoring shows up as a
different number, not just a different order.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fakes import FakeBundle, make_vocab

from index.bundle import ChannelsSpec
from index.features import ACTION_CODE, Event, Session, group_sessions
from index.fusion import Candidates, FusionParams, fuse, merge, provenance
from index.history import HistoryParams, history_candidates
from index.i2i import I2I_FORMAT, I2IParams, ItemToItem, i2i_candidates
from service.channels.base import RequestContext
from service.channels.history import HistoryChannel
from service.channels.i2i import I2IChannel
from service.channels.popular import PopularChannel

N_ITEMS = 20
NOW = 1_700_000_000
EXPOSURE, CLICK, CART, PAY = (ACTION_CODE[a] for a in ("exposure", "click", "cart", "pay"))
NOTHING = np.zeros(0, dtype=np.int64)
VOCAB = make_vocab(N_ITEMS)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(1) as pool:
        yield pool


def item(label: int) -> str:
    """The id of catalog label ``label`` (``make_vocab`` keeps the given order)."""
    return f"item-{label:04d}"


def session(ts: int, *items: tuple[int, int], request_id: str | None = None) -> Session:
    """A session at ``ts`` with (label, action code) items."""
    return Session(request_id or f"r{ts}", ts, "default", tuple((item(label), code) for label, code in items))


def context(
    sessions: Sequence[Session],
    *,
    depth: int = 10,
    exclude_seen: bool = False,
    excluded: Sequence[int] = (),
    scene: str = "default",
    now: int = NOW,
) -> RequestContext:
    labels = sorted(set(excluded))
    return RequestContext(
        user_id="alice",
        sessions=list(sessions),
        scene=scene,
        now=now,
        depth=depth,
        exclude_seen=exclude_seen,
        excluded=np.asarray(labels, dtype=np.int64),
        excluded_set=frozenset(labels),
    )


def as_lists(candidates: Candidates) -> tuple[list[int], list[float]]:
    labels, scores = candidates
    assert labels.dtype == np.int64 and scores.dtype == np.float32
    return labels.tolist(), scores.tolist()


def history(
    sessions: Sequence[Session], depth: int = 10, excluded: Sequence[int] = (), **params: object
) -> tuple[list[int], list[float]]:
    found = history_candidates(
        sessions,
        VOCAB,
        NOW,
        HistoryParams.model_validate(params),
        depth,
        np.asarray(excluded, dtype=np.int64),
    )
    return as_lists(found)


# --- history: recency, frequency, action depth ----------------------------------------------


def test_history_ranks_by_action_depth_pay_over_cart_over_click_over_exposure() -> None:
    now = session(NOW, (1, CLICK), (4, EXPOSURE), (9, PAY), (5, CART))
    labels, scores = history([now])
    # Default weights (exposure 0.1, click 1, cart 2, pay 4), no decay at age 0; the labels are
    # chosen so that label order would give a different answer.
    assert labels == [9, 5, 1, 4]
    assert scores == pytest.approx([4.0, 2.0, 1.0, 0.1])


def test_history_a_recent_item_beats_an_old_one_with_the_same_action() -> None:
    old = session(NOW - 60 * 86400, (1, CLICK))
    month_old = session(NOW - 30 * 86400, (2, CLICK))
    today = session(NOW, (7, CLICK))
    labels, scores = history([old, month_old, today])
    assert labels == [7, 2, 1]
    assert scores == pytest.approx([1.0, 0.5, 0.25])  # the default half-life is 30 days


def test_history_two_sessions_beat_one_more_recent_session() -> None:
    sessions = [
        session(NOW - 2 * 86400, (8, CLICK)),
        session(NOW - 86400, (8, CLICK)),
        session(NOW, (3, CLICK)),
    ]
    labels, scores = history(sessions)
    assert labels == [8, 3]
    assert scores == pytest.approx([0.5 ** (2 / 30) + 0.5 ** (1 / 30), 1.0])


def test_history_counts_sessions_not_events_and_keeps_the_deepest_action() -> None:
    """Clicking an item then paying for it in one request is one pay, not a pay plus a click."""
    events = [
        Event("alice", item(2), NOW, "click", "default", "r1"),
        Event("alice", item(2), NOW + 5, "pay", "default", "r1"),
        Event("alice", item(2), NOW + 9, "click", "default", "r1"),
        Event("alice", item(6), NOW + 1, "click", "default", "r1"),
    ]
    labels, scores = history(group_sessions(events))
    assert labels == [2, 6]
    assert scores == pytest.approx([4.0, 1.0])


def test_history_uses_the_bundles_fitted_weights() -> None:
    day_old = session(NOW - 86400, (3, CLICK), (4, EXPOSURE))
    labels, scores = history([day_old], action_weights=(0.0, 0.0, 1.0, 1.0, 1.0), half_life_days=1.0)
    assert labels == [3]  # a zero weight proposes nothing: only positive scores
    assert scores == pytest.approx([0.5])


def test_history_respects_depth_exclusions_and_ignores_items_outside_the_catalog() -> None:
    sessions = [session(NOW, (1, PAY), (2, CART), (3, CLICK))]
    sessions.append(Session("r-new", NOW, "default", (("brand-new-item", PAY),)))
    assert history(sessions)[0] == [1, 2, 3]
    assert history(sessions, depth=2)[0] == [1, 2]
    assert history(sessions, excluded=[1, 3])[0] == [2]


def test_history_breaks_ties_by_label() -> None:
    labels, _ = history([session(NOW, (7, CLICK), (2, CLICK), (5, CLICK))])
    assert labels == [2, 5, 7]


def test_history_ties_at_the_depth_cut_are_broken_by_label() -> None:
    sessions = [session(NOW, (0, CLICK), (1, CLICK), (2, PAY), (3, PAY))]
    full, _ = history(sessions)
    assert full == [2, 3, 0, 1]
    for depth in range(1, 4):
        assert history(sessions, depth=depth)[0] == full[:depth]


@pytest.mark.anyio
async def test_history_channel_proposes_the_users_items_unless_seen_ones_are_excluded() -> None:
    spec = ChannelsSpec(history=HistoryParams(half_life_days=10.0))
    bundle = FakeBundle(n_items=N_ITEMS, channels=spec)
    sessions = [session(NOW - 10 * 86400, (4, PAY)), session(NOW - 5 * 86400, (6, CLICK))]
    channel = HistoryChannel()
    assert channel.available(bundle)
    labels, scores = as_lists(await channel.propose(context(sessions, now=NOW), bundle))
    assert labels == [4, 6]
    assert scores == pytest.approx([4.0 * 0.5, 0.5**0.5])  # the manifest's half-life, the query's time
    # A replay at an earlier time (as_of) decays from that time.
    early = context(sessions, now=NOW - 5 * 86400)
    assert as_lists(await channel.propose(early, bundle))[1] == pytest.approx([4.0 * 0.5**0.5, 1.0])
    # Every item it could propose is seen.
    assert as_lists(await channel.propose(context(sessions, exclude_seen=True), bundle)) == ([], [])


@pytest.mark.anyio
async def test_history_channel_is_not_available_on_a_legacy_bundle() -> None:
    legacy = FakeBundle(n_items=N_ITEMS)
    channel = HistoryChannel()
    assert not channel.available(legacy)
    assert as_lists(await channel.propose(context([session(NOW, (4, PAY))]), legacy)) == ([], [])


# --- i2i: neighbours of recent engaged items ------------------------------------------------


def table(rows: dict[int, list[tuple[int, float]]], n_items: int = N_ITEMS) -> ItemToItem:
    """A CSR table from {row label: [(neighbour label, weight), …]}, rows absent being empty."""
    indptr, indices, weights = [0], [], []
    for row in range(n_items):
        for neighbour, weight in rows.get(row, []):
            indices.append(neighbour)
            weights.append(weight)
        indptr.append(len(indices))
    return ItemToItem(
        np.asarray(indptr, dtype=np.int64),
        np.asarray(indices, dtype=np.int32),
        np.asarray(weights, dtype=np.float32),
    )


TABLE = table({0: [(5, 0.5), (6, 0.25)], 1: [(6, 1.0), (7, 0.5)], 2: [(8, 1.0)], 3: [(9, 1.0)]})
# Oldest first: item 1 clicked, then item 0 paid, then a session where item 2 was only shown.
USER = [session(100, (1, CLICK)), session(200, (0, PAY)), session(300, (2, EXPOSURE))]


def i2i(
    sessions: Sequence[Session], depth: int = 10, excluded: Sequence[int] = (), **params: object
) -> tuple[list[int], list[float]]:
    found = i2i_candidates(
        sessions, VOCAB, TABLE, I2IParams.model_validate(params), depth, np.asarray(excluded, dtype=np.int64)
    )
    return as_lists(found)


def test_i2i_sums_neighbour_weights_decayed_by_engaged_sessions_ago() -> None:
    labels, scores = i2i(USER)
    # Item 0 (latest engaged session, weight 1) and item 1 (one before, weight 0.8):
    # 6 = 0.25 + 0.8 * 1.0, 5 = 0.5, 7 = 0.8 * 0.5.
    assert labels == [6, 5, 7]
    assert scores == pytest.approx([1.05, 0.5, 0.4])
    assert i2i(USER, decay=0.5)[1] == pytest.approx([0.75, 0.5, 0.25])


def test_i2i_ignores_exposure_only_sessions_and_exposures() -> None:
    """Item 2 was only shown: its neighbour 8 is not proposed, and the exposure-only session does
    not push the engaged ones further into the past."""
    assert i2i(USER) == i2i(USER[:2])
    mixed = [session(100, (1, CLICK), (3, EXPOSURE))]
    assert i2i(mixed)[0] == [6, 7]


def test_i2i_queries_only_the_recent_engaged_sessions() -> None:
    labels, scores = i2i(USER, recent_sessions=1)
    assert labels == [5, 6]  # item 0's neighbours only
    assert scores == pytest.approx([0.5, 0.25])


def test_i2i_respects_exclusions_and_depth() -> None:
    labels, scores = i2i(USER, excluded=[6])
    assert labels == [5, 7]
    assert scores == pytest.approx([0.5, 0.4])
    assert i2i(USER, depth=2)[0] == [6, 5]
    assert i2i([session(100, (4, PAY))]) == ([], [])  # an item with no neighbours
    assert i2i([]) == ([], [])


def test_i2i_table_is_built_with_the_documented_weights() -> None:
    # User 0: session 0 = {0, 1}; user 1: session 0 = {0, 2}, session 1 = {1}.
    owner = np.asarray([0, 0, 1, 1, 1], dtype=np.int64)
    position = np.asarray([0, 0, 0, 0, 1], dtype=np.int64)
    labels = np.asarray([0, 1, 0, 2, 1], dtype=np.int64)
    n0, n1, n2 = 2, 2, 1  # engaged sessions per item

    def rows(params: I2IParams) -> dict[int, list[tuple[int, float]]]:
        built = ItemToItem.build(owner, position, labels, 3, params)
        out = {}
        for row in range(3):
            span = slice(built.indptr[row], built.indptr[row + 1])
            out[row] = list(zip(built.indices[span].tolist(), built.weights[span].tolist(), strict=True))
        return out

    # Same session only, alpha 0 (P(b | a) = c(a, b) / n_a); ties by label.
    assert rows(I2IParams(window=0)) == {0: [(1, 1 / n0), (2, 1 / n0)], 1: [(0, 1 / n1)], 2: [(0, 1 / n2)]}
    # alpha 1 divides by n_b instead.
    by_target = {0: [(2, 1 / n2), (1, 1 / n1)], 1: [(0, 1 / n0)], 2: [(0, 1 / n0)]}
    assert rows(I2IParams(window=0, alpha=1.0)) == by_target
    # Window 1: user 1's consecutive sessions co-occur too (user 0's session is another user's).
    assert rows(I2IParams(window=1)) == {
        0: [(1, 2 / n0), (2, 1 / n0)],
        1: [(0, 2 / n1), (2, 1 / n1)],
        2: [(0, 1 / n2), (1, 1 / n2)],
    }
    assert rows(I2IParams(window=1, neighbours=1)) == {0: [(1, 1.0)], 1: [(0, 1.0)], 2: [(0, 1.0)]}


@pytest.mark.anyio
async def test_i2i_channel_runs_the_bundles_table_with_the_manifests_params(
    executor: ThreadPoolExecutor,
) -> None:
    spec = ChannelsSpec(i2i=I2IParams(decay=0.5))
    bundle = FakeBundle(n_items=N_ITEMS, channels=spec, i2i=TABLE)
    channel = I2IChannel(executor)
    assert channel.available(bundle)
    labels, scores = as_lists(await channel.propose(context(USER, excluded=[5]), bundle))
    assert labels == [6, 7]
    assert scores == pytest.approx([0.75, 0.25])
    assert as_lists(await channel.propose(context(USER, depth=1), bundle))[0] == [6]


@pytest.mark.anyio
async def test_i2i_channel_is_not_available_without_a_table(executor: ThreadPoolExecutor) -> None:
    channel = I2IChannel(executor)
    no_params = FakeBundle(n_items=N_ITEMS, channels=ChannelsSpec(), i2i=TABLE)
    no_table = FakeBundle(n_items=N_ITEMS, channels=ChannelsSpec(i2i=I2IParams()))
    for bundle in (FakeBundle(n_items=N_ITEMS), no_params, no_table):
        assert not channel.available(bundle)
        assert as_lists(await channel.propose(context(USER), bundle)) == ([], [])


# --- i2i table file ------------------------------------------------------------------------


def save_raw(path: Path, **arrays: object) -> Path:
    fields: dict[str, Any] = {
        "format": np.int64(I2I_FORMAT),
        "indptr": TABLE.indptr,
        "indices": TABLE.indices,
        "weights": TABLE.weights,
        **arrays,
    }
    with path.open("wb") as f:
        np.savez(f, **fields)
    return path


def test_i2i_table_round_trips(tmp_path: Path) -> None:
    TABLE.save(tmp_path / "i2i.npz")
    loaded = ItemToItem.load(tmp_path / "i2i.npz", N_ITEMS)
    assert loaded.n_items == N_ITEMS and loaded.nnz == TABLE.nnz
    assert np.array_equal(loaded.indptr, TABLE.indptr)
    assert np.array_equal(loaded.indices, TABLE.indices)
    assert np.array_equal(loaded.weights, TABLE.weights)


def test_i2i_table_of_another_catalog_size_is_refused(tmp_path: Path) -> None:
    TABLE.save(tmp_path / "i2i.npz")
    with pytest.raises(ValueError, match=f"i2i table has {N_ITEMS} rows, the catalog {N_ITEMS + 1} items"):
        ItemToItem.load(tmp_path / "i2i.npz", N_ITEMS + 1)
    with pytest.raises(ValueError, match=f"i2i table has {N_ITEMS} rows, the catalog {N_ITEMS - 1} items"):
        ItemToItem.load(tmp_path / "i2i.npz", N_ITEMS - 1)


@pytest.mark.parametrize("bad", [N_ITEMS, N_ITEMS + 7, -1])
def test_i2i_table_with_labels_out_of_the_catalog_is_refused(tmp_path: Path, bad: int) -> None:
    indices = TABLE.indices.astype(np.int64)
    indices[2] = bad
    path = save_raw(tmp_path / "i2i.npz", indices=indices)
    with pytest.raises(ValueError, match="i2i neighbour labels out of the catalog's range"):
        ItemToItem.load(path, N_ITEMS)


def test_i2i_table_with_a_label_beyond_int32_is_refused(tmp_path: Path) -> None:
    indices = TABLE.indices.astype(np.int64)
    indices[0] = 2**32 + 3
    path = save_raw(tmp_path / "i2i.npz", indices=indices)
    with pytest.raises(ValueError, match="out of the catalog's range"):
        ItemToItem.load(path, N_ITEMS)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_i2i_table_with_non_finite_weights_is_refused(tmp_path: Path, bad: float) -> None:
    weights = TABLE.weights.copy()
    weights[-1] = bad
    with pytest.raises(ValueError, match="i2i weights are not all finite"):
        ItemToItem.load(save_raw(tmp_path / "i2i.npz", weights=weights), N_ITEMS)


def test_i2i_table_of_another_format_is_refused(tmp_path: Path) -> None:
    path = save_raw(tmp_path / "i2i.npz", format=np.int64(I2I_FORMAT + 1))
    with pytest.raises(ValueError, match=f"i2i format {I2I_FORMAT + 1}, this build reads {I2I_FORMAT}"):
        ItemToItem.load(path, N_ITEMS)


@pytest.mark.parametrize(
    "broken",
    [
        {"indptr": np.r_[1, TABLE.indptr[1:]]},  # does not start at 0
        {"indptr": np.r_[TABLE.indptr[:-1], TABLE.nnz + 1]},  # ends past the neighbours
        {"indptr": np.r_[0, 3, 2, TABLE.indptr[3:]]},  # a row of negative length
    ],
    ids=["start", "end", "decreasing"],
)
def test_i2i_table_with_broken_row_pointers_is_refused(tmp_path: Path, broken: dict[str, np.ndarray]) -> None:
    with pytest.raises(ValueError, match="i2i row pointers are not a valid CSR index"):
        ItemToItem.load(save_raw(tmp_path / "i2i.npz", **broken), N_ITEMS)


def test_i2i_table_with_fewer_weights_than_neighbours_is_refused(tmp_path: Path) -> None:
    path = save_raw(tmp_path / "i2i.npz", weights=TABLE.weights[:-1])
    with pytest.raises(ValueError, match=f"i2i has {TABLE.nnz} neighbours but {TABLE.nnz - 1} weights"):
        ItemToItem.load(path, N_ITEMS)


# --- popular --------------------------------------------------------------------------------

POPULAR = {
    "*": [item(5), item(9), item(1), item(3)],
    "search": [item(12), item(5), "not-in-catalog", item(7)],
}


@pytest.mark.anyio
async def test_popular_takes_the_scene_list_then_the_all_scenes_list() -> None:
    bundle = FakeBundle(n_items=N_ITEMS, popularity=POPULAR)
    channel = PopularChannel()

    async def popular(scene: str, depth: int) -> tuple[list[int], list[float]]:
        return as_lists(await channel.propose(context([], scene=scene, depth=depth), bundle))

    labels, scores = await popular("search", 5)
    # Unknown ids skipped, an item on both lists once, at its first place.
    assert labels == [12, 5, 7, 9, 1]
    assert scores == pytest.approx([1.0, 1 / 2, 1 / 3, 1 / 4, 1 / 5])
    assert (await popular("feed", 10))[0] == [5, 9, 1, 3]  # a scene without a list of its own
    assert (await popular("search", 10))[0] == [12, 5, 7, 9, 1, 3]  # no padding: the pipeline pads


@pytest.mark.anyio
async def test_popular_channel_skips_excluded_items_and_stops_at_depth() -> None:
    bundle = FakeBundle(n_items=N_ITEMS, popularity=POPULAR)
    channel = PopularChannel()
    assert channel.available(bundle)
    labels, scores = as_lists(await channel.propose(context([], scene="search", excluded=[5, 12]), bundle))
    assert labels == [7, 9, 1, 3]
    assert scores == pytest.approx([1.0, 1 / 2, 1 / 3, 1 / 4])  # ranks after the exclusions
    assert as_lists(await channel.propose(context([], scene="search", depth=2), bundle))[0] == [12, 5]


# --- fusion ---------------------------------------------------------------------------------


def ranked(*labels: int, scores: Sequence[float] | None = None) -> Candidates:
    values = scores if scores is not None else [1.0 / (n + 1) for n in range(len(labels))]
    return np.asarray(labels, dtype=np.int64), np.asarray(values, dtype=np.float32)


def fused(lists: dict[str, Candidates], k: int = 100, **params: object) -> tuple[list[int], list[float]]:
    labels, scores = fuse(lists, FusionParams.model_validate(params), k)
    return labels.tolist(), scores.tolist()


def test_rrf_orders_by_the_weighted_reciprocal_ranks() -> None:
    lists = {"nsp": ranked(10, 11, 12), "history": ranked(12, 13)}
    labels, scores = fused(lists, weights={"nsp": 1.0, "history": 2.0})
    expected = {10: 1 / 61, 11: 1 / 62, 12: 1 / 63 + 2 / 61, 13: 2 / 62}
    assert labels == [12, 13, 10, 11]
    assert scores == pytest.approx([expected[label] for label in labels])
    # A channel without a weight counts 1; rrf_k comes from the manifest.
    labels, scores = fused(lists, rrf_k=0)
    assert labels == [12, 10, 11, 13]  # 11 and 13 tie at 1/2: the lower label first
    assert scores == pytest.approx([1 / 3 + 1, 1.0, 1 / 2, 1 / 2])


def test_rrf_ignores_the_channels_own_scores() -> None:
    same_ranks = {"nsp": ranked(1, 2, scores=[9.0, 0.1]), "i2i": ranked(3, scores=[0.001])}
    assert fused(same_ranks)[0] == fused({"nsp": ranked(1, 2), "i2i": ranked(3)})[0] == [1, 3, 2]


def test_score_fusion_sums_min_max_normalised_scores() -> None:
    lists = {"nsp": ranked(10, 11, 12, scores=[3.0, 2.0, 1.0]), "i2i": ranked(12, 13, scores=[10.0, 4.0])}
    labels, scores = fused(lists, method="score")
    # nsp → 1, 0.5, 0; i2i → 1, 0. 10 and 12 tie at 1.0: the lower label first.
    assert labels == [10, 12, 11, 13]
    assert scores == pytest.approx([1.0, 1.0, 0.5, 0.0])
    labels, scores = fused(lists, method="score", weights={"i2i": 3.0})
    assert labels == [12, 10, 11, 13]
    assert scores == pytest.approx([3.0, 1.0, 0.5, 0.0])
    # A one-item list (or a flat one) normalises to 1.0 per item.
    assert fused({"history": ranked(4, scores=[0.2])}, method="score") == ([4], [1.0])
    assert fused({"history": ranked(4, 2, scores=[0.2, 0.2])}, method="score") == ([2, 4], [1.0, 1.0])


def test_a_zero_weight_channel_is_in_the_provenance_but_does_not_move_the_ranking() -> None:
    lists = {"nsp": ranked(10, 11, 12), "history": ranked(12, 13)}
    muted = {**lists, "popular": ranked(11, 99, 13)}
    weights = {"popular": 0.0}
    assert fused(muted, weights=weights) == fused(lists)  # 99 alone in the muted list: not in the answer
    labels, _ = fuse(muted, FusionParams(weights=weights), 100)
    assert labels.tolist() == [12, 10, 11, 13]
    assert provenance(labels, muted) == [
        {"nsp": 3, "history": 1},  # 12
        {"nsp": 1},  # 10
        {"nsp": 2, "popular": 1},  # 11
        {"history": 2, "popular": 3},  # 13
    ]
    assert fused(muted, weights={"popular": -1.0}) == fused(lists)  # a negative weight counts as 0
    everything_muted = {"nsp": 0.0, "history": 0.0, "popular": 0.0}
    assert fused(muted, weights=everything_muted) == ([], [])


def test_ties_break_by_label_and_k_cuts_the_list() -> None:
    mirrored = {"nsp": ranked(30, 20, 10), "i2i": ranked(10, 20, 30)}
    labels, scores = fused(mirrored)
    assert labels == [10, 30, 20]
    assert scores == pytest.approx([1 / 61 + 1 / 63] * 2 + [2 / 62])
    assert fused({"nsp": ranked(7, 3)}, k=1)[0] == [7]
    assert fused({}) == ([], [])
    assert fused({"nsp": ranked()}) == ([], [])


def test_the_top_k_is_a_prefix_of_a_longer_answer() -> None:
    # Two equally weighted lists: the items at the same rank in each tie.
    lists = {"nsp": ranked(*range(18, -1, -2)), "i2i": ranked(*range(19, 0, -2))}
    everything = fused(lists)[0]
    assert everything[:4] == [18, 19, 16, 17]
    for k in range(1, len(everything)):
        assert fused(lists, k=k)[0] == everything[:k], k


def test_provenance_gives_each_channels_rank_from_one() -> None:
    lists = {"nsp": ranked(4, 8, 15, 16), "history": ranked(16, 4), "i2i": ranked()}
    labels = np.asarray([16, 4, 23, 8], dtype=np.int64)
    assert provenance(labels, lists) == [{"nsp": 4, "history": 1}, {"nsp": 1, "history": 2}, {}, {"nsp": 2}]
    assert provenance(np.zeros(0, dtype=np.int64), lists) == []


@pytest.mark.parametrize("weight", [1.0, 2.5])
def test_merge_of_one_list_equals_fuse_and_provenance(weight: float) -> None:
    one = (np.asarray([7, 3, 9, 1], dtype=np.int64), np.asarray([0.9, 0.8, 0.8, 0.1], dtype=np.float32))
    lists = {"nsp": one, "history": (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32))}
    params = FusionParams(weights={"nsp": weight})
    labels, scores, hits = merge(lists, params, 3)
    expected_labels, expected_scores = fuse(lists, params, 3)
    assert labels.tolist() == expected_labels.tolist() == [7, 3, 9]
    assert scores.tolist() == pytest.approx(expected_scores.tolist())
    assert hits == provenance(expected_labels, lists) == [{"nsp": 1}, {"nsp": 2}, {"nsp": 3}]
