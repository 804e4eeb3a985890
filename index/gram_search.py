"""The ``gram`` channel's serving side: query → the code generator (query task) → trie-
constrained beam search over the published codes → every item under those codes, scored by how
closely the query side's and the product side's token probabilities of the code agree
(``index.gram_score``; higher = more relevant) → the best ``depth`` items.

``GramSearch.load`` opens and checks every GRAM file of a bundle (the code vocabulary, the code
index, the generator's probe), builds the trie from the index's codes, and refuses a file that
disagrees with the manifest or another file before it serves. The offline side
(``model_export.gram``) answers evaluation cases through the same object.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np

from index.bundle import GramSpec
from index.fusion import Candidates, top_indices
from index.gram_generator import GRAM_GENERATOR_FILES, QUERY_TASK, GramGeneratorRuntime
from index.gram_index import GRAM_INDEX_FILE, CodeIndex
from index.gram_score import ScoreWeights, score_candidates
from index.gram_trie import CodeTrie, beam_search
from index.gram_vocab import GRAM_VOCAB_FILE, MAX_CODE_TOKENS, CodeVocab
from index.tokenizer import PAD_ID, TextTokenizer

GRAM_FILES = (GRAM_VOCAB_FILE, GRAM_INDEX_FILE, *GRAM_GENERATOR_FILES)


class CodeGenerator(Protocol):
    """What the search needs of the generator (``GramGeneratorRuntime``, or a fake in tests)."""

    def encode(self, text_ids: np.ndarray, task: int) -> tuple[np.ndarray, np.ndarray]: ...

    def stepper(self, memory: np.ndarray, memory_pad: np.ndarray) -> Callable[[np.ndarray], np.ndarray]: ...


class GramSearch:
    """A loaded code vocabulary, code index, trie and generator. Immutable; ``search`` may be
    called from many threads (ONNX Runtime sessions are thread-safe). Blocking CPU work: call it
    off the event loop."""

    def __init__(
        self, spec: GramSpec, vocab: CodeVocab, index: CodeIndex, trie: CodeTrie, generator: CodeGenerator
    ) -> None:
        self.spec = spec
        self.vocab = vocab
        self.index = index
        self.trie = trie
        self.generator = generator
        self.weights = ScoreWeights.from_dict(spec.weights)

    @classmethod
    def load(cls, directory: Path, spec: GramSpec, n_items: int, *, threads: int = 1) -> GramSearch:
        """Load and check ``GRAM_FILES`` in ``directory``. Raises ``OSError`` for a missing file
        and ``ValueError`` naming the file when one disagrees with ``spec`` (vocabulary size,
        code count, hidden size, score weights), the catalog, another file or its probe."""
        vocab = CodeVocab.load(directory)
        if vocab.size != spec.vocab_size:
            raise ValueError(
                f"{GRAM_VOCAB_FILE}: {vocab.size} code tokens, the manifest says {spec.vocab_size}"
            )
        index = CodeIndex.load(directory, vocab.size, n_items)
        if index.n_codes != spec.codes:
            raise ValueError(f"{GRAM_INDEX_FILE}: {index.n_codes} codes, the manifest says {spec.codes}")
        generator = GramGeneratorRuntime.load(directory, threads, dim=spec.dim, vocab_size=vocab.size)
        return cls(spec, vocab, index, CodeTrie.build(index.table), generator)

    def generate_for(
        self, query: str, tokenizer: TextTokenizer, beam: int, max_codes: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(code rows (M,) int64, the query side's token log-probs (M, 7) float32 (0 at PAD),
        beam scores (M,) float32) of at most ``max_codes`` codes, best first, for ``query``;
        nothing for a query without pieces or an index without codes. Raises as
        ``beam_search`` does (a childless trie node, non-finite logits)."""
        ids = tokenizer.ids([query], self.spec.max_text_tokens)  # (1, L)
        length = int((ids[0] != PAD_ID).sum())
        if length == 0 or self.index.n_codes == 0:
            return (
                np.zeros(0, np.int64),
                np.zeros((0, MAX_CODE_TOKENS), np.float32),
                np.zeros(0, np.float32),
            )
        memory, memory_pad = self.generator.encode(ids[:, :length], QUERY_TASK)
        step = self.generator.stepper(memory, memory_pad)
        rows, logprobs, scores = beam_search(self.trie, lambda _, prefix: step(prefix), beam, max_codes)
        found = rows[0] >= 0
        return rows[0][found], logprobs[0][found], scores[0][found]

    def items_of(
        self,
        rows: np.ndarray,
        query_logp: np.ndarray,
        depth: int,
        excluded: frozenset[int] | np.ndarray,
    ) -> Candidates:
        """Every item under code ``rows`` (``query_logp`` (M, 7): the query side's token
        log-probs of each), scored with the spec's weights against the item's product-side
        log-probs; an item takes its best code's score; ``excluded`` labels removed; the top
        ``depth`` best first, ties by lower label. Raises ``ValueError`` for a row outside the
        index or log-probs not of shape (M, 7)."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        query_logp = np.asarray(query_logp, dtype=np.float32)
        if query_logp.shape != (len(rows), MAX_CODE_TOKENS):
            raise ValueError(f"query log-probs of shape {query_logp.shape} for {len(rows)} codes")
        which, labels, product_logp = self.index.postings(rows)
        if depth <= 0 or not len(labels):
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        codes = self.index.table.codes[rows[which]]  # (K, 7)
        # float32 before ranking, so equal returned scores are ordered by label as promised.
        scores = score_candidates(self.weights, codes, query_logp[which], product_logp).astype(np.float32)
        if isinstance(excluded, frozenset):
            excluded = np.fromiter(excluded, dtype=np.int64, count=len(excluded))
        if len(excluded):
            keep = ~np.isin(labels, excluded)
            labels, scores = labels[keep], scores[keep]
        best = np.lexsort((-scores, labels))  # by label, best code first
        labels, scores = labels[best], scores[best]
        first = np.ones(len(labels), dtype=bool)
        first[1:] = labels[1:] != labels[:-1]
        labels, scores = labels[first], scores[first]
        order = top_indices(scores, labels, depth)
        return labels[order], scores[order]

    def search(
        self,
        query: str,
        tokenizer: TextTokenizer,
        depth: int,
        excluded: frozenset[int] | np.ndarray,
        beam: int,
        max_codes: int,
    ) -> Candidates:
        """``generate_for`` then ``items_of``: what the channel answers."""
        rows, query_logp, _ = self.generate_for(query, tokenizer, beam, max_codes)
        return self.items_of(rows, query_logp, depth, excluded)
