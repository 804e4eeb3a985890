"""The text tokenizer every text model of a bundle shares: BM25, the dense encoders, the NSP
query feature (and the generative search channels after them).

A WordPiece vocabulary trained (``train_tokenizer``) on the catalog's titles and attributes and
on the training queries, with the Hugging Face ``tokenizers`` library; saved in the bundle as
``tokenizer.json``. Sub-word pieces are what let a typo ("sneakres") or an unseen compound
still share pieces with the catalog's words. Texts are normalised (``index.text``) before they
are tokenized, offline and online alike.

Id 0 is padding and 1 the unknown piece, whatever the vocabulary, so a padded id matrix can be
masked with ``ids > 0``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

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
    """A WordPiece tokenizer trained on ``texts`` (normalised first); deterministic for the
    same texts in the same order."""
    tokenizer = Tokenizer(models.WordPiece(unk_token=UNK))
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=[PAD, UNK], show_progress=False
    )
    tokenizer.train_from_iterator((normalize_text(text) for text in texts), trainer=trainer)
    return TextTokenizer(tokenizer)
