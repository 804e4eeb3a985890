"""The HNSW wrapper: exact reference search and ef_search tuned to a recall target."""

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
    """An ItemIndex that remembers the k of each search."""

    def __init__(self, index: ItemIndex) -> None:
        super().__init__(index._index, index.params)
        self.calls: list[int] = []

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        self.calls.append(k)
        return super().search(queries, k)


def exact_allowed(items: np.ndarray, query: np.ndarray, k: int, excluded: frozenset[int]) -> list[int]:
    order = np.argsort(-(items @ query[0]), kind="stable")
    return [int(label) for label in order if int(label) not in excluded][:k]


def world(
    seed: int, n: int = 3000, dim: int = 16, ef: int = 64
) -> tuple[np.ndarray, CountingIndex, np.ndarray]:
    rng = np.random.default_rng(seed)
    items = rng.standard_normal((n, dim)).astype(np.float32)
    index = CountingIndex(ItemIndex.build(items, HnswParams(space="ip", ef_search=ef, M=16)))
    return items, index, rng.standard_normal((1, dim)).astype(np.float32)


@pytest.mark.parametrize("k", [10, 50])
def test_many_exclusions_far_from_the_query_cost_one_search_of_ef(k: int) -> None:
    items, index, query = world(3)
    far = exact_allowed(items, -query, 1000, frozenset())  # a long history, nowhere near the query
    labels, _ = index.search_excluding(query, k, frozenset(far))
    assert index.calls == [64]  # not k + 1000
    assert len(labels) == k and not set(labels.tolist()) & set(far)
    assert len(set(labels.tolist()) & set(exact_allowed(items, query, k, frozenset(far)))) >= 0.9 * k


@pytest.mark.parametrize("k", [10, 50])
def test_exclusions_crowding_the_query_still_give_exactly_k_allowed(k: int) -> None:
    items, index, query = world(4)
    excluded = frozenset(exact_allowed(items, query, 300, frozenset()))  # all of its neighbourhood
    labels, scores = index.search_excluding(query, k, excluded)
    assert index.calls == [64, k + 300]  # ef first, then what is sure to hold k allowed
    assert len(labels) == k and not set(labels.tolist()) & excluded
    assert np.all(np.diff(scores) <= 1e-6)  # best first
    assert len(set(labels.tolist()) & set(exact_allowed(items, query, k, excluded))) >= 0.9 * k


def test_exclusions_within_ef_over_fetch_once() -> None:
    items, index, query = world(5, n=500)
    excluded = frozenset(exact_allowed(items, query, 20, frozenset()))
    labels, _ = index.search_excluding(query, 10, excluded)
    assert index.calls == [30]
    assert labels.tolist() == exact_allowed(items, query, 10, excluded)


def test_a_nearly_all_excluded_catalog_still_answers_what_is_left() -> None:
    _, index, query = world(6, n=300, dim=8, ef=16)
    labels, _ = index.search_excluding(query, 10, frozenset(range(5, 300)))
    assert sorted(labels.tolist()) == [0, 1, 2, 3, 4]
    assert index.calls[0] == 16 and index.calls[-1] == 300
