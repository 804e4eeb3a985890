"""The gram channel's serving side: code table, trie and beam search (index/gram_trie.py), the code
index (index/gram_index.py), the score (index/gram_score.py), its fit
(model_export/gram/scorer.py) and the search (index/gram_search.py)."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from index.bundle import GramSpec
from index.gram_index import GRAM_INDEX_FILE, CodeIndex
from index.gram_score import (
    ScoreFeatures,
    ScoreWeights,
    granularity_of,
    js_terms,
    score_candidates,
    score_features,
)
from index.gram_search import GramSearch
from index.gram_trie import CodeTable, CodeTrie, beam_search, code_rows_problem
from index.gram_vocab import BOS, EOS, MAX_CODE_TOKENS, PAD, CodeVocab
from model_export.gram.scorer import ScorerConfig, fit_weights, margin_loss

VOCAB = 12  # PAD, BOS, EOS and value tokens 3..11


def code(*tokens: int) -> list[int]:
    return [*tokens, EOS] + [PAD] * (MAX_CODE_TOKENS - len(tokens) - 1)


def random_codes(seed: int, n: int = 40) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.array([code(*rng.integers(3, VOCAB, rng.integers(1, 5)).tolist()) for _ in range(n)])


Step = Callable[[np.ndarray, np.ndarray], np.ndarray]


def hashed_step(seed: int) -> Step:
    """Logits that depend only on (prompt, prefix), so a brute force can ask for the same ones."""

    def step(prompt: np.ndarray, prefix: np.ndarray) -> np.ndarray:
        return np.stack(
            [
                np.random.default_rng([seed, p, *row]).normal(0, 2, VOCAB)
                for p, row in zip(prompt, prefix.tolist(), strict=True)
            ]
        )

    return step


def log_softmax(x: np.ndarray) -> np.ndarray:
    return x - (x.max() + math.log(np.exp(x - x.max()).sum()))


def brute_force(table: CodeTable, step: Step, prompt: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Each code's token log-probs (full-vocabulary log-softmax) and their sum, one at a time."""
    logprobs = np.zeros((table.n_codes, MAX_CODE_TOKENS))
    for r, row in enumerate(table.codes.tolist()):
        n = row.index(EOS) + 1
        for t in range(n):
            logits = step(np.array([prompt]), np.array([[BOS, *row[:t]]]))[0]
            logprobs[r, t] = log_softmax(logits)[row[t]]
    return logprobs, logprobs.sum(axis=1)


# --- table and trie -------------------------------------------------------------------------


def test_table_sorts_dedups_and_finds_rows() -> None:
    rows = np.array([code(5, 4), code(3), code(5, 4), code(3, 9, 4), code(11)])
    table = CodeTable.build(rows)
    assert table.codes.tolist() == [code(3), code(3, 9, 4), code(5, 4), code(11)]
    assert not table.codes.flags.writeable
    assert table.row_of(table.codes).tolist() == [0, 1, 2, 3]
    absent = np.array([code(4), code(3, 9), code(11, 3), [-1] * MAX_CODE_TOKENS])
    assert table.row_of(absent).tolist() == [-1, -1, -1, -1]


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ([EOS] + [PAD] * 6, "no value token"),
        ([3, 4, 0, 0, 0, 0, 0], "exactly one EOS"),
        ([3, EOS, EOS, 0, 0, 0, 0], "exactly one EOS"),
        ([3, BOS, EOS, 0, 0, 0, 0], "reserved token"),
        ([3, EOS, 5, 0, 0, 0, 0], "after its EOS"),
    ],
)
def test_table_refuses_rows_that_are_not_codes(row: list[int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CodeTable.build(np.array([code(3), row]))
    assert code_rows_problem(np.zeros((2, 6), dtype=np.int64)) is not None


def test_trie_structure_on_variable_length_codes() -> None:
    table = CodeTable.build(np.array([code(3, 4), code(3), code(5), code(3, 4, 6), code(3, 5)]))
    # rows: 0 (3) 1 (3 4) 2 (3 4 6) 3 (3 5) 4 (5)
    trie = CodeTrie.build(table)
    assert [a.tolist() for a in trie.indptr[:4]] == [[0, 2], [0, 3, 4], [0, 0, 2, 3, 3], [0, 0, 1, 1]]
    assert [a.tolist() for a in trie.tokens[:4]] == [[3, 5], [EOS, 4, 5, EOS], [EOS, 6, EOS], [EOS]]
    assert [a.tolist() for a in trie.leaf[:4]] == [[-1, -1], [0, -1, -1, 4], [1, -1, 3], [2]]
    assert all(len(t) == 0 for t in trie.tokens[4:])
    assert trie.max_token == 6


# --- beam search ----------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(12))
def test_beam_search_returns_at_most_max_codes_of_the_table_best_first(seed: int) -> None:
    table = CodeTable.build(random_codes(seed, n=int(np.random.default_rng(seed).integers(1, 50))))
    trie = CodeTrie.build(table)
    step = hashed_step(seed)
    prefixes = {(BOS, *row[:t]) for row in table.codes.tolist() for t in range(row.index(EOS) + 1)}
    seen: set[tuple[int, ...]] = set()

    def recording(prompt: np.ndarray, prefix: np.ndarray) -> np.ndarray:
        seen.update(tuple(row) for row in prefix.tolist())
        return step(prompt, prefix)

    exact_lp, exact = brute_force(table, step)
    for beam, max_codes in [(1, 1), (2, 5), (3, 2), (10, 10), (50, 7)]:
        rows, logprobs, scores = beam_search(trie, recording, beam, max_codes)
        assert rows.shape == (1, max_codes) and logprobs.shape == (1, max_codes, MAX_CODE_TOKENS)
        assert rows.dtype == np.int64 and logprobs.dtype == np.float32 and scores.dtype == np.float32
        found = rows[0][rows[0] >= 0]
        assert 1 <= len(found) <= max_codes and len(set(found.tolist())) == len(found)
        assert (found < table.n_codes).all() and (rows[0][len(found) :] == -1).all()
        assert np.isneginf(scores[0][len(found) :]).all()
        assert (np.diff(scores[0][: len(found)]) <= 0).all()
        np.testing.assert_allclose(scores[0][: len(found)], exact[found], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(logprobs[0][: len(found)], exact_lp[found], rtol=1e-5, atol=1e-5)
        assert (logprobs[0][: len(found)][table.codes[found] == PAD] == 0).all()
    assert seen <= prefixes


@pytest.mark.parametrize("seed", range(8))
def test_a_beam_as_wide_as_the_table_ranks_every_code_exhaustively(seed: int) -> None:
    table = CodeTable.build(random_codes(100 + seed))
    step = hashed_step(seed)
    _, exact = brute_force(table, step)
    rows, _, scores = beam_search(CodeTrie.build(table), step, beam=table.n_codes, max_codes=table.n_codes)
    assert rows[0].tolist() == np.lexsort((np.arange(table.n_codes), -exact)).tolist()
    np.testing.assert_allclose(scores[0], exact[rows[0]], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("seed", range(8))
def test_beam_one_is_the_greedy_constrained_path_and_finishes_at_eos(seed: int) -> None:
    table = CodeTable.build(random_codes(200 + seed))
    step = hashed_step(seed)
    codes = table.codes.tolist()
    path: list[int] = []
    while not path or path[-1] != EOS:
        logits = step(np.array([0]), np.array([[BOS, *path]]))[0]
        children = {row[len(path)] for row in codes if row[: len(path)] == path}
        path.append(max(sorted(children), key=lambda t: logits[t]))
    rows, _, _ = beam_search(CodeTrie.build(table), step, beam=1, max_codes=3)
    assert rows[0].tolist() == [table.row_of(np.array([code(*path[:-1])]))[0], -1, -1]


def test_prompts_are_searched_together_as_if_alone() -> None:
    table = CodeTable.build(random_codes(5))
    trie = CodeTrie.build(table)
    step = hashed_step(5)
    rows, logprobs, scores = beam_search(trie, step, beam=4, max_codes=6, prompts=3)
    for p in range(3):
        alone = beam_search(trie, lambda _, prefix, p=p: step(np.full(len(prefix), p), prefix), 4, 6)
        assert rows[p].tolist() == alone[0][0].tolist()
        np.testing.assert_allclose(logprobs[p], alone[1][0], rtol=1e-6)
        np.testing.assert_allclose(scores[p], alone[2][0], rtol=1e-6)
    assert len({tuple(r) for r in rows.tolist()}) > 1  # the prompts do differ


def test_tokens_outside_the_trie_are_never_returned_but_count_in_the_normaliser() -> None:
    table = CodeTable.build(np.array([code(3), code(4, 5), code(4, 6, 7)]))
    trie = CodeTrie.build(table)
    quiet = hashed_step(1)

    def loud(prompt: np.ndarray, prefix: np.ndarray) -> np.ndarray:
        logits = quiet(prompt, prefix)
        logits[:, 8:] = 20.0  # tokens no code uses, far more likely
        return logits

    rows, _, scores = beam_search(trie, loud, beam=5, max_codes=5)
    quiet_rows, _, quiet_scores = beam_search(trie, quiet, beam=5, max_codes=5)
    assert set(rows[0][rows[0] >= 0].tolist()) == set(quiet_rows[0].tolist()[:3]) == {0, 1, 2}
    assert scores[0][:3].max() < quiet_scores[0][:3].min()  # full-vocabulary log-probs


def test_ties_break_by_lower_prefix_in_the_beam_and_lower_row_at_the_end() -> None:
    table = CodeTable.build(np.array([code(t) for t in range(3, 9)] + [code(3, 4)]))
    flat: Step = lambda p, prefix: np.zeros((len(prefix), VOCAB))  # noqa: E731
    # Depth 0: six tied children, the beam keeps the two lowest tokens (3 and 4).
    rows, _, scores = beam_search(CodeTrie.build(table), flat, beam=2, max_codes=3)
    # Depth 1: (3 EOS), (3 4), (4 EOS) tie; the two lower prefixes stay, so (4) never finishes.
    assert rows[0].tolist() == [0, 1, -1]  # (3), then (3 4) a token longer
    np.testing.assert_allclose(scores[0][:2], [-2 * math.log(VOCAB), -3 * math.log(VOCAB)], rtol=1e-6)
    rows, _, _ = beam_search(CodeTrie.build(table), flat, beam=10, max_codes=4)
    assert rows[0].tolist() == [0, 2, 3, 4]  # every one-value code tied: lower rows first


def test_a_childless_node_fails_loudly() -> None:
    # The root has children 3 and 4; node 4 at depth 1 has none (a broken trie).
    trie = CodeTrie(
        indptr=tuple(np.array(a, dtype=np.int64) for a in ([0, 2], [0, 1, 1], [0, 0], *([[0]] * 4))),
        tokens=tuple(np.array(a, dtype=np.int64) for a in ([3, 4], [EOS], *([[]] * 5))),
        leaf=tuple(np.array(a, dtype=np.int64) for a in ([-1, -1], [0], *([[]] * 5))),
    )

    def prefer(token: int) -> Step:
        def step(prompt: np.ndarray, prefix: np.ndarray) -> np.ndarray:
            logits = np.zeros((len(prefix), VOCAB))
            logits[:, token] = 5.0
            return logits

        return step

    assert beam_search(trie, prefer(3), beam=1, max_codes=2)[0].tolist() == [[0, -1]]  # 4 pruned
    for token, beam in [(4, 1), (3, 2)]:  # node 4 live: never decoded unconstrained
        with pytest.raises(RuntimeError, match="no children"):
            beam_search(trie, prefer(token), beam=beam, max_codes=1)


def test_beam_search_refuses_bad_arguments_and_logits() -> None:
    trie = CodeTrie.build(CodeTable.build(random_codes(1)))
    with pytest.raises(ValueError, match="at least 1"):
        beam_search(trie, hashed_step(0), beam=0, max_codes=1)
    with pytest.raises(ValueError, match="at least 1"):
        beam_search(trie, hashed_step(0), beam=2, max_codes=0)
    with pytest.raises(ValueError, match="shape"):
        beam_search(trie, lambda p, prefix: np.zeros((len(prefix), 5)), beam=2, max_codes=2)
    with pytest.raises(ValueError, match="non-finite"):
        beam_search(trie, lambda p, prefix: np.full((len(prefix), VOCAB), np.nan), beam=2, max_codes=2)

    def nan_off_the_trie(prompt: np.ndarray, prefix: np.ndarray) -> np.ndarray:
        logits = np.zeros((len(prefix), VOCAB + 1))
        logits[:, VOCAB] = np.nan  # no code uses this token, but the normaliser does
        return logits

    with pytest.raises(ValueError, match="non-finite"):
        beam_search(trie, nan_off_the_trie, beam=2, max_codes=2)


# --- score ----------------------------------------------------------------------------------


def test_js_terms_match_the_formula_and_vanish_only_on_agreement() -> None:
    p = np.array([[0.5, 0.9, 0.2, 1.0, 1.0, 1.0, 1.0]])
    r = np.array([[0.1, 0.9, 0.6, 0.3, 1.0, 1.0, 1.0]])
    mask = np.array([[True, True, True, False, False, False, False]])
    expected = sum(
        a * math.log(2 * a / (a + b)) + b * math.log(2 * b / (a + b))
        for a, b in zip(p[0, :3], r[0, :3], strict=True)
    )
    assert js_terms(np.log(p), np.log(r), mask)[0] == pytest.approx(expected, rel=1e-9)
    assert js_terms(np.log(p), np.log(p), mask)[0] == pytest.approx(0.0, abs=1e-12)
    assert js_terms(np.log(r), np.log(p), mask)[0] == pytest.approx(expected, rel=1e-9)  # symmetric
    rng = np.random.default_rng(0)
    a, b = np.log(rng.random((200, 7))), np.log(rng.random((200, 7)))
    assert (js_terms(a, b, np.ones((200, 7), bool)) > 0).all()


def test_granularity_counts_values_not_eos() -> None:
    rows = np.array([code(3), code(3, 4), code(3, 4, 5), code(3, 4, 5, 6), code(3, 4, 5, 6, 7, 8)])
    assert granularity_of(rows).tolist() == [0, 0, 1, 2, 2]


def test_a_product_agreeing_with_the_query_scores_above_one_that_does_not() -> None:
    rows = np.array([code(3, 4, 5)] * 2)
    query = np.log(np.array([[0.8, 0.6, 0.7, 0.9, 1, 1, 1]] * 2))
    product = np.log(np.array([[0.8, 0.6, 0.7, 0.9, 1, 1, 1], [0.05, 0.1, 0.02, 0.3, 1, 1, 1]]))
    weights = ScoreWeights(divergence=(1.0, 2.0, 1.0), query_logprob=(0.5, 0.5, 0.5), bias=(0.0, 0.3, 0.0))
    matching, other = score_candidates(weights, rows, query, product)
    assert matching > other  # higher = more relevant: the divergence enters negated
    features = score_features(rows, query, product)
    assert features.divergence[0] == pytest.approx(0.0, abs=1e-12) and features.divergence[1] > 0
    assert matching == pytest.approx(0.3 + 0.5 * np.log([0.8, 0.6, 0.7, 0.9]).sum())
    assert other == pytest.approx(matching - 2.0 * features.divergence[1])
    heavier = ScoreWeights(divergence=(1.0, 4.0, 1.0), query_logprob=(0.5, 0.5, 0.5), bias=(0.0, 0.3, 0.0))
    assert score_candidates(heavier, rows, query, product)[1] < other


def test_score_weights_round_trip_and_refuse_a_negative_divergence() -> None:
    weights = ScoreWeights(divergence=(1.0, 0.5, 0.0), query_logprob=(0.1, -0.2, 0.3), bias=(0.0, 1.0, 2.0))
    assert ScoreWeights.from_dict(weights.to_dict()) == weights
    with pytest.raises(ValueError, match=">= 0"):
        ScoreWeights(divergence=(1.0, -0.1, 1.0))
    with pytest.raises(ValueError, match="3 finite"):
        ScoreWeights.from_dict({"divergence": [1, 1], "query_logprob": [0, 0, 0], "bias": [0, 0, 0]})
    with pytest.raises(ValueError, match="need divergence"):
        ScoreWeights.from_dict({"divergence": [1, 1, 1]})


# --- scorer fit -----------------------------------------------------------------------------


def toy_features(
    rng: np.random.Generator, n: int, logprob: float, divergence: float, g: int
) -> ScoreFeatures:
    return ScoreFeatures(
        granularity=np.full(n, g, dtype=np.int64),
        query_logprob=logprob + rng.normal(0, 0.2, n),
        divergence=np.maximum(divergence + rng.normal(0, 0.05, n), 0.0),
    )


def concatenate(parts: list[ScoreFeatures]) -> ScoreFeatures:
    return ScoreFeatures(
        *(
            np.concatenate([getattr(f, k) for f in parts])
            for k in ("granularity", "query_logprob", "divergence")
        )
    )


def test_fit_weights_separates_a_toy_set() -> None:
    rng = np.random.default_rng(0)
    # Positives: likely query codes that both sides agree on; negatives: the query side finds the
    # code less likely and the sides disagree more. The starting weights (divergence only, 1.0)
    # miss the margin of 1 everywhere.
    parts = [(0, 60), (1, 60), (2, 60)]
    pos = [toy_features(rng, n, -2.0, 0.1, g) for g, n in parts]
    neg = [toy_features(rng, n, -6.0, 0.4, g) for g, n in parts]
    positive, negative = concatenate(pos), concatenate(neg)
    start = ScoreWeights()
    assert margin_loss(start, positive, negative, 1.0) > 0.5
    fitted = fit_weights(positive, negative, ScorerConfig(steps=300, lr=0.05))
    assert margin_loss(fitted, positive, negative, 1.0) < 0.01
    assert (fitted.score(positive) > fitted.score(negative)).all()
    assert min(fitted.divergence) >= 0


def test_fit_weights_keeps_divergence_weights_non_negative() -> None:
    rng = np.random.default_rng(1)
    # The negatives agree *better* than the positives and nothing else differs: only a negative
    # divergence weight would lower the loss, and the projection holds it at 0 instead.
    positive = toy_features(rng, 80, -1.0, 0.8, 1)
    negative = ScoreFeatures(positive.granularity, positive.query_logprob, positive.divergence - 0.5)
    fitted = fit_weights(positive, negative, ScorerConfig(steps=200, lr=0.05))
    assert fitted.divergence[1] == 0.0
    assert margin_loss(fitted, positive, negative, 1.0) == pytest.approx(1.0)


def test_fit_weights_scores_a_pair_by_its_best_code() -> None:
    # Triple 0's positive pair has a bad code and a good one; the pair counts as its good one.
    positive = ScoreFeatures(np.array([0, 0, 0]), np.array([-9.0, -1.0, -1.0]), np.array([0.0, 0.0, 0.0]))
    negative = ScoreFeatures(np.array([0, 0]), np.array([-5.0, -5.0]), np.array([0.0, 0.0]))
    fitted = fit_weights(
        positive, negative, positive_triple=np.array([0, 0, 1]), negative_triple=np.array([0, 1])
    )
    assert fitted.query_logprob[0] > 0.25  # a 4-nat gap must buy the margin of 1
    with pytest.raises(ValueError, match="no negative"):
        fit_weights(positive, negative, positive_triple=np.array([0, 1, 2]), negative_triple=np.array([0, 2]))


# --- code index -----------------------------------------------------------------------------


def random_index(seed: int, n_items: int = 30) -> CodeIndex:
    rng = np.random.default_rng(seed)
    pool = CodeTable.build(random_codes(seed, n=25)).codes
    postings = {
        (int(c), int(i))
        for c, i in zip(rng.integers(0, len(pool), 120), rng.integers(0, n_items, 120), strict=True)
    }
    code_rows, labels = map(np.array, zip(*sorted(postings), strict=True))
    codes = pool[code_rows]
    logprobs = np.where(codes != PAD, np.log(rng.uniform(0.05, 1.0, codes.shape)), 0.0)
    return CodeIndex.build(codes, labels, logprobs)


def test_index_build_groups_postings_by_code_with_labels_ascending() -> None:
    codes = np.array([code(5), code(3, 4), code(5), code(3, 4), code(3, 4)])
    labels = np.array([7, 2, 1, 9, 0])
    logprobs = np.where(codes != PAD, -np.arange(1, 6)[:, None] / 10, 0.7)  # PAD positions zeroed
    index = CodeIndex.build(codes, labels, logprobs)
    assert index.table.codes.tolist() == [code(3, 4), code(5)]
    assert index.offsets.tolist() == [0, 3, 5] and index.items.tolist() == [0, 2, 9, 1, 7]
    np.testing.assert_allclose(index.token_logprobs[:, 0], [-0.5, -0.2, -0.4, -0.3, -0.1], rtol=1e-6)
    assert (index.token_logprobs[codes[[4, 1, 3, 2, 0]] == PAD] == 0).all()
    which, items, lp = index.postings(np.array([1, 0]))
    assert which.tolist() == [0, 0, 1, 1, 1] and items.tolist() == [1, 7, 0, 2, 9]
    assert lp.shape == (5, MAX_CODE_TOKENS)
    stats = index.items_per_code()
    assert (stats["codes"], stats["postings"], stats["items"], stats["max"]) == (2, 5, 5, 3)
    with pytest.raises(ValueError, match="twice"):
        CodeIndex.build(codes[[0, 0]], np.array([7, 7]), logprobs[[0, 0]])
    with pytest.raises(ValueError, match="above 0"):
        CodeIndex.build(codes[:1], labels[:1], np.abs(logprobs[:1]) + 0.1)
    with pytest.raises(ValueError, match="outside"):
        index.postings(np.array([2]))


def test_index_round_trip(tmp_path: Path) -> None:
    index = random_index(3)
    index.save(tmp_path)
    loaded = CodeIndex.load(tmp_path, VOCAB, 30)
    assert np.array_equal(loaded.table.codes, index.table.codes)
    for name in ("offsets", "items", "token_logprobs"):
        array = getattr(loaded, name)
        assert np.array_equal(array, getattr(index, name)) and not array.flags.writeable
    assert loaded.token_logprobs.dtype == np.float32 and loaded.items.dtype == np.int64


def rewrite(path: Path, change: Callable[[dict[str, np.ndarray]], None]) -> None:
    with np.load(path, allow_pickle=False) as data:
        arrays = {name: data[name].copy() for name in data.files}
    change(arrays)
    with path.open("wb") as f:
        np.savez(f, **arrays)


Change = Callable[[dict[str, np.ndarray]], None]


def setting(
    name: str, index: tuple[int, ...] | int, value: Callable[[dict[str, np.ndarray]], float]
) -> Change:
    def change(arrays: dict[str, np.ndarray]) -> None:
        arrays[name][index] = value(arrays)

    return change


def replacing(name: str, value: Callable[[dict[str, np.ndarray]], np.ndarray]) -> Change:
    def change(arrays: dict[str, np.ndarray]) -> None:
        arrays[name] = value(arrays)

    return change


def without(name: str) -> Change:
    def change(arrays: dict[str, np.ndarray]) -> None:
        del arrays[name]

    return change


def pad_logprob(arrays: dict[str, np.ndarray]) -> None:
    row = int(np.argwhere(arrays["codes"][0] == PAD)[0, 0])
    arrays["token_logprobs"][0, row] = -0.5  # postings of code 0 come first


CORRUPTIONS: dict[str, tuple[Change, str]] = {
    "other format": (replacing("format", lambda a: np.int64(2)), "format"),
    "unsorted codes": (replacing("codes", lambda a: a["codes"][::-1].copy()), "not lexicographically sorted"),
    "repeated code": (setting("codes", 1, lambda a: a["codes"][0]), "repeat"),
    "token past the vocabulary": (setting("codes", (-1, 0), lambda a: VOCAB), "outside the vocabulary"),
    "reserved token in a code": (setting("codes", (0, 0), lambda a: BOS), "reserved token"),
    "no EOS": (replacing("codes", lambda a: np.where(a["codes"] == EOS, PAD, a["codes"])), "exactly one EOS"),
    "codes not 7 wide": (replacing("codes", lambda a: a["codes"][:, :6].copy()), "shape"),
    "offsets not increasing": (setting("offsets", 1, lambda a: 0), "not increasing"),
    "offsets past the end": (setting("offsets", -1, lambda a: len(a["items"]) + 1), "offsets run"),
    "offsets of another length": (
        replacing("offsets", lambda a: a["offsets"][:-1].copy()),
        "offsets of shape",
    ),
    "item past the catalog": (setting("items", 0, lambda a: 30), "outside the catalog"),
    "negative item": (setting("items", 0, lambda a: -1), "outside the catalog"),
    "item repeated in a code": (setting("items", 1, lambda a: a["items"][0]), "not ascending"),
    "log-prob above 0": (setting("token_logprobs", (0, 0), lambda a: 0.5), "above 0"),
    "log-prob nan": (setting("token_logprobs", (3, 0), lambda a: np.nan), "finite"),
    "log-prob at PAD": (pad_logprob, "PAD"),
    "log-probs of another shape": (
        replacing("token_logprobs", lambda a: a["token_logprobs"][:-1].copy()),
        "shape",
    ),
    "log-probs as integers": (
        replacing("token_logprobs", lambda a: a["token_logprobs"].astype(np.int64)),
        "floats",
    ),
    "codes as floats": (replacing("codes", lambda a: a["codes"].astype(np.float64)), "must be integers"),
    "missing items": (without("items"), "missing array 'items'"),
    "missing log-probs": (without("token_logprobs"), "missing array 'token_logprobs'"),
}


@pytest.mark.parametrize("case", CORRUPTIONS)
def test_load_refuses_a_corrupt_or_inconsistent_index(tmp_path: Path, case: str) -> None:
    index = random_index(5)
    index.save(tmp_path)
    CodeIndex.load(tmp_path, VOCAB, 30)  # intact: loads
    change, message = CORRUPTIONS[case]
    rewrite(tmp_path / GRAM_INDEX_FILE, change)
    with pytest.raises(ValueError, match=f"^{GRAM_INDEX_FILE}: .*{message}"):
        CodeIndex.load(tmp_path, VOCAB, 30)


def test_load_refuses_other_catalogs_vocabularies_and_unreadable_files(tmp_path: Path) -> None:
    index = random_index(6)
    with pytest.raises(FileNotFoundError):
        CodeIndex.load(tmp_path, VOCAB, 30)
    index.save(tmp_path)
    with pytest.raises(ValueError, match="outside the catalog"):
        CodeIndex.load(tmp_path, VOCAB, int(index.items.max()))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        CodeIndex.load(tmp_path, int(index.table.codes.max()), 30)
    (tmp_path / GRAM_INDEX_FILE).write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match=f"^{GRAM_INDEX_FILE}: unreadable"):
        CodeIndex.load(tmp_path, VOCAB, 30)


# --- search ---------------------------------------------------------------------------------


class FakeGenerator:
    """The generator seam in memory: logits hashed from (task, text ids, prefix)."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.encoded: list[tuple[list[int], int]] = []

    def encode(self, text_ids: np.ndarray, task: int) -> tuple[np.ndarray, np.ndarray]:
        ids = np.atleast_2d(text_ids)
        self.encoded.append((ids[0].tolist(), task))
        return ids[:, :, None].astype(np.float32), np.zeros(ids.shape, dtype=bool)

    def stepper(self, memory: np.ndarray, memory_pad: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
        text = memory[0, :, 0].astype(int).tolist()
        inner = hashed_step(self.seed)
        return lambda prefix: inner(np.full(len(prefix), sum(text)), prefix)


class FakeTokenizer:
    def ids(self, texts: list[str], max_len: int) -> np.ndarray:
        out = np.zeros((len(texts), max_len), dtype=np.int64)
        pieces = [len(word) + 3 for word in texts[0].split()][:max_len]
        out[0, : len(pieces)] = pieces
        return out


def gram_search(index: CodeIndex, weights: ScoreWeights | None = None, seed: int = 0) -> GramSearch:

    vocab = CodeVocab(["a"], [f"a={n}" for n in range(VOCAB - 3)])
    spec = GramSpec(
        max_text_tokens=8,
        dim=1,
        vocab_size=vocab.size,
        weights=(weights or ScoreWeights(query_logprob=(0.2, 0.2, 0.2))).to_dict(),
        codes=index.n_codes,
        items_per_code=index.items_per_code()["mean"],
    )
    return GramSearch(spec, vocab, index, CodeTrie.build(index.table), FakeGenerator(seed))


def reference_items(
    index: CodeIndex, weights: ScoreWeights, rows: np.ndarray, query_logp: np.ndarray, excluded: set[int]
) -> list[tuple[int, float]]:
    best: dict[int, float] = {}
    for position, row in enumerate(rows.tolist()):
        for p in range(index.offsets[row], index.offsets[row + 1]):
            label = int(index.items[p])
            s = float(
                np.float32(
                    score_candidates(
                        weights,
                        index.table.codes[row][None],
                        query_logp[position][None],
                        index.token_logprobs[p][None],
                    )[0]
                )
            )
            if label not in excluded:
                best[label] = max(best.get(label, -np.inf), s)
    return sorted(best.items(), key=lambda item: (-item[1], item[0]))


@pytest.mark.parametrize("seed", range(6))
def test_items_of_scores_every_posting_and_keeps_each_items_best_code(seed: int) -> None:
    index = random_index(seed)
    weights = ScoreWeights(divergence=(1.0, 2.0, 0.5), query_logprob=(0.3, 0.1, 0.2), bias=(0.0, -0.5, 0.4))
    search = gram_search(index, weights)
    rng = np.random.default_rng(seed)
    rows = rng.permutation(index.n_codes)[:5]
    codes = index.table.codes[rows]
    query_logp = np.where(codes != PAD, np.log(rng.uniform(0.05, 1, codes.shape)), 0).astype(np.float32)
    excluded = set(rng.choice(30, 6, replace=False).tolist())
    expected = reference_items(index, weights, rows, query_logp, excluded)
    for depth in (1, 4, 100):
        for as_array in (False, True):
            excl: frozenset[int] | np.ndarray = (
                np.array(sorted(excluded)) if as_array else frozenset(excluded)
            )
            labels, scores = search.items_of(rows, query_logp, depth, excl)
            assert labels.dtype == np.int64 and scores.dtype == np.float32
            assert labels.tolist() == [label for label, _ in expected[:depth]]
            assert scores.tolist() == pytest.approx([score for _, score in expected[:depth]], rel=1e-6)


def test_search_generates_query_codes_and_finds_their_items() -> None:
    index = random_index(9)
    search = gram_search(index, seed=9)
    tokenizer = FakeTokenizer()
    rows, query_logp, scores = search.generate_for("red running shoes", tokenizer, beam=4, max_codes=3)
    assert 1 <= len(rows) <= 3 and query_logp.shape == (len(rows), MAX_CODE_TOKENS)
    assert (np.diff(scores) <= 0).all() and (rows >= 0).all() and (rows < index.n_codes).all()
    assert search.generator.encoded[-1] == ([6, 10, 8], 0)  # the query task
    labels, _ = search.search("red running shoes", tokenizer, 5, frozenset(), 4, 3)
    assert labels.tolist() == search.items_of(rows, query_logp, 5, frozenset())[0].tolist()
    assert 1 <= len(labels) <= 5
    empty = search.generate_for("", tokenizer, beam=4, max_codes=3)
    assert [len(a) for a in empty] == [0, 0, 0] and empty[1].shape == (0, MAX_CODE_TOKENS)
    assert [len(a) for a in search.search("", tokenizer, 5, frozenset(), 4, 3)] == [0, 0]


def test_load_checks_the_vocabulary_and_index_against_the_manifest(tmp_path: Path) -> None:
    index = random_index(4)
    vocab = CodeVocab(["a"], [f"a={n}" for n in range(VOCAB - 3)])
    vocab.save(tmp_path)
    index.save(tmp_path)
    spec = gram_search(index).spec
    with pytest.raises(ValueError, match=r"^gram_vocab\.json: 12 code tokens, the manifest says 13"):
        GramSearch.load(tmp_path, spec.model_copy(update={"vocab_size": 13}), 30)
    with pytest.raises(ValueError, match=f"^{GRAM_INDEX_FILE}: {index.n_codes} codes, the manifest"):
        GramSearch.load(tmp_path, spec.model_copy(update={"codes": index.n_codes + 1}), 30)
    with pytest.raises(ValueError, match=f"^{GRAM_INDEX_FILE}: .*outside the catalog"):
        GramSearch.load(tmp_path, spec, 3)
    with pytest.raises(FileNotFoundError, match=r"gram_encoder\.onnx"):  # the rest agrees
        GramSearch.load(tmp_path, spec, 30)
