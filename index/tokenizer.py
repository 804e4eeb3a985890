"""The text tokenizer every text model of a bundle shares: BM25, the dense encoders, the NSP
query feature (and the generative search channels after them).

A WordPiece vocabulary chosen (``train_tokenizer``) from the catalog's titles and attributes
and the training queries, encoded by the Hugging Face ``tokenizers`` library; saved in the bundle as
``tokenizer.json``. Sub-word pieces are what let a typo ("sneakres") or an unseen compound
still share pieces with the catalog's words. Texts are normalised (``index.text``) before they
are tokenized, offline and online alike.

Id 0 is padding and 1 the unknown piece, whatever the vocabulary, so a padded id matrix can be
masked with ``ids > 0``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, models, pre_tokenizers

from index.text import normalize_text

TOKENIZER_FILE = "tokenizer.json"
PAD, UNK = "[PAD]", "[UNK]"
PAD_ID, UNK_ID = 0, 1
DEFAULT_VOCAB_SIZE = 8000


class TextTokenizer:
    """Normalised text → WordPiece ids. Immutable and thread-safe (the Rust tokenizer is)."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        if tokenizer.token_to_id(PAD) != PAD_ID or tokenizer.token_to_id(UNK) != UNK_ID:
            raise ValueError(f"tokenizer must map {PAD} to {PAD_ID} and {UNK} to {UNK_ID}")
        self._tokenizer = tokenizer

    @classmethod
    def load(cls, path: Path) -> TextTokenizer:
        """Raises ``ValueError`` (or ``OSError``) for an unreadable or foreign tokenizer file."""
        try:
            tokenizer = Tokenizer.from_file(str(path))
        except Exception as exc:  # the Rust side raises a bare Exception for a malformed file
            raise ValueError(f"{path}: not a tokenizer file: {exc}") from exc
        return cls(tokenizer)

    def save(self, path: Path) -> None:
        self._tokenizer.save(str(path))

    @property
    def vocab_size(self) -> int:
        return int(self._tokenizer.get_vocab_size())

    def pieces(self, text: str) -> list[str]:
        """The word pieces of ``text`` (normalised first), e.g. for BM25's term lists."""
        return list(self._tokenizer.encode(normalize_text(text)).tokens)

    def ids(self, texts: Sequence[str], max_len: int) -> np.ndarray:
        """(len(texts), max_len) int64 piece ids, truncated at ``max_len``, right-padded with 0."""
        out = np.zeros((len(texts), max_len), dtype=np.int64)
        if not texts:
            return out
        for row, encoding in enumerate(self._tokenizer.encode_batch([normalize_text(t) for t in texts])):
            ids = encoding.ids[:max_len]
            out[row, : len(ids)] = ids
        return out


def train_tokenizer(
    texts: Iterable[str], vocab_size: int = DEFAULT_VOCAB_SIZE, min_frequency: int = 2
) -> TextTokenizer:
    """A WordPiece tokenizer for ``texts`` (normalised first), deterministic for the same texts.

    The vocabulary is chosen here rather than by the ``tokenizers`` WordPiece trainer, whose
    choice among equally frequent merges changes from run to run (huggingface/tokenizers#1794):
    the special pieces, every character seen (alone and as a ``##`` continuation), then every
    word seen ``min_frequency`` times or more, most frequent first, then the words' prefixes (3
    characters or more) and ``##`` suffixes (2 or more), scored by the frequency of the words
    holding them, until ``vocab_size``; ties break alphabetically. The ``tokenizers`` library
    then does the encoding (longest-match-first), so a rare or misspelt word still falls into
    known pieces led by a prefix of the intended word ("runnign" → "runni", "##g", "##n"); a
    frequent word is one piece, so its typo shares no piece with it.
    """
    splitter = pre_tokenizers.BertPreTokenizer()
    words: Counter[str] = Counter()
    for text in texts:
        words.update(word for word, _ in splitter.pre_tokenize_str(normalize_text(text)))
    chars = sorted({ch for word in words for ch in word})
    base = [PAD, UNK, *chars, *(f"##{ch}" for ch in chars)]
    taken = set(base)  # a one-letter word is already a character piece: ids stay dense
    frequent = sorted(
        (w for w, n in words.items() if n >= min_frequency and w not in taken), key=lambda w: (-words[w], w)
    )
    taken.update(frequent)
    parts: Counter[str] = Counter()
    for word, count in words.items():
        for cut in range(3, len(word) - 1):
            parts[word[:cut]] += count
            parts[f"##{word[cut:]}"] += count
    extra = sorted(
        (p for p, n in parts.items() if n >= min_frequency and p not in taken), key=lambda p: (-parts[p], p)
    )
    pieces = [*base, *frequent, *extra][: max(vocab_size, len(base))]
    tokenizer = Tokenizer(models.WordPiece({piece: i for i, piece in enumerate(pieces)}, unk_token=UNK))
    tokenizer.pre_tokenizer = splitter
    return TextTokenizer(tokenizer)
