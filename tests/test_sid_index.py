"""The SID table, its trie and constrained beam search (index/sid_table.py, index/sid_trie.py)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from index.sid_layout import BOS_TOKEN, LEVELS, SidLayout
from index.sid_table import SID_TABLE_FILE, SidTable
from index.sid_trie import SID_TRIE_FILE, SidTrie, beam_search

LAYOUT = SidLayout(sizes=(3, 4, 2, 3))


def random_table(seed: int, n_items: int = 60, layout: SidLayout = LAYOUT) -> SidTable:
    rng = np.random.default_rng(seed)
    sids = np.stack([rng.integers(0, size, n_items) for size in layout.sizes], axis=1)
    sids[rng.random(n_items) < 0.1] = -1
    return SidTable.build(layout, sids, rng.random(n_items))


def hashed_step(seed: int, layout: SidLayout = LAYOUT) -> Callable[[np.ndarray], np.ndarray]:
    """Logits that depend only on the prefix (so a brute force can ask for the same ones)."""

    def step(prefix: np.ndarray) -> np.ndarray:
        return np.stack(
            [np.random.default_rng([seed, *row]).normal(0, 2, layout.vocab_size) for row in prefix]
        )

    return step


def brute_force_scores(table: SidTable, step: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Each SID's sum over levels of the log-softmax over the prefix's children, one at a time."""
    offsets = table.layout.offsets
    scores = []
    for sid in table.codes.tolist():
        total = 0.0
        for level in range(LEVELS):
            prefix = [BOS_TOKEN] + [int(offsets[j] + sid[j]) for j in range(level)]
            logits = step(np.asarray([prefix]))[0]
            children = {c[level] for c in table.codes.tolist() if c[:level] == sid[:level]}
            allowed = [float(logits[offsets[level] + v]) for v in children]
            total += float(logits[offsets[level] + sid[level]]) - math.log(sum(math.exp(a) for a in allowed))
        scores.append(total)
    return np.asarray(scores)


def test_build_orders_items_by_score_then_label() -> None:
    sids = np.array([[1, 0, 0, 0], [0, 1, 1, 2], [-1] * 4, [1, 0, 0, 0], [0, 1, 1, 2], [1, 0, 0, 0]])
    table = SidTable.build(LAYOUT, sids, np.array([0.5, 0.1, 9.0, 0.5, 0.7, 0.9]))
    assert table.codes.tolist() == [[0, 1, 1, 2], [1, 0, 0, 0]]
    assert table.offsets.tolist() == [0, 2, 5]
    assert table.items.tolist() == [4, 1, 5, 0, 3]  # 0 and 3 tie at 0.5: lower label first
    assert table.item_sid.tolist() == [1, 0, -1, 1, 0, 1]
    assert not table.items.flags.writeable


def test_build_refuses_partial_and_out_of_range_sids() -> None:
    with pytest.raises(ValueError, match="partly"):
        SidTable.build(LAYOUT, np.array([[0, -1, 0, 0]]), np.zeros(1))
    with pytest.raises(ValueError, match="outside"):
        SidTable.build(LAYOUT, np.array([[0, 4, 0, 0]]), np.zeros(1))


def test_rows_of_finds_rows_and_reports_absent_sids() -> None:
    table = random_table(0)
    assert table.rows_of(table.codes).tolist() == list(range(table.n_sids))
    every = np.array(list(itertools.product(*(range(s) for s in LAYOUT.sizes))))
    present = {tuple(c) for c in table.codes.tolist()}
    absent = np.array([c for c in every.tolist() if tuple(c) not in present])
    assert len(absent) and (table.rows_of(absent) == -1).all()
    assert table.rows_of(np.array([[3, 0, 0, 0], [-1, 0, 0, 0]])).tolist() == [-1, -1]


def test_expand_honours_order_exclusions_and_depth() -> None:
    sids = np.array([[0, 0, 0, 0]] * 3 + [[1, 0, 0, 0]] * 2 + [[2, 0, 0, 0]] * 2)
    table = SidTable.build(LAYOUT, sids, np.array([3.0, 2.0, 1.0, 2.0, 1.0, 2.0, 1.0]))
    # rows: 0 -> items 0 1 2, 1 -> 3 4, 2 -> 5 6
    labels, where = table.expand(np.array([2, 0]), depth=10, excluded=frozenset())
    assert labels.tolist() == [5, 6, 0, 1, 2] and where.tolist() == [0, 0, 1, 1, 1]
    labels, where = table.expand(np.array([2, 0, 1]), depth=4, excluded=frozenset({6, 0}))
    assert labels.tolist() == [5, 1, 2, 3] and where.tolist() == [0, 1, 1, 2]
    labels, where = table.expand(np.array([1, 2]), depth=3, excluded=np.array([3, 4], dtype=np.int64))
    assert labels.tolist() == [5, 6] and where.tolist() == [1, 1]
    assert table.expand(np.array([0]), depth=0, excluded=frozenset())[0].tolist() == []
    with pytest.raises(ValueError):
        table.expand(np.array([3]), depth=1, excluded=frozenset())


@pytest.mark.parametrize("seed", range(5))
def test_expand_matches_a_reference_loop(seed: int) -> None:
    table = random_table(seed)
    rng = np.random.default_rng(seed)
    rows = rng.permutation(table.n_sids)[: rng.integers(1, table.n_sids)]
    excluded = frozenset(rng.choice(table.n_items, 15, replace=False).tolist())
    depth = int(rng.integers(1, 40))
    expected = [(item, i) for i, row in enumerate(rows.tolist())
                for item in table.items[table.offsets[row] : table.offsets[row + 1]].tolist()
                if item not in excluded][:depth]  # fmt: skip
    labels, where = table.expand(rows, depth, excluded)
    assert list(zip(labels.tolist(), where.tolist(), strict=True)) == expected


@pytest.mark.parametrize("seed", range(30))
def test_beam_search_only_walks_and_returns_table_sids(seed: int) -> None:
    table = random_table(seed, n_items=int(np.random.default_rng(seed).integers(1, 80)))
    trie = SidTrie.build(table)
    step = hashed_step(seed)
    prefixes = {tuple([BOS_TOKEN, *(LAYOUT.to_tokens(c)[:t])]) for c in table.codes for t in range(LEVELS)}
    seen: list[tuple[int, ...]] = []

    def recording_step(prefix: np.ndarray) -> np.ndarray:
        seen.extend(tuple(row) for row in prefix.tolist())
        return step(prefix)

    exact = brute_force_scores(table, step)
    for beam in sorted({1, 2, 3, 7, table.n_sids, table.n_sids + 5}):
        rows, scores = beam_search(trie, LAYOUT, recording_step, beam)
        assert len(rows) == min(beam, table.n_sids) and len(set(rows.tolist())) == len(rows)
        assert ((rows >= 0) & (rows < table.n_sids)).all()
        assert rows.dtype == np.int64 and scores.dtype == np.float32
        assert (np.diff(scores) <= 0).all()
        np.testing.assert_allclose(scores, exact[rows], rtol=1e-5, atol=1e-5)
    assert set(seen) <= prefixes


@pytest.mark.parametrize("seed", range(10))
def test_full_beam_equals_exhaustive_ranking(seed: int) -> None:
    table = random_table(100 + seed)
    step = hashed_step(seed)
    exact = brute_force_scores(table, step)
    rows, scores = beam_search(SidTrie.build(table), LAYOUT, step, beam=table.n_sids + 3)
    assert rows.tolist() == np.lexsort((np.arange(table.n_sids), -exact)).tolist()
    np.testing.assert_allclose(scores, exact[rows], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("seed", range(10))
def test_beam_one_is_the_greedy_constrained_path(seed: int) -> None:
    table = random_table(200 + seed)
    step = hashed_step(seed)
    codes = table.codes.tolist()
    path: list[int] = []
    for level in range(LEVELS):
        logits = step(np.asarray([[BOS_TOKEN] + [int(LAYOUT.offsets[j] + path[j]) for j in range(level)]]))
        children = sorted({c[level] for c in codes if c[:level] == path})
        path.append(max(children, key=lambda v: logits[0, LAYOUT.offsets[level] + v]))
    rows, _ = beam_search(SidTrie.build(table), LAYOUT, step, beam=1)
    assert table.codes[rows].tolist() == [path]


def test_logits_outside_the_trie_do_not_change_scores() -> None:
    table = random_table(7)
    trie = SidTrie.build(table)
    step = hashed_step(7)
    allowed = np.zeros(LAYOUT.vocab_size, dtype=bool)
    allowed[np.unique(LAYOUT.to_tokens(table.codes))] = True

    def loud(prefix: np.ndarray) -> np.ndarray:
        return np.where(allowed, step(prefix), 50.0)  # every disallowed token far above

    for beam in (1, 4, 100):
        rows, scores = beam_search(trie, LAYOUT, step, beam)
        loud_rows, loud_scores = beam_search(trie, LAYOUT, loud, beam)
        assert loud_rows.tolist() == rows.tolist()
        np.testing.assert_allclose(loud_scores, scores, rtol=1e-6)


def test_ties_break_by_lower_token() -> None:
    grid = np.array(list(itertools.product(range(2), repeat=LEVELS)))  # every branch splits in two
    table = SidTable.build(SidLayout(sizes=(2, 2, 2, 2)), grid[::-1], np.zeros(len(grid)))
    rows, scores = beam_search(
        SidTrie.build(table), table.layout, lambda p: np.zeros((len(p), table.layout.vocab_size)), beam=5
    )
    assert rows.tolist() == [0, 1, 2, 3, 4]
    np.testing.assert_allclose(scores, -LEVELS * math.log(2), rtol=1e-6)


def test_childless_node_fails_loudly() -> None:
    layout = SidLayout(sizes=(2, 1, 1, 1))
    # Root has values 0 and 1, but node 1 at depth 1 has no children.
    trie = SidTrie(
        layout,
        indptr=tuple(np.array(a, dtype=np.int64) for a in ([0, 2], [0, 1, 1], [0, 1], [0, 1])),
        values=tuple(np.array(a, dtype=np.int64) for a in ([0, 1], [0], [0], [0])),
    )

    def prefer_one(prefix: np.ndarray) -> np.ndarray:
        logits = np.zeros((len(prefix), layout.vocab_size))
        logits[:, layout.offsets[0] + 1] = 5.0
        return logits

    with pytest.raises(RuntimeError, match="no children"):
        beam_search(trie, layout, prefer_one, beam=1)


def test_beam_search_refuses_bad_arguments() -> None:
    table = random_table(1)
    trie = SidTrie.build(table)
    with pytest.raises(ValueError, match="beam"):
        beam_search(trie, LAYOUT, hashed_step(0), beam=0)
    with pytest.raises(ValueError, match="layout"):
        beam_search(trie, SidLayout(sizes=(3, 4, 2, 4)), hashed_step(0), beam=2)
    with pytest.raises(ValueError, match="shape"):
        beam_search(trie, LAYOUT, lambda p: np.zeros((len(p), 3)), beam=2)
    with pytest.raises(ValueError, match="finite"):
        beam_search(trie, LAYOUT, lambda p: np.full((len(p), LAYOUT.vocab_size), np.nan), beam=2)


def test_round_trip(tmp_path: Path) -> None:
    table = random_table(3)
    trie = SidTrie.build(table)
    table.save(tmp_path)
    trie.save(tmp_path)
    loaded = SidTable.load(tmp_path, LAYOUT, table.n_items)
    loaded_trie = SidTrie.load(tmp_path, loaded)
    for name in ("codes", "offsets", "items", "item_sid"):
        array = getattr(loaded, name)
        assert np.array_equal(array, getattr(table, name)) and array.dtype == np.int64
        assert not array.flags.writeable
    for level in range(LEVELS):
        assert np.array_equal(loaded_trie.indptr[level], trie.indptr[level])
        assert np.array_equal(loaded_trie.values[level], trie.values[level])
    step = hashed_step(3)
    assert (
        beam_search(loaded_trie, LAYOUT, step, 6)[0].tolist()
        == beam_search(trie, LAYOUT, step, 6)[0].tolist()
    )


def rewrite(path: Path, change: Callable[[dict[str, np.ndarray]], None]) -> None:
    with np.load(path, allow_pickle=False) as data:
        arrays = {name: data[name].copy() for name in data.files}
    change(arrays)
    with path.open("wb") as f:
        np.savez(f, **arrays)


def swap_rows(name: str, i: int, j: int) -> Callable[[dict[str, np.ndarray]], None]:
    def change(arrays: dict[str, np.ndarray]) -> None:
        arrays[name][[i, j]] = arrays[name][[j, i]]

    return change


Change = Callable[[dict[str, np.ndarray]], None]


def set_value(
    name: str, index: tuple[int, ...] | int, value: Callable[[dict[str, np.ndarray]], int]
) -> Change:
    def change(arrays: dict[str, np.ndarray]) -> None:
        arrays[name][index] = value(arrays)

    return change


def unsorted(arrays: dict[str, np.ndarray]) -> None:
    arrays["codes"] = arrays["codes"][::-1].copy()


def duplicate_code(arrays: dict[str, np.ndarray]) -> None:
    arrays["codes"][1] = arrays["codes"][0]


def item_sid_crossed(arrays: dict[str, np.ndarray]) -> None:
    items, offsets = arrays["items"], arrays["offsets"]
    first, other = items[0], items[offsets[1]]  # items of rows 0 and 1
    sid = arrays["item_sid"]
    sid[first], sid[other] = sid[other], sid[first]


def item_sid_extra(arrays: dict[str, np.ndarray]) -> None:
    sid = arrays["item_sid"]
    sid[np.flatnonzero(sid == -1)[0]] = 0


def as_float(arrays: dict[str, np.ndarray]) -> None:
    arrays["codes"] = arrays["codes"].astype(np.float64)


def without(name: str) -> Change:
    def change(arrays: dict[str, np.ndarray]) -> None:
        del arrays[name]

    return change


CORRUPTIONS = {
    "unsorted codes": (unsorted, "not lexicographically sorted"),
    "duplicate codes": (duplicate_code, "repeat"),
    "level value out of range": (set_value("codes", (-1, 3), lambda a: LAYOUT.sizes[3]), "outside the level"),
    "negative level value": (set_value("codes", (0, 0), lambda a: -1), "outside the level"),
    "offsets not monotone": (swap_rows("offsets", 1, 2), "not increasing"),
    "offsets past the end": (set_value("offsets", -1, lambda a: len(a["items"]) + 1), "offsets run"),
    "offsets short of the end": (set_value("offsets", -1, lambda a: len(a["items"]) - 1), "offsets run"),
    "item label too large": (set_value("items", 0, lambda a: len(a["item_sid"])), "outside the catalog"),
    "duplicate item": (set_value("items", 1, lambda a: int(a["items"][0])), "more than one SID"),
    "item_sid crossed": (item_sid_crossed, "item_sid disagrees"),
    "item_sid for an item without a SID": (item_sid_extra, "item_sid disagrees"),
    "missing items": (without("items"), "missing array 'items'"),
    "missing item_sid": (without("item_sid"), "missing array 'item_sid'"),
    "codes not integers": (as_float, "must be integers"),
    "other layout": (set_value("sizes", 3, lambda a: 4), "level sizes"),
}


@pytest.mark.parametrize("case", CORRUPTIONS)
def test_load_refuses_corrupt_table(tmp_path: Path, case: str) -> None:
    table = random_table(5)
    table.save(tmp_path)
    SidTable.load(tmp_path, LAYOUT, table.n_items)  # intact: loads
    change, message = CORRUPTIONS[case]
    rewrite(tmp_path / SID_TABLE_FILE, change)
    with pytest.raises(ValueError, match=f"^{SID_TABLE_FILE}: .*{message}"):
        SidTable.load(tmp_path, LAYOUT, table.n_items)


def test_load_refuses_other_catalogs_and_unreadable_files(tmp_path: Path) -> None:
    table = random_table(5)
    with pytest.raises(FileNotFoundError):
        SidTable.load(tmp_path, LAYOUT, table.n_items)
    table.save(tmp_path)
    with pytest.raises(ValueError, match="item_sid of shape"):
        SidTable.load(tmp_path, LAYOUT, table.n_items + 1)
    (tmp_path / SID_TABLE_FILE).write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match=f"^{SID_TABLE_FILE}: unreadable"):
        SidTable.load(tmp_path, LAYOUT, table.n_items)


def test_trie_load_refuses_a_trie_of_another_table(tmp_path: Path) -> None:
    table = random_table(8)
    with pytest.raises(FileNotFoundError):
        SidTrie.load(tmp_path, table)
    SidTrie.build(random_table(9)).save(tmp_path)
    with pytest.raises(ValueError, match=f"^{SID_TRIE_FILE}: .*differs"):
        SidTrie.load(tmp_path, table)
    SidTrie.build(table).save(tmp_path)
    SidTrie.load(tmp_path, table)  # the right one loads
    rewrite(tmp_path / SID_TRIE_FILE, without("values_2"))
    with pytest.raises(ValueError, match="missing array 'values_2'"):
        SidTrie.load(tmp_path, table)


def test_trie_structure_on_a_small_table() -> None:
    codes = np.array([[0, 0, 0, 0], [0, 0, 0, 2], [0, 2, 1, 0], [2, 1, 0, 1]])
    trie = SidTrie.build(SidTable.build(LAYOUT, codes, np.zeros(4)))
    assert [a.tolist() for a in trie.indptr] == [[0, 2], [0, 2, 3], [0, 1, 2, 3], [0, 2, 3, 4]]
    assert [a.tolist() for a in trie.values] == [[0, 2], [0, 2, 1], [0, 1, 0], [0, 2, 0, 1]]
