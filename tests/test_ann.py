"""The HNSW wrapper: exact reference search and ef_search tuned to a recall target."""

import numpy as np

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
