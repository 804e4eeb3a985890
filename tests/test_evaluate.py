"""The ranking harness: metric math on hand-made rankings, excluding seen items, rankings
checked at the seam, and retrieval through a real HNSW index against exact search."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pytest

from index.ann import ItemIndex, exact_top_k
from index.bundle import HnswParams
from index.features import ACTION_CODE, Session
from index.vocab import Vocabulary
from model_export.data import EvalCase
from model_export.metrics import hit_metrics
from model_export.ranking import evaluate, rank_all
from model_export.retrieval import VectorRanker

CLICK, EXPOSURE = ACTION_CODE["click"], ACTION_CODE["exposure"]


def make_vocab(n_items: int, scenes: Sequence[str] = ("feed",)) -> Vocabulary:
    return Vocabulary.build([f"i{i}" for i in range(n_items)], ["c"] * n_items, [1.0] * n_items, scenes)


def session(ts: int, *items: tuple[int, int], scene: str = "feed") -> Session:
    return Session(f"r{ts}", ts, scene, tuple((f"i{item}", action) for item, action in items))


def case(user: str, history: list[Session], targets: Sequence[int], ts: int = 10_000) -> EvalCase:
    return EvalCase(user, history, session(ts, *((t, CLICK) for t in targets)))


def test_hr_recall_ndcg_on_a_hand_made_ranking() -> None:
    ranked = np.array([[1, 5, 2, 7], [3, 4, -1, -1]])
    metrics = hit_metrics(ranked, [{1, 2}, {9}], ks=[2, 4])
    ideal = 1 + 1 / math.log2(3)  # two relevant items at ranks 1 and 2
    assert metrics["hr@2"] == pytest.approx(0.5)
    assert metrics["recall@2"] == pytest.approx(0.25)
    assert metrics["ndcg@2"] == pytest.approx((1 / ideal) / 2)
    assert metrics["hr@4"] == pytest.approx(0.5)
    assert metrics["recall@4"] == pytest.approx(0.5)
    assert metrics["ndcg@4"] == pytest.approx(((1 + 1 / math.log2(4)) / ideal) / 2)


def test_ndcg_ideal_counts_at_most_k_relevant_items() -> None:
    # Three targets but K = 1: a relevant item first is a perfect top-1 ranking.
    metrics = hit_metrics(np.array([[2, 0, 1]]), [{0, 1, 2}], ks=[1, 3])
    assert metrics["ndcg@1"] == pytest.approx(1.0)
    assert metrics["recall@1"] == pytest.approx(1 / 3)
    assert metrics["ndcg@3"] == pytest.approx(1.0)


def test_padding_never_counts_as_an_item() -> None:
    # Row 1's padding would share row 0's (case, item 4) key without the padding mask.
    metrics = hit_metrics(np.array([[0], [-1]]), [{4}, {0}], ks=[1])
    assert metrics["hr@1"] == 0.0


class FixedRanker:
    """Returns the given rows (cut to k), ignoring exclusion: for checking the harness."""

    def __init__(self, rows: np.ndarray) -> None:
        self.rows = rows

    def rank(self, cases: Sequence[EvalCase], k: int, exclude_seen: bool) -> np.ndarray:
        return self.rows[: len(cases), :k]


def test_harness_keeps_only_cases_with_catalog_targets_and_rejects_repeats() -> None:
    vocab = make_vocab(5)
    cases = [case("a", [session(1, (0, CLICK))], [1]), case("b", [session(1, (0, CLICK))], [])]
    assert evaluate(FixedRanker(np.array([[1, 2]])), cases, vocab, ks=[1]) == {
        "hr@1": 1.0,
        "recall@1": 1.0,
        "ndcg@1": 1.0,
    }
    with pytest.raises(ValueError, match="twice"):
        evaluate(FixedRanker(np.array([[1, 1]])), cases, vocab, ks=[2])
    with pytest.raises(ValueError, match="shape"):
        evaluate(FixedRanker(np.array([[1]])), cases, vocab, ks=[2])


def exact_ranker(
    users: np.ndarray, items: np.ndarray, vocab: Vocabulary, index: ItemIndex | None = None
) -> VectorRanker:
    """A VectorRanker whose user vector for case ``u<n>`` is ``users[n]``."""

    def user_vectors(cases: Sequence[EvalCase]) -> np.ndarray:
        return users[[int(c.user_id[1:]) for c in cases]]

    return VectorRanker(user_vectors, items, vocab, index)


def test_exclude_seen_drops_every_history_item_and_still_returns_k() -> None:
    rng = np.random.default_rng(0)
    vocab = make_vocab(50)
    items = rng.standard_normal((50, 8)).astype(np.float32)
    users = rng.standard_normal((3, 8)).astype(np.float32)
    favourites = exact_top_k(items, users, 10)
    # Each user's history holds their own 7 top items: 4 only exposed, 3 paid for.
    cases = []
    for n in range(3):
        exposed = session(1, *((int(i), EXPOSURE) for i in favourites[n, :4]))
        paid = session(2, *((int(i), ACTION_CODE["pay"]) for i in favourites[n, 4:7]))
        cases.append(case(f"u{n}", [exposed, paid], [0]))
    ranker = exact_ranker(users, items, vocab)
    with_seen = ranker.rank(cases, 10, exclude_seen=False)
    without = ranker.rank(cases, 10, exclude_seen=True)
    assert np.array_equal(with_seen, favourites)
    assert without.shape == (3, 10) and np.all(without >= 0)
    for n in range(3):
        assert not set(without[n].tolist()) & set(favourites[n, :7].tolist())
        # What is left is the exact ranking's next 10 items, in order.
        assert without[n].tolist() == exact_top_k(items, users[n : n + 1], 17)[0, 7:].tolist()


def test_exclude_seen_pads_when_the_catalog_runs_out() -> None:
    vocab = make_vocab(6)
    rng = np.random.default_rng(1)
    items = rng.standard_normal((6, 4)).astype(np.float32)
    cases = [case("u0", [session(1, (0, CLICK), (1, CLICK), (2, EXPOSURE))], [3])]
    ranked = exact_ranker(rng.standard_normal((1, 4)).astype(np.float32), items, vocab).rank(cases, 5, True)
    assert sorted(ranked[0, :3].tolist()) == [3, 4, 5]
    assert ranked[0, 3:].tolist() == [-1, -1]


def test_hnsw_ranker_agrees_with_exact_search() -> None:
    rng = np.random.default_rng(2)
    n_items, n_users = 2000, 200
    vocab = make_vocab(n_items)
    items = rng.standard_normal((n_items, 16)).astype(np.float32)
    users = rng.standard_normal((n_users, 16)).astype(np.float32)
    cases = [case(f"u{n}", [session(1, (n, CLICK))], [int(n) + 1]) for n in range(n_users)]
    exact = exact_ranker(users, items, vocab)
    hnsw = exact_ranker(users, items, vocab, ItemIndex.build(items, HnswParams(ef_search=100)))
    for exclude_seen in (False, True):
        a = rank_all(exact, cases, 20, exclude_seen)
        b = rank_all(hnsw, cases, 20, exclude_seen)
        overlap = np.mean([len(set(x) & set(y)) / 20 for x, y in zip(a.tolist(), b.tolist(), strict=True)])
        assert overlap > 0.95
        if exclude_seen:
            assert not np.any(b == np.arange(n_users)[:, None])  # each case's history item


def test_per_k_ranking_matches_the_prefix_for_exact_search() -> None:
    rng = np.random.default_rng(3)
    vocab = make_vocab(300)
    items = rng.standard_normal((300, 8)).astype(np.float32)
    users = rng.standard_normal((40, 8)).astype(np.float32)
    top = exact_top_k(items, users, 30)
    # Targets spread over ranks 0..29 so the metrics differ between K = 5 and K = 30.
    cases = [case(f"u{n}", [session(1, (int(top[n, -1]), CLICK))], [int(top[n, n % 30])]) for n in range(40)]
    ranker = exact_ranker(users, items, vocab)
    once = evaluate(ranker, cases, vocab, ks=[5, 30])
    assert once == evaluate(ranker, cases, vocab, ks=[5, 30], per_k=True)
    assert once["hr@5"] < once["hr@30"] == 1.0
