import numpy as np

from index.features import (
    COL,
    CONTEXT,
    ITEM,
    PAD,
    Event,
    Session,
    build_tokens,
    gap_bucket,
    group_sessions,
    stack_left_padded,
)
from index.vocab import ITEM_OFFSET, UNKNOWN_ITEM, Vocabulary

T0 = 1767225600  # 2026-01-01 00:00 UTC, a Thursday


def vocab() -> Vocabulary:
    ids = [f"i{i}" for i in range(10)]
    return Vocabulary.build(
        ids, [f"c{i % 3}" for i in range(10)], [float(i) for i in range(10)], ["home", "search"]
    )


def ev(item: str, ts: int, action: str, request: str, scene: str = "home") -> Event:
    return Event("u1", item, ts, action, scene, request)


def test_group_sessions_keeps_deepest_action_and_orders_by_time() -> None:
    events = [
        ev("i2", T0 + 100, "exposure", "r2", "search"),
        ev("i1", T0, "exposure", "r1"),
        ev("i3", T0 + 1, "exposure", "r1"),
        ev("i1", T0 + 2, "click", "r1"),
        ev("i1", T0 + 3, "exposure", "r1"),
    ]
    sessions = group_sessions(events)
    assert [s.request_id for s in sessions] == ["r1", "r2"]
    assert sessions[0].items == (("i1", 2), ("i3", 1))
    assert sessions[0].engaged_items() == ["i1"]
    assert sessions[1].scene == "search"


def test_build_tokens_layout_context_then_items_and_query_last() -> None:
    v = vocab()
    history = [
        Session("r1", T0, "home", (("i1", 2), ("i4", 1))),
        Session("r2", T0 + 7200, "search", (("nope", 1),)),
    ]
    tokens = build_tokens(history, "search", T0 + 7200 + 30, v)
    types = tokens[:, COL["token_type"]].tolist()
    assert types == [CONTEXT, ITEM, ITEM, CONTEXT, ITEM, CONTEXT]
    assert tokens[:, COL["session"]].tolist() == [0, 0, 0, 1, 1, 2]
    assert tokens[1, COL["item"]] == v.item_index("i1") + ITEM_OFFSET
    assert tokens[1, COL["action"]] == 2
    assert tokens[4, COL["item"]] == UNKNOWN_ITEM  # unknown ids never fail
    query = tokens[-1]
    assert query[COL["scene"]] == v.scene_token("search")
    assert query[COL["gap"]] == gap_bucket(30)
    assert tokens[0, COL["gap"]] == 0  # no earlier session
    assert tokens[3, COL["hour"]] == 2 and tokens[3, COL["weekday"]] == 3


def test_build_tokens_windows_sessions_and_items() -> None:
    v = vocab()
    history = [
        Session(f"r{j}", T0 + 3600 * j, "home", tuple((f"i{x}", 1) for x in range(8))) for j in range(30)
    ]
    tokens = build_tokens(history, "home", T0 + 3600 * 30, v, max_sessions=5, max_items=3)
    assert len(tokens) == 5 * (1 + 3) + 1
    assert tokens[:, COL["session"]].max() == 5
    # The first kept session still knows the gap to the dropped one before it.
    assert tokens[0, COL["gap"]] == gap_bucket(3600)


def test_stack_left_padded_puts_query_last() -> None:
    v = vocab()
    short = build_tokens([], "home", T0, v)
    long = build_tokens([Session("r", T0, "home", (("i1", 1),))], "home", T0 + 60, v)
    batch = stack_left_padded([short, long])
    assert batch.shape == (2, 3, len(COL))
    assert batch[0, :2, COL["token_type"]].tolist() == [PAD, PAD]
    assert np.array_equal(batch[:, -1, COL["token_type"]], [CONTEXT, CONTEXT])
