"""The baselines: each behaves as its name says on tiny hand-made histories, excludes seen items
while still returning k, learns from the training period only, and beats popularity where a
user's own past predicts the next session."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from index.features import ACTION_CODE, Session
from index.i2i import I2IParams
from index.vocab import Vocabulary
from model_export.baselines import (
    CooccurrenceRanker,
    PopularityRanker,
    UserHistoryRanker,
    fit_baselines,
)
from model_export.data import DAY, EvalCase, load_dataset
from model_export.ranking import Ranker, evaluate

EXPOSURE, CLICK, CART, PAY = (ACTION_CODE[a] for a in ("exposure", "click", "cart", "pay"))
N_ITEMS = 20
VOCAB = Vocabulary.build(
    [f"i{i}" for i in range(N_ITEMS)], ["c"] * N_ITEMS, [1.0] * N_ITEMS, ["feed", "search"]
)


def session(ts: int, *items: tuple[int, int], scene: str = "feed") -> Session:
    return Session(f"r{ts}", ts, scene, tuple((f"i{item}", action) for item, action in items))


def case(history: list[Session], scene: str = "feed", ts: int = 100 * DAY) -> EvalCase:
    return EvalCase("u", history, session(ts, (19, CLICK), scene=scene))


def ranked(ranker: Ranker, cases: list[EvalCase], k: int = 5, exclude_seen: bool = False) -> list[list[int]]:
    return ranker.rank(cases, k, exclude_seen).tolist()


# Training: item 0 engaged in 3 sessions, 1 in 2, 2 in 1 (in search), 3 only ever exposed.
TRAIN = {
    "a": [session(1, (0, CLICK), (3, EXPOSURE)), session(2, (0, PAY), (1, CLICK), (3, EXPOSURE))],
    "b": [session(3, (0, CART), (1, CLICK), (3, EXPOSURE)), session(4, (2, CLICK), scene="search")],
    "c": [session(5, (3, EXPOSURE), (4, EXPOSURE))],
}


def test_popularity_counts_engaged_sessions_not_exposures() -> None:
    ranker = PopularityRanker.fit(TRAIN, VOCAB, per_scene=False)
    assert ranked(ranker, [case([])], k=4) == [[0, 1, 2, 3]]  # 3 and 4 tie at 0: by index


def test_scene_popularity_uses_the_target_scene_and_falls_back_to_global() -> None:
    ranker = PopularityRanker.fit(TRAIN, VOCAB, per_scene=True)
    rows = ranked(ranker, [case([], scene="search"), case([], scene="homepage")], k=3)
    assert rows == [[2, 0, 1], [0, 1, 2]]


def test_popularity_from_lists_is_the_service_fallback_order() -> None:
    ranker = PopularityRanker.from_lists({"*": ["i5", "i0"], "search": ["i7"]}, VOCAB, per_scene=True)
    assert ranked(ranker, [case([], scene="search"), case([])], k=4) == [[7, 5, 0, 1], [5, 0, 1, 2]]


def test_user_history_ranks_the_repeated_purchase_first() -> None:
    history = [
        session(1 * DAY, (5, PAY), (8, EXPOSURE)),
        session(10 * DAY, (5, PAY)),
        session(20 * DAY, (5, PAY)),
        session(98 * DAY, (6, CLICK)),  # recent, but one click
        session(99 * DAY, (7, EXPOSURE)),  # most recent, only shown
    ]
    ranker = UserHistoryRanker.fit(TRAIN, VOCAB)
    assert ranked(ranker, [case(history)], k=6) == [[5, 6, 7, 8, 0, 1]]


def test_user_history_prefers_the_more_recent_of_equal_actions() -> None:
    ranker = UserHistoryRanker.fit(TRAIN, VOCAB)
    history = [session(1 * DAY, (9, CART)), session(90 * DAY, (10, CART))]
    assert ranked(ranker, [case(history)], k=2) == [[10, 9]]


def co_bought_world() -> dict[str, list[Session]]:
    """10 users buy 11 with 12 (6 of them click 14 next); 2 buy 11 with 13; 30 click only 0."""
    train = {}
    for u in range(10):
        train[f"x{u}"] = [session(1, (11, PAY), (12, PAY))] + ([session(2, (14, CLICK))] if u < 6 else [])
    for u in range(2):
        train[f"y{u}"] = [session(1, (11, PAY), (13, PAY))]
    for u in range(30):  # item 0 is globally popular, never with 11
        train[f"z{u}"] = [session(1, (0, CLICK))]
    return train


def test_cooccurrence_ranks_the_co_bought_item_first() -> None:
    ranker = CooccurrenceRanker.fit(co_bought_world(), VOCAB, I2IParams(window=1))
    assert ranked(ranker, [case([session(50, (11, PAY))])], k=4) == [[12, 14, 13, 0]]


def test_cooccurrence_window_limits_which_sessions_pair_up() -> None:
    ranker = CooccurrenceRanker.fit(co_bought_world(), VOCAB, I2IParams(window=0))
    assert 14 not in ranked(ranker, [case([session(50, (11, PAY))])], k=2)[0]


def test_cooccurrence_ignores_all_but_the_recent_engaged_sessions() -> None:
    ranker = CooccurrenceRanker.fit(co_bought_world(), VOCAB, I2IParams(window=1, recent_sessions=1))
    # 11 was engaged two engaged sessions ago (exposure-only sessions do not count).
    history = [session(40, (11, PAY)), session(41, (5, CLICK)), session(42, (11, EXPOSURE))]
    assert ranked(ranker, [case(history)], k=1) == [[0]]


@pytest.mark.parametrize(
    "name", ["popularity (global)", "popularity (per scene)", "user history", "co-occurrence"]
)
def test_exclude_seen_removes_history_and_still_returns_k(name: str) -> None:
    ranker = fit_baselines({**TRAIN, **co_bought_world()}, VOCAB)[name]
    history = [session(1, (0, CLICK), (11, PAY)), session(2, (1, EXPOSURE), (12, EXPOSURE))]
    rows = ranker.rank([case(history), case([])], 10, exclude_seen=True)
    assert rows.shape == (2, 10) and np.all(rows >= 0)
    assert not {0, 1, 11, 12} & set(rows[0].tolist())
    assert len(set(rows[1].tolist())) == 10
    # The whole catalog minus the seen items, and no more.
    full = ranker.rank([case(history)], N_ITEMS, exclude_seen=True)[0]
    assert sorted(full[full >= 0].tolist()) == sorted(set(range(N_ITEMS)) - {0, 1, 11, 12})


def write_log(directory: Path, rows: list[tuple[str, int, int, str]]) -> Path:
    """rows: (user, item, day, action); one session per (user, day)."""
    directory.mkdir(parents=True, exist_ok=True)
    lines = ["user_id,item_id,ts,action,scene,request_id"]
    for user, item, day, action in sorted(rows, key=lambda r: r[2]):
        lines.append(f"{user},i{item},{1_700_000_000 + day * DAY + 3600},{action},feed,{user}-{day}")
    (directory / "events.csv").write_text("\n".join(lines) + "\n")
    catalog = ["item_id,category,price,title,brand,colour,first_day"]
    catalog += [f"i{i},c,1.0,t,b,c,0" for i in range(N_ITEMS)]
    (directory / "catalog.csv").write_text("\n".join(catalog) + "\n")
    return directory


def test_baselines_learn_from_the_training_period_only(tmp_path: Path) -> None:
    # Item 1 is clicked by 4 users in training; item 2 by 10 users in the validation and test days.
    rows = [(f"v{u}", 1, 0, "click") for u in range(4)]
    rows += [(f"w{u}", 2, day, "click") for u in range(10) for day in (8, 9)]
    rows += [(f"w{u}", 3, 1, "exposure") for u in range(10)]  # history for the w users' cases
    data = write_log(tmp_path, rows)
    dataset = load_dataset(data / "events.csv", data / "catalog.csv", val_days=1, test_days=1)
    assert len(dataset.val) == len(dataset.test) == 10
    for name, ranker in fit_baselines(dataset.train, dataset.vocab).items():
        assert ranked(ranker, [case([])], k=1) == [[1]], name


def test_history_baselines_beat_popularity_on_the_synthetic_world(world: Path) -> None:
    dataset = load_dataset(world / "events.csv", world / "catalog.csv")
    results = {
        name: evaluate(ranker, dataset.val, dataset.vocab, ks=[100])
        for name, ranker in fit_baselines(dataset.train, dataset.vocab).items()
    }
    popularity = results["popularity (global)"]["hr@100"]
    assert results["user history"]["hr@100"] > 1.5 * popularity
    assert results["co-occurrence"]["hr@100"] > 1.5 * popularity
