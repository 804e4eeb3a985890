"""Fitting the channels and the merge on validation: known answers on tiny splits, and the fit
never reads the test period."""

from __future__ import annotations

import dataclasses

import numpy as np

from index.features import ACTION_CODE, Session
from index.fusion import SEEN, UNSEEN, FusionParams, fuse
from index.vocab import Vocabulary
from model_export.channel_fit import fit_channels, fit_fusion, fit_history, merged_objective
from model_export.channels import CaseLists, OfflineChannels
from model_export.data import DAY, Dataset, EvalCase

CLICK, PAY = ACTION_CODE["click"], ACTION_CODE["pay"]
N_ITEMS = 40
VOCAB = Vocabulary.build([f"i{i}" for i in range(N_ITEMS)], ["c"] * N_ITEMS, [1.0] * N_ITEMS, ["feed"])


def session(ts: int, *items: tuple[int, int]) -> Session:
    return Session(f"r{ts}", ts, "feed", tuple((f"i{item}", action) for item, action in items))


def labels(*items: int) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(items, dtype=np.int64), np.linspace(1.0, 0.1, len(items)).astype(np.float32)


def test_fit_fusion_drops_a_channel_that_only_adds_noise() -> None:
    # "good" ranks each case's target first; "noise" ranks unrelated items first, with smaller
    # labels, so equal weights would put noise first (ties break by label).
    targets = [{n} for n in range(10, 20)]
    lists: CaseLists = [{"good": labels(n, 30, 31), "noise": labels(0, 1, 2)} for n in range(10, 20)]
    by_k = {1: [{c: (v[0][:1], v[1][:1]) for c, v in row.items()} for row in lists]}
    fills = {1: [np.zeros(0, dtype=np.int64)] * 10}
    fusion, objectives = fit_fusion(by_k, fills, targets, ["good", "noise"])
    assert max(objectives.values()) == 1.0  # every target is the merged top 1
    assert fusion.weight("noise") == 0 or fusion.weight("good") > fusion.weight("noise")
    assert fuse(lists[3], fusion, 1)[0].tolist() == [13]


def test_fit_fusion_merges_complementary_channels() -> None:
    # a finds the targets of even cases, b of odd ones, both at rank 2: top-2 of the merge must
    # hold both channels' rank-2 items, which equal weights do and a single channel cannot.
    targets = [{n} for n in range(8)]
    lists: CaseLists = [
        {"a": labels(30, n if n % 2 == 0 else 31), "b": labels(n if n % 2 else 32, 33)} for n in range(8)
    ]
    fills = {4: [np.zeros(0, dtype=np.int64)] * 8}
    fusion, _ = fit_fusion({4: lists}, fills, targets, ["a", "b"])
    assert merged_objective({4: lists}, fills, targets, fusion) == 1.0
    alone = FusionParams(weights={"a": 1.0, "b": 0.0})
    assert merged_objective({4: lists}, fills, targets, alone) == 0.5


def history_cases(target_recent: bool) -> tuple[list[EvalCase], list[set[int]]]:
    """Each case: item 1 paid three times 60-40 days ago, item 2 clicked yesterday; the target
    is the recent click or the old favourite."""
    cases, targets = [], []
    for n in range(6):
        now = 100 * DAY + n
        history = [session(now - d * DAY, (1, PAY)) for d in (60, 50, 40)] + [session(now - DAY, (2, CLICK))]
        target = 2 if target_recent else 1
        cases.append(EvalCase(f"u{n}", history, session(now, (target, CLICK))))
        targets.append({target})
    return cases, targets


def test_history_half_life_follows_what_validation_rewards() -> None:
    for target_recent, check in ((True, lambda h: h <= 7), (False, lambda h: h >= 14)):
        cases, targets = history_cases(target_recent)
        source = OfflineChannels(VOCAB, {"*": []})
        params = fit_history(cases, targets, source)
        top = source.lists(cases, 1, exclude_seen=False, only=["history"])[0]["history"][0]
        assert check(params.half_life_days), params
        assert top.tolist() == [2 if target_recent else 1]


def tiny_dataset(with_test: bool) -> Dataset:
    """Users buy 5 then 6 (co-bought); validation asks for 6 after 5."""
    train = {f"u{n}": [session(DAY + n, (5, PAY)), session(2 * DAY + n, (6, PAY))] for n in range(20)}
    val = [
        EvalCase(f"u{n}", [session(3 * DAY + n, (5, PAY))], session(4 * DAY, (6, CLICK))) for n in range(5)
    ]
    test = [EvalCase(f"u{n}", [session(5 * DAY, (7, PAY))], session(6 * DAY, (8, CLICK))) for n in range(5)]
    return Dataset(
        vocab=VOCAB,
        train=train,
        val=val,
        test=test if with_test else [],
        val_start=3 * DAY,
        test_start=5 * DAY,
        data_start=DAY,
        data_end=7 * DAY,
        popularity={"*": ["i0", "i1"]},
    )


def test_the_fit_reads_validation_only_and_finds_the_co_bought_item() -> None:
    spec, table, source = fit_channels(tiny_dataset(with_test=True), None, None, ks=(1,))
    without_test, _, _ = fit_channels(tiny_dataset(with_test=False), None, None, ks=(1,))
    assert spec == without_test
    assert set(spec.fusion) == {SEEN, UNSEEN} and spec.validation
    assert table.nnz > 0
    case = tiny_dataset(with_test=True).val[0]
    merged = fuse(source.lists([case], 1, exclude_seen=True)[0], spec.fusion[UNSEEN], 1)[0]
    assert merged.tolist() == [6]


def test_a_dataset_without_validation_cases_keeps_the_defaults() -> None:
    dataset = dataclasses.replace(tiny_dataset(with_test=True), val=[])
    spec, _, _ = fit_channels(dataset, None, None)
    assert spec.fusion[SEEN] == FusionParams() and not spec.validation
