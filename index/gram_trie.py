"""The published code table, its prefix trie, and beam search constrained to it.

A code is a token row (``index.gram_vocab``): 1 to ``MAX_CODE_ATTRIBUTES`` value tokens, then
``EOS``, then ``PAD`` up to ``MAX_CODE_TOKENS``. The table holds the distinct codes sorted
lexicographically by token row, so a code ending earlier sorts before its extensions (``EOS``
is below every value token).

Depth ``d`` (0-based) of the trie is CSR over the nodes at depth ``d`` (the distinct
``d``-token prefixes, the root at depth 0): ``indptr[d]`` has one entry per node plus one,
``tokens[d]`` each child's token at position ``d``, ascending within a node (so ``EOS`` comes
first). A child's position in ``tokens[d]`` is its node id at depth ``d + 1``; an ``EOS`` child
is a leaf that finishes a code, and ``leaf[d]`` gives its table row (-1 for a value token).
Built once from the published table at load.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from index.gram_vocab import BOS, EOS, MAX_CODE_TOKENS, PAD, RESERVED
from index.i2i import gather_rows


def code_rows_problem(codes: np.ndarray) -> str | None:
    """What is wrong with ``codes`` as code token rows, or None: the shape must be
    ``(C, MAX_CODE_TOKENS)`` of integers and each row 1..6 value tokens (>= ``RESERVED``), one
    ``EOS``, then ``PAD``."""
    if codes.ndim != 2 or codes.shape[1] != MAX_CODE_TOKENS:
        return f"codes need shape (C, {MAX_CODE_TOKENS}), found {codes.shape}"
    if codes.dtype.kind not in "iu":
        return f"codes must be integers, found {codes.dtype}"
    eos = codes == EOS
    if np.any(eos.sum(axis=1) != 1):
        return "a code row does not hold exactly one EOS"
    end = np.argmax(eos, axis=1)  # (C,) position of the EOS
    if np.any(end == 0):
        return "a code row has no value token before its EOS"
    position = np.arange(MAX_CODE_TOKENS)
    before = position < end[:, None]  # (C, 7) value positions
    if np.any(before & (codes < RESERVED)):
        return f"a code row holds a reserved token (< {RESERVED}) before its EOS"
    if np.any((position > end[:, None]) & (codes != PAD)):
        return "a code row holds a token after its EOS"
    return None


def code_keys(codes: np.ndarray) -> np.ndarray:
    """(C, 7) non-negative token rows → (C,) opaque keys ordered as the rows lexicographically.

    Big-endian bytes of non-negative integers compare as the integers do, so a row's bytes are
    a key that sorts, searches and compares with numpy's void comparisons; a mixed-radix int64
    key would overflow at a few thousand tokens over seven positions."""
    rows = np.ascontiguousarray(np.asarray(codes, dtype=">i8").reshape(-1, MAX_CODE_TOKENS))
    return rows.view(np.dtype((np.void, 8 * MAX_CODE_TOKENS))).reshape(-1)


@dataclass(frozen=True, eq=False)
class CodeTable:
    """Distinct codes as token rows, lexicographically sorted. Immutable (arrays are read-only);
    safe to share between threads.

    Construct with ``build``; the constructor trusts its arguments.
    """

    codes: np.ndarray  # (C, 7) int64 token rows, unique, lexicographically sorted
    keys: np.ndarray = field(init=False, repr=False)  # (C,) code_keys, ascending

    def __post_init__(self) -> None:
        object.__setattr__(self, "keys", code_keys(self.codes))
        for array in (self.codes, self.keys):
            array.setflags(write=False)

    @classmethod
    def build(cls, codes: np.ndarray) -> CodeTable:
        """The distinct rows of ``codes`` (E, 7), sorted. Raises ``ValueError`` for rows that are
        not codes (``code_rows_problem``)."""
        codes = np.asarray(codes)
        if (problem := code_rows_problem(codes)) is not None:
            raise ValueError(problem)
        _, first = np.unique(code_keys(codes), return_index=True)
        return cls(codes[first].astype(np.int64))

    @property
    def n_codes(self) -> int:
        return len(self.codes)

    def row_of(self, codes: np.ndarray) -> np.ndarray:
        """(E, 7) token rows → (E,) int64 table row, -1 where the code is not in the table."""
        codes = np.asarray(codes)
        if codes.ndim != 2 or codes.shape[1] != MAX_CODE_TOKENS:
            raise ValueError(f"codes need shape (E, {MAX_CODE_TOKENS}), got {codes.shape}")
        if not self.n_codes:
            return np.full(len(codes), -1, dtype=np.int64)
        # A row with a negative token gets a key no table row has (sign bytes), so it is not found.
        keys = code_keys(codes)
        rows = np.minimum(np.searchsorted(self.keys, keys), self.n_codes - 1)
        return np.where(self.keys[rows] == keys, rows, -1).astype(np.int64)


@dataclass(frozen=True, eq=False)
class CodeTrie:
    """The trie of a table's codes. Immutable (arrays are read-only); safe to share between threads.

    Construct with ``build``; the constructor trusts its arguments (a hand-made trie may have a
    node without children, which ``beam_search`` refuses).
    """

    indptr: tuple[np.ndarray, ...]  # per depth d: (nodes at depth d + 1,) int64 CSR into tokens[d]
    tokens: tuple[np.ndarray, ...]  # per depth d: (children,) int64 token at position d
    leaf: tuple[np.ndarray, ...]  # per depth d: (children,) int64 table row of an EOS child, else -1

    def __post_init__(self) -> None:
        for array in (*self.indptr, *self.tokens, *self.leaf):
            array.setflags(write=False)

    @classmethod
    def build(cls, table: CodeTable) -> CodeTrie:
        codes = table.codes  # (C, 7) sorted, so every depth's prefixes come out sorted too
        length = (codes != PAD).sum(axis=1)  # (C,) values + EOS
        indptr, tokens, leaf = [], [], []
        active = np.arange(len(codes))  # rows with a token at the current depth
        parent = np.zeros(len(codes), dtype=np.int64)  # each active row's node at the current depth
        n_parents = 1  # the root
        for depth in range(MAX_CODE_TOKENS):
            rows = codes[active]
            starts = np.ones(len(active), dtype=bool)  # rows that open a new prefix of length depth+1
            starts[1:] = np.any(rows[1:, : depth + 1] != rows[:-1, : depth + 1], axis=1)
            first = np.flatnonzero(starts)
            indptr.append(np.searchsorted(parent[first], np.arange(n_parents + 1)).astype(np.int64))
            tokens.append(rows[first, depth].astype(np.int64))
            # An EOS prefix is the whole code of exactly one row (rows are unique).
            leaf.append(np.where(rows[first, depth] == EOS, active[first], -1).astype(np.int64))
            child = np.cumsum(starts) - 1  # each active row's node at depth + 1
            going_on = length[active] > depth + 1
            active, parent = active[going_on], child[going_on]
            n_parents = len(first)
        return cls(tuple(indptr), tuple(tokens), tuple(leaf))

    @property
    def max_token(self) -> int:
        """The largest token any path uses (-1 for an empty trie)."""
        return max((int(t.max()) for t in self.tokens if len(t)), default=-1)


# step(prompt of each row (R,) int64, prefix (R, t) int64 starting with BOS) -> logits (R, V)
Step = Callable[[np.ndarray, np.ndarray], np.ndarray]


def beam_search(
    trie: CodeTrie, step: Step, beam: int, max_codes: int, prompts: int = 1
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The best finished codes of the trie for each of ``prompts`` prompts under ``step``:
    (table rows (P, M) int64, token log-probs (P, M, 7) float32, scores (P, M) float32), with
    ``M = max_codes``; per prompt best first by score, ties by lower row, padded with row -1,
    log-probs 0 and score -inf where fewer codes finished.

    ``step(prompt (R,), prefix (R, t))`` returns next-token logits ``(R, V)`` for every live
    beam (``prefix`` is BOS then the beam's t - 1 tokens); it is called once per depth with
    every prompt's beams together. A token's log-probability is its log-softmax over the FULL
    vocabulary (the raw probability the scorer compares between query and product sides), but
    only the trie's children of a beam's node are candidates. A candidate ``EOS`` finishes a
    code, whose score is the sum of its tokens' log-probabilities. At each depth the ``beam``
    best candidates of each prompt (finished or not; ties by lower prefix) are kept and the
    finished ones leave the live set; the search stops when no beam is live. Vectorised over
    (prompt, beam, child); thread-safe when ``step`` is.

    Raises ``RuntimeError`` when a live beam's node has no children (a broken trie: never
    decoded unconstrained instead) and ``ValueError`` for ``beam``, ``max_codes`` or
    ``prompts`` below 1, logits of the wrong shape, or a candidate whose log-probability is not
    finite (a non-finite candidate logit, or NaN / +inf anywhere in its row, which leaves the
    full-vocabulary normaliser undefined).
    """
    if beam < 1 or max_codes < 1 or prompts < 1:
        raise ValueError(
            f"beam, max_codes and prompts must be at least 1, got {beam}, {max_codes}, {prompts}"
        )
    prompt = np.arange(prompts, dtype=np.int64)  # (B,) each live beam's prompt
    node = np.zeros(prompts, dtype=np.int64)  # (B,) node ids at the current depth
    score = np.zeros(prompts, dtype=np.float64)  # (B,)
    prefix = np.full((prompts, 1), BOS, dtype=np.int64)  # (B, t)
    history = np.zeros((prompts, 0), dtype=np.float64)  # (B, t - 1) log-probs of the prefix tokens
    done: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []  # prompt, row, score, lp
    vocab_floor = trie.max_token + 1
    for depth in range(MAX_CODE_TOKENS):
        if not len(node):
            break
        indptr = trie.indptr[depth]
        counts = indptr[node + 1] - indptr[node]
        if np.any(counts == 0):
            raise RuntimeError(f"code trie node {int(node[counts == 0][0])} at depth {depth} has no children")
        logits = np.asarray(step(prompt, prefix))
        if logits.ndim != 2 or logits.shape[0] != len(node) or logits.shape[1] < vocab_floor:
            raise ValueError(
                f"step returned logits of shape {logits.shape}, need ({len(node)}, >= {vocab_floor})"
            )
        peak = logits.max(axis=1).astype(np.float64)  # (B,)
        log_norm = peak + np.log(np.exp(logits - peak[:, None]).sum(axis=1, dtype=np.float64))  # (B,)
        which, child = gather_rows(indptr, node)  # (C,) beam and child node per candidate
        token = trie.tokens[depth][child]  # (C,)
        logp = logits[which, token].astype(np.float64) - log_norm[which]  # (C,)
        if not np.all(np.isfinite(logp)):
            raise ValueError("step returned non-finite logits for a candidate (or NaN/inf in its row)")
        total = score[which] + logp  # (C,)
        keep, _ = _top_per_group(prompt[which], total, child, beam)
        finished = token[keep] == EOS
        ended, going = keep[finished], keep[~finished]
        if len(ended):
            lp = np.concatenate([history[which[ended]], logp[ended, None]], axis=1)
            done.append((prompt[which[ended]], trie.leaf[depth][child[ended]], total[ended], lp))
        prompt, node, score = prompt[which[going]], child[going], total[going]
        prefix = np.concatenate([prefix[which[going]], token[going, None]], axis=1)
        history = np.concatenate([history[which[going]], logp[going, None]], axis=1)
    if len(node):
        raise RuntimeError(f"code trie paths run past {MAX_CODE_TOKENS} tokens without EOS")
    return _collect(done, prompts, max_codes)


def _collect(
    done: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]], prompts: int, max_codes: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows = np.full((prompts, max_codes), -1, dtype=np.int64)
    logprobs = np.zeros((prompts, max_codes, MAX_CODE_TOKENS), dtype=np.float32)
    scores = np.full((prompts, max_codes), -np.inf, dtype=np.float32)
    if not done:
        return rows, logprobs, scores
    prompt = np.concatenate([d[0] for d in done])
    row = np.concatenate([d[1] for d in done])
    total = np.concatenate([d[2] for d in done])
    lp = np.zeros((len(prompt), MAX_CODE_TOKENS), dtype=np.float64)
    at = 0
    for *_, part in done:
        lp[at : at + len(part), : part.shape[1]] = part
        at += len(part)
    pick, rank = _top_per_group(prompt, total, row, max_codes)
    rows[prompt[pick], rank] = row[pick]
    logprobs[prompt[pick], rank] = lp[pick]
    scores[prompt[pick], rank] = total[pick]
    return rows, logprobs, scores


def _top_per_group(
    group: np.ndarray, score: np.ndarray, key: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """(indices, rank within their group) of the ``k`` highest ``score`` of each ``group``,
    grouped ascending, best first within a group, ties by lower ``key``."""
    order = np.lexsort((key, -score, group))
    ordered = group[order]
    rank = np.arange(len(order)) - np.searchsorted(ordered, ordered)
    keep = rank < k
    return order[keep], rank[keep]
