"""The HNSW wrapper: exact reference search and ef_search tuned to a recall target."""

from collections.abc import Callable

import numpy as np
import pytest

from index.ann import ItemIndex, choose_ef, exact_top_k
from index.bundle import HnswParams


def _vectors(n: int, dim: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_exact_top_k_matches_a_full_sort() -> None:
    items, queries = _vectors(500, 16, 0), _vectors(7, 16, 1)
    for space in ("ip", "l2"):
        got = exact_top_k(items, queries, 10, space)
        if space == "ip":
            want = np.argsort(-(queries @ items.T), axis=1)[:, :10]
        else:
            want = np.argsort(((queries[:, None, :] - items[None]) ** 2).sum(-1), axis=1)[:, :10]
        assert [set(r) for r in got] == [set(r) for r in want]


LADDER = (1, 1.5, 2, 3, 4, 6, 8)


def test_choose_ef_picks_the_smallest_ladder_step_that_reaches_the_target() -> None:
    items, queries = _vectors(4000, 32, 2), _vectors(64, 32, 3)
    # a sparse graph, so that recall really depends on ef
    index = ItemIndex.build(items, HnswParams(M=4, ef_construction=20, ef_search=10))
    k = 50
    exact = exact_top_k(items, queries, k, "ip")
    chosen = []
    for target in (0.5, 0.9, 0.97):
        ef, recall = choose_ef(index, items, queries, k, target)
        chosen.append(ef)
        assert recall == index.recall_at(queries, exact, ef)
        assert recall >= target or ef == 8 * k
        step = LADDER.index(ef / k)
        if step > 0:
            assert index.recall_at(queries, exact, round(k * LADDER[step - 1])) < target
    assert chosen == sorted(chosen) and chosen[-1] > chosen[0]
    labels, _ = index.search(queries[:1], 5)  # tuning leaves the served ef alone
    assert index.params.ef_search == 10 and labels.shape == (1, 5)


class CountingIndex(ItemIndex):
    """An ItemIndex that remembers each search's k and whether it filtered."""

    def __init__(self, index: ItemIndex) -> None:
        super().__init__(index._index, index.params)
        self.calls: list[tuple[int, bool]] = []

    def search(
        self, queries: np.ndarray, k: int, allowed: Callable[[int], bool] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        self.calls.append((k, allowed is not None))
        return super().search(queries, k, allowed)


def exact_allowed(items: np.ndarray, query: np.ndarray, k: int, excluded: frozenset[int]) -> list[int]:
    order = np.argsort(-(items @ query[0]), kind="stable")
    return [int(label) for label in order if int(label) not in excluded][:k]


@pytest.mark.parametrize("k", [10, 50])
def test_exclusions_beyond_ef_are_filtered_inside_the_search_with_exactly_k_kept(k: int) -> None:
    rng = np.random.default_rng(3)
    items = rng.standard_normal((3000, 16)).astype(np.float32)
    index = CountingIndex(ItemIndex.build(items, HnswParams(space="ip", ef_search=64, M=16)))
    query = rng.standard_normal((1, 16)).astype(np.float32)
    nearest = exact_allowed(items, query, 400, frozenset())
    excluded = frozenset(nearest[:300])  # the query's own neighbourhood: what a heavy user has seen
    labels, scores = index.search_excluding(query, k, excluded)
    assert index.calls == [(k, True)]  # one search of k, filtered: not k + 300
    assert len(labels) == k and not set(labels.tolist()) & excluded
    assert np.all(np.diff(scores) <= 1e-6)  # best first
    truth = exact_allowed(items, query, k, excluded)
    assert len(set(labels.tolist()) & set(truth)) >= 0.9 * k


def test_exclusions_within_ef_over_fetch_once() -> None:
    rng = np.random.default_rng(4)
    items = rng.standard_normal((500, 16)).astype(np.float32)
    index = CountingIndex(ItemIndex.build(items, HnswParams(space="ip", ef_search=64)))
    query = rng.standard_normal((1, 16)).astype(np.float32)
    excluded = frozenset(exact_allowed(items, query, 20, frozenset()))
    labels, _ = index.search_excluding(query, 10, excluded)
    assert index.calls == [(30, False)]
    assert labels.tolist() == exact_allowed(items, query, 10, excluded)


def test_a_nearly_all_excluded_catalog_still_answers_what_is_left() -> None:
    rng = np.random.default_rng(5)
    items = rng.standard_normal((300, 8)).astype(np.float32)
    index = CountingIndex(ItemIndex.build(items, HnswParams(space="ip", ef_search=16)))
    query = rng.standard_normal((1, 8)).astype(np.float32)
    excluded = frozenset(range(5, 300))
    labels, _ = index.search_excluding(query, 10, excluded)
    assert sorted(labels.tolist()) == [0, 1, 2, 3, 4]
    assert index.calls[0] == (10, True)  # the filter came up short; the over-fetch finished it
