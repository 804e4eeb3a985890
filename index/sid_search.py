"""The ``sid`` channel's serving side: query (+ the user's recent SIDs) → the generator → trie-
constrained beam search over the published SIDs → the SIDs' items.

``SidSearch.load`` opens and checks every SID file of a bundle (the table, the trie rebuilt and
compared, the generator's probe), so a corrupt or inconsistent file is refused before it serves.
The offline side (``model_export.sid``) answers evaluation cases through the same object.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from index.bundle import SidSpec
from index.features import CLICK, Session
from index.fusion import Candidates
from index.sid_generator import SID_GENERATOR_FILES, SidGeneratorRuntime
from index.sid_layout import LEVELS, PAD_TOKEN, SidLayout
from index.sid_table import SID_TABLE_FILE, SidTable
from index.sid_trie import SID_TRIE_FILE, SidTrie, beam_search
from index.tokenizer import PAD_ID, TextTokenizer
from index.vocab import Vocabulary

SID_FILES = (SID_TABLE_FILE, SID_TRIE_FILE, *SID_GENERATOR_FILES)


def recent_engaged(sessions: Sequence[Session], vocab: Vocabulary, limit: int) -> list[int]:
    """Labels of the user's ``limit`` most recently engaged (click or deeper) distinct items,
    newest first: the personal context the generator reads (``sessions`` oldest first)."""
    labels: list[int] = []
    if limit <= 0:
        return labels
    for session in reversed(sessions):
        for item, action in session.items:
            label = vocab.item_index(item) if action >= CLICK else None
            if label is not None and label not in labels:
                labels.append(label)
                if len(labels) == limit:
                    return labels
    return labels


def context_tokens(
    item_codes: np.ndarray, layout: SidLayout, recent: Sequence[Sequence[int]], user_sids: int
) -> np.ndarray:
    """(E, user_sids * 4) SID tokens of each row's ``recent`` labels' SIDs (``item_codes``: (N, 4),
    rows of -1 for items without one), newest first, ``PAD_TOKEN`` after: the generator's user
    context, built the same way for training examples and for requests."""
    out = np.full((len(recent), user_sids * LEVELS), PAD_TOKEN, dtype=np.int64)
    for row, labels in enumerate(recent):
        codes = item_codes[np.asarray(labels[:user_sids], dtype=np.int64)].reshape(-1, LEVELS)
        tokens = layout.to_tokens(codes[(codes >= 0).all(axis=1)]).ravel()
        out[row, : len(tokens)] = tokens
    return out


class SidSearch:
    """A loaded SID table, trie and generator. Immutable; ``search`` may be called from many
    threads (ONNX Runtime sessions are thread-safe). Blocking CPU work: call it off the loop."""

    def __init__(self, spec: SidSpec, table: SidTable, trie: SidTrie, generator: SidGeneratorRuntime) -> None:
        self.spec = spec
        self.layout = SidLayout(spec.sizes)
        self.table = table
        self.trie = trie
        self.generator = generator
        # (N, 4) each item's SID, -1 rows for items without one: the user context's source.
        self.item_codes = np.where(
            table.item_sid[:, None] >= 0, table.codes[np.maximum(table.item_sid, 0)], -1
        ).astype(np.int64)

    @classmethod
    def load(cls, directory: Path, spec: SidSpec, n_items: int, *, threads: int = 1) -> SidSearch:
        """Load and check ``SID_FILES`` in ``directory``. Raises ``OSError`` for a missing file
        and ``ValueError`` naming the file when one disagrees with ``spec``, the catalog, the
        table or its probe."""
        layout = SidLayout(spec.sizes)
        table = SidTable.load(directory, layout, n_items)
        trie = SidTrie.load(directory, table)
        generator = SidGeneratorRuntime.load(directory, threads=threads)
        if generator.vocab_size != layout.vocab_size:
            raise ValueError(
                f"the SID generator has {generator.vocab_size} SID tokens, the manifest's sizes "
                f"{spec.sizes} make {layout.vocab_size}"
            )
        return cls(spec, table, trie, generator)

    def beam_for(self, depth: int, max_beam: int) -> int:
        """The smallest of the spec's beam sizes whose SIDs hold about ``depth`` items, at most
        ``max_beam`` (a deployment setting)."""
        for beam in sorted(self.spec.beams):
            if beam * self.spec.items_per_sid >= depth:
                return min(beam, max_beam)
        return min(max(self.spec.beams), max_beam)

    def generate_for(
        self, query: str, tokenizer: TextTokenizer, recent: Sequence[int], beam: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """(table rows, beam log-probs) of the ``beam`` best SIDs, best first, for ``query`` and
        the user's ``recent`` engaged labels (``recent_engaged``); nothing for a query without
        pieces."""
        ids = tokenizer.ids([query], self.spec.max_text_tokens)  # (1, L)
        length = int((ids[0] != PAD_ID).sum())
        if length == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        memory, memory_pad = self.generator.encode(
            ids[:, :length], context_tokens(self.item_codes, self.layout, [recent], self.spec.user_sids)
        )
        return beam_search(self.trie, self.layout, self.generator.stepper(memory, memory_pad), beam)

    def items_of(
        self, rows: np.ndarray, scores: np.ndarray, depth: int, excluded: frozenset[int] | np.ndarray
    ) -> Candidates:
        """The items of SID ``rows`` in order, none in ``excluded``, at most ``depth``; an item
        scores its SID's beam log-probability."""
        labels, position = self.table.expand(rows, depth, excluded)
        return labels, scores[position].astype(np.float32)

    def search(
        self,
        query: str,
        tokenizer: TextTokenizer,
        recent: Sequence[int],
        depth: int,
        excluded: frozenset[int] | np.ndarray,
        beam: int,
    ) -> Candidates:
        """``generate_for`` then ``items_of``: what the channel answers."""
        rows, scores = self.generate_for(query, tokenizer, recent, beam)
        return self.items_of(rows, scores, depth, excluded)
