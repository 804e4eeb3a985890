"""The bm25 channel: ``index.bm25`` on a hand-built catalog with the real tokenizer and bm25s,
its files, and the channel through the real recall pipeline."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from fakes import FakeBundle, history
from text_bundles import TITLES, stage_text, text_indexes, tokenizer_for

from index.bm25 import BM25_FILES, Bm25Index, build_bm25
from index.bundle import Bm25Params, ChannelsSpec
from index.tokenizer import TOKENIZER_FILE, TextTokenizer
from service.metrics import Metrics
from service.recall import RecallPipeline, RecallQuery, standard_channels
from service.schemas import RecallResponse
from service.store import InMemorySessionStore

NONE = np.zeros(0, dtype=np.int64)
PARAMS = Bm25Params()


@pytest.fixture(scope="module")
def tokenizer() -> TextTokenizer:
    return tokenizer_for(TITLES)


@pytest.fixture(scope="module")
def index(tokenizer: TextTokenizer) -> Bm25Index:
    return build_bm25(TITLES, tokenizer, PARAMS)


def labels(index: Bm25Index, tokenizer: TextTokenizer, query: str, k: int = 10) -> list[int]:
    return index.search(query, tokenizer, k, NONE)[0].tolist()


@pytest.mark.parametrize(
    ("query", "first"),
    [
        ("hiking boots", 2),
        ("water bottle", 5),
        ("waterproof jacket", 7),
        ("WOOL Socks", 3),  # normalised like the titles
        ("yoga mat", 9),
        ("trail running sneakers", 8),
    ],
)
def test_the_item_a_query_describes_comes_first(
    index: Bm25Index, tokenizer: TextTokenizer, query: str, first: int
) -> None:
    found, scores = index.search(query, tokenizer, 3, NONE)
    assert found[0] == first
    assert found.dtype == np.int64 and scores.dtype == np.float32
    assert np.all(np.diff(scores) <= 0) and np.all(scores > 0)


def test_items_sharing_a_word_all_match_and_ties_break_by_label(
    index: Bm25Index, tokenizer: TextTokenizer
) -> None:
    assert sorted(labels(index, tokenizer, "running")) == [0, 1, 8]
    texts = ["blue wool scarf", "red wool hat", "green scarf", "red wool hat", "red wool hat"]
    twins = build_bm25(texts, tokenizer_for(texts), PARAMS)
    found, scores = twins.search("red hat", tokenizer_for(texts), 10, NONE)
    assert found.tolist() == [1, 3, 4] and scores[0] == scores[1] == scores[2]
    assert twins.search("red hat", tokenizer_for(texts), 2, NONE)[0].tolist() == [1, 3]
    assert twins.search("red hat", tokenizer_for(texts), 2, np.asarray([3]))[0].tolist() == [1, 4]


@pytest.mark.parametrize(
    ("typo", "item"), [("stainles", 5), ("waterprof jackt", 7), ("adidaas", 1), ("leatherr", 2)]
)
def test_a_typo_still_finds_its_item_through_shared_word_pieces(
    index: Bm25Index, tokenizer: TextTokenizer, typo: str, item: int
) -> None:
    assert set(tokenizer.pieces(typo)) - set(tokenizer.pieces(TITLES[item]))  # not the same pieces
    assert labels(index, tokenizer, typo)[0] == item


def test_excluded_labels_are_never_returned(index: Bm25Index, tokenizer: TextTokenizer) -> None:
    everything = labels(index, tokenizer, "running hiking sneakers")
    assert {0, 1, 2, 4, 7, 8} <= set(everything)
    excluded = np.asarray([8, 2, 0], dtype=np.int64)  # unsorted, as a caller might pass them
    found = index.search("running hiking sneakers", tokenizer, 10, excluded)[0].tolist()
    assert found == [label for label in everything if label not in {0, 2, 8}]
    outside = np.asarray([-1, 10, 10_000], dtype=np.int64)  # labels outside the catalog are ignored
    assert index.search("running", tokenizer, 10, outside)[0].tolist() == labels(index, tokenizer, "running")


def test_k_beyond_the_matches_returns_only_the_matches(index: Bm25Index, tokenizer: TextTokenizer) -> None:
    found, scores = index.search("leather", tokenizer, 50, NONE)
    assert found.tolist() == [2] and scores[0] > 0
    assert len(index.search("running", tokenizer, 2, NONE)[0]) == 2


@pytest.mark.parametrize("query", ["", "   ", "qqq", "xylophone ωψ", "!!!"])
def test_a_query_without_a_known_word_finds_nothing(
    index: Bm25Index, tokenizer: TextTokenizer, query: str
) -> None:
    found, scores = index.search(query, tokenizer, 10, NONE)
    assert len(found) == len(scores) == 0


def test_save_then_load_gives_the_same_answers(
    index: Bm25Index, tokenizer: TextTokenizer, tmp_path: Path
) -> None:
    index.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(BM25_FILES)
    loaded = Bm25Index.load(tmp_path, len(TITLES), PARAMS)
    for query in ["hiking boots", "running", "stainles", "socks shoes sneakers", "qqq"]:
        for excluded in (NONE, np.asarray([2, 8])):
            a, b = index.search(query, tokenizer, 5, excluded), loaded.search(query, tokenizer, 5, excluded)
            assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


@pytest.mark.parametrize("method", ["robertson", "atire", "bm25l", "bm25+"])
def test_every_bm25_variant_saves_loads_and_returns_only_matching_items(
    tokenizer: TextTokenizer, tmp_path: Path, method: str
) -> None:
    params = Bm25Params(method=method)  # type: ignore[arg-type]
    build_bm25(TITLES, tokenizer, params).save(tmp_path)
    loaded = Bm25Index.load(tmp_path, len(TITLES), params)
    # bm25l and bm25+ score items lacking every query word too: those must not come back.
    assert loaded.search("leather", tokenizer, 10, NONE)[0].tolist() == [2]
    assert loaded.search("hiking boots", tokenizer, 10, NONE)[0][0] == 2


def test_load_refuses_an_index_of_another_catalog_or_other_parameters(
    index: Bm25Index, tmp_path: Path
) -> None:
    index.save(tmp_path)
    with pytest.raises(ValueError, match=r"^bm25\.params\.json: index of 10 items, the catalog has 11"):
        Bm25Index.load(tmp_path, len(TITLES) + 1, PARAMS)
    with pytest.raises(ValueError, match=r"^bm25\.params\.json: index built with .*'k1': 1\.5"):
        Bm25Index.load(tmp_path, len(TITLES), Bm25Params(k1=0.9))
    (tmp_path / BM25_FILES[2]).unlink()
    with pytest.raises(OSError, match=rf"^{BM25_FILES[2]}: missing"):
        Bm25Index.load(tmp_path, len(TITLES), PARAMS)


def test_concurrent_searches_answer_as_one_search_does(index: Bm25Index, tokenizer: TextTokenizer) -> None:
    queries = ["hiking boots", "running", "stainles", "wool socks", "sneakers"] * 40
    expected = [labels(index, tokenizer, q, 4) for q in queries]
    start = threading.Barrier(4)

    def run(offset: int) -> list[list[int]]:
        start.wait()
        return [labels(index, tokenizer, q, 4) for q in queries[offset:] + queries[:offset]]

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(run, range(4)))
    for offset, got in enumerate(results):
        assert got == expected[offset:] + expected[:offset]


def test_the_tokenizer_and_the_index_round_trip_through_a_bundle_directory(
    tokenizer: TextTokenizer, index: Bm25Index, tmp_path: Path
) -> None:
    fields = stage_text(tmp_path, TITLES, bm25=PARAMS, tokenizer=tokenizer)
    assert fields["text"]["bm25"] == PARAMS.model_dump()
    assert {TOKENIZER_FILE, *BM25_FILES} == {p.name for p in tmp_path.iterdir()}
    loaded = TextTokenizer.load(tmp_path / TOKENIZER_FILE)
    texts = [*TITLES, "stainles", "WOOL  socks", "qqq", ""]
    assert np.array_equal(loaded.ids(texts, 12), tokenizer.ids(texts, 12))
    assert [loaded.pieces(t) for t in texts] == [tokenizer.pieces(t) for t in texts]
    reloaded = Bm25Index.load(tmp_path, len(TITLES), PARAMS)
    for query in ["waterprof jackt", "hiking boots"]:
        a, b = index.search(query, tokenizer, 5, NONE), reloaded.search(query, loaded, 5, NONE)
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


# --- the channel through the recall pipeline ----------------------------------------------------

pipeline_test = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def respond(query: RecallQuery) -> RecallResponse:
    bundle = FakeBundle(n_items=len(TITLES), channels=ChannelsSpec(), text=text_indexes(TITLES, bm25=PARAMS))
    store = InMemorySessionStore()
    await store.append(history("alice", ["item-0003", "item-0006"]))
    metrics = Metrics()
    with ThreadPoolExecutor(2) as executor:
        pipeline = RecallPipeline(store, standard_channels(executor, metrics), metrics, history_sessions=32)
        return await pipeline.recall(bundle, query)


async def recall(query: RecallQuery) -> list[tuple[str, dict[str, int]]]:
    response = await respond(query)
    assert response.source == "model" and not response.degraded
    return [
        (item.item_id, {name: hit.rank for name, hit in item.channels.items()}) for item in response.items
    ]


@pipeline_test
async def test_a_search_request_gets_bm25_items_with_their_provenance() -> None:
    items = await recall(RecallQuery(user_id="alice", k=10, query="hiking boots", exclude_seen=False))
    from_bm25 = sorted((hits["bm25"], item) for item, hits in items if "bm25" in hits)
    assert from_bm25 == [(1, "item-0002"), (2, "item-0007")]
    excluded = await recall(
        RecallQuery(user_id="alice", k=10, query="hiking boots", exclude_item_ids=["item-0002"])
    )
    assert [item for item, hits in excluded if "bm25" in hits] == ["item-0007"]


@pipeline_test
async def test_a_request_without_a_query_gets_no_bm25_items() -> None:
    for query in (None, ""):
        items = await recall(RecallQuery(user_id="alice", k=10, query=query, exclude_seen=False))
        assert len(items) == 10
        assert not [item for item, hits in items if "bm25" in hits]


@pipeline_test
async def test_a_search_from_a_user_without_history_is_answered_by_the_channels() -> None:
    """No history is no reason for the popularity fallback when the request has a query: the
    text channels need none."""
    response = await respond(RecallQuery(user_id="nobody", k=5, query="hiking boots"))
    assert response.source == "model" and response.scenario == "search"
    assert "bm25" in response.answered_channels
    from_bm25 = sorted(
        (item.channels["bm25"].rank, item.item_id) for item in response.items if "bm25" in item.channels
    )
    assert from_bm25 == [(1, "item-0002"), (2, "item-0007")]
    fallback = await respond(RecallQuery(user_id="nobody", k=5))
    assert fallback.source == "fallback" and fallback.answered_channels == []


@pipeline_test
async def test_a_recommendation_request_does_not_run_the_text_channels() -> None:
    response = await respond(RecallQuery(user_id="alice", k=5, exclude_seen=False))
    assert response.scenario == "recommendation"
    assert response.answered_channels and "bm25" not in response.answered_channels
