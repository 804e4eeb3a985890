"""The prefix trie over the SID table, and beam search constrained to it.

Level ``l`` (0-based) of the trie is CSR over the nodes at depth ``l``: ``indptr[l]`` has one
entry per node plus one, ``values[l]`` the level-``l`` value of each child, ascending within a
node. A child's position in ``values[l]`` is its node id at depth ``l + 1``, nodes at each depth
are the distinct SID prefixes in lexicographic order, and the depth-4 nodes (leaves) are the
table's rows. Built once from the published table; ``SID_TRIE_FILE`` is checked against it on
load.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from index.fusion import top_indices
from index.i2i import gather_rows
from index.sid_layout import BOS_TOKEN, LEVELS, SidLayout
from index.sid_table import SID_TABLE_FILE, SidTable, read_arrays

SID_TRIE_FILE = "sid_trie.npz"
_TRIE_KEYS = tuple(f"{kind}_{level}" for kind in ("indptr", "values") for level in range(LEVELS))


@dataclass(frozen=True, eq=False)
class SidTrie:
    """The trie of a table's SIDs. Immutable (arrays are read-only); safe to share between threads.

    Construct with ``build`` or ``load``; the constructor trusts its arguments (a hand-made trie
    may have a node without children, which ``beam_search`` refuses).
    """

    layout: SidLayout
    indptr: tuple[np.ndarray, ...]  # per level l: (nodes at depth l + 1,) int64 CSR into values[l]
    values: tuple[np.ndarray, ...]  # per level l: (nodes at depth l + 1,) int64 child's level-l value

    def __post_init__(self) -> None:
        for array in (*self.indptr, *self.values):
            array.setflags(write=False)

    @classmethod
    def build(cls, table: SidTable) -> SidTrie:
        codes = table.codes  # (S, 4) sorted, so every depth's prefixes come out sorted too
        indptr, values = [], []
        parent = np.zeros(len(codes), dtype=np.int64)  # each row's node at the current depth
        n_parents = 1  # the root
        for level in range(LEVELS):
            starts = np.ones(len(codes), dtype=bool)  # rows that open a new prefix of length level+1
            starts[1:] = np.any(codes[1:, : level + 1] != codes[:-1, : level + 1], axis=1)
            first = np.flatnonzero(starts)
            indptr.append(np.searchsorted(parent[first], np.arange(n_parents + 1)).astype(np.int64))
            values.append(codes[first, level].astype(np.int64))
            parent = np.cumsum(starts) - 1
            n_parents = len(first)
        return cls(table.layout, tuple(indptr), tuple(values))

    def save(self, directory: Path) -> None:
        arrays: dict[str, Any] = {f"indptr_{level}": array for level, array in enumerate(self.indptr)}
        arrays |= {f"values_{level}": array for level, array in enumerate(self.values)}
        with (directory / SID_TRIE_FILE).open("wb") as f:
            np.savez(f, **arrays)

    @classmethod
    def load(cls, directory: Path, table: SidTable) -> SidTrie:
        """The trie in ``directory``, which must equal the one built from ``table``.

        Raises ``OSError`` for a missing file and ``ValueError`` starting with the file's name
        for an unreadable file, a missing array or any difference from the table.
        """
        data = read_arrays(directory / SID_TRIE_FILE, _TRIE_KEYS)
        built = cls.build(table)
        for level in range(LEVELS):
            for kind, expected in (("indptr", built.indptr[level]), ("values", built.values[level])):
                if not np.array_equal(data[f"{kind}_{level}"], expected):
                    raise ValueError(
                        f"{SID_TRIE_FILE}: {kind}_{level} differs from the trie of {SID_TABLE_FILE}"
                    )
        return built


Step = Callable[[np.ndarray], np.ndarray]


def beam_search(trie: SidTrie, layout: SidLayout, step: Step, beam: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``beam`` best SIDs of the trie under the decoder ``step``: (table rows int64, scores
    float32), best first, at most ``beam`` (fewer when the trie has fewer SIDs).

    ``step`` maps prefixes ``(B, t)`` int64 tokens (``BOS_TOKEN`` then t - 1 SID tokens, t = 1..4)
    to next-token logits ``(B, V)``, ``V = layout.vocab_size``; it is called once per level. At
    each level only a beam's trie children are candidates and their log-softmax is taken over
    those children alone (renormalised), so a SID's score is the sum of four such log-probs.
    Beams are ranked by score, ties by lower prefix (lower token first). Vectorised over all
    (beam, child) pairs; thread-safe when ``step`` is.

    Raises ``RuntimeError`` when a beam's node has no children (a broken trie: never decoded
    unconstrained instead) and ``ValueError`` for a beam below 1, a trie of another layout, or
    logits of the wrong shape or not finite at a candidate.
    """
    if beam < 1:
        raise ValueError(f"beam must be at least 1, got {beam}")
    if trie.layout != layout:
        raise ValueError(f"the trie's layout {trie.layout.sizes} is not the decoder's {layout.sizes}")
    nodes = np.zeros(1, dtype=np.int64)  # (B,) node ids at the current depth, best first
    scores = np.zeros(1, dtype=np.float64)  # (B,)
    prefix = np.full((1, 1), BOS_TOKEN, dtype=np.int64)  # (B, t)
    for level in range(LEVELS):
        indptr = trie.indptr[level]
        counts = indptr[nodes + 1] - indptr[nodes]
        if np.any(counts == 0):
            raise RuntimeError(f"SID trie node {int(nodes[counts == 0][0])} at depth {level} has no children")
        logits = np.asarray(step(prefix))
        if logits.shape != (len(nodes), layout.vocab_size):
            raise ValueError(
                f"step returned logits of shape {logits.shape}, need {(len(nodes), layout.vocab_size)}"
            )
        which, child = gather_rows(indptr, nodes)  # (C,) beam and child node per candidate
        tokens = layout.offsets[level] + trie.values[level][child]  # (C,)
        x = logits[which, tokens].astype(np.float64)  # (C,)
        if not np.all(np.isfinite(x)):
            raise ValueError("step returned non-finite logits for allowed tokens")
        segments = np.cumsum(counts) - counts  # (B,) first candidate of each beam
        peak = np.maximum.reduceat(x, segments)  # (B,)
        log_norm = peak + np.log(np.add.reduceat(np.exp(x - peak[which]), segments))  # (B,)
        total = scores[which] + x - log_norm[which]  # (C,)
        keep = top_indices(total, child, beam)
        nodes, scores = child[keep], total[keep]
        prefix = np.concatenate([prefix[which[keep]], tokens[keep, None]], axis=1)
    return nodes.astype(np.int64), scores.astype(np.float32)
