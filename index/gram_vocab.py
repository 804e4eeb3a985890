"""The ``gram`` channel's code vocabulary: one token per attribute value, and codes as token rows.

A *code* (GRAM's shared text identifier) is an ordered tuple of ``(attribute, value)`` pairs,
1 to ``MAX_CODE_ATTRIBUTES`` of them, in the bundle's attribute order. As a decoder target it is
its value tokens, then ``EOS``, right-padded with ``PAD`` to ``MAX_CODE_TOKENS``; the decoder
reads ``BOS`` then the tokens before each position. Tokens 0-2 are reserved, values start at 3.

``gram_vocab.json`` holds the attribute order and the value tokens as ``"attribute=value"``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

Code = tuple[tuple[str, str], ...]

PAD, BOS, EOS = 0, 1, 2
RESERVED = 3  # PAD, BOS, EOS
MAX_CODE_ATTRIBUTES = 6  # the paper's "max attributes per code"
MAX_CODE_TOKENS = MAX_CODE_ATTRIBUTES + 1  # values, then EOS
GRAM_VOCAB_FILE = "gram_vocab.json"
_SEPARATOR = "="


class CodeVocab:
    """Value tokens of one bundle. Immutable; safe to share between threads."""

    def __init__(self, attributes: Sequence[str], tokens: Sequence[str]) -> None:
        """``tokens``: ``"attribute=value"`` strings, token id ``RESERVED + position``. Raises
        ``ValueError`` for a duplicate token or one whose attribute is not in ``attributes``."""
        self.attributes = tuple(attributes)
        self.tokens = tuple(tokens)
        known = set(self.attributes)
        self._id: dict[tuple[str, str], int] = {}
        for n, token in enumerate(self.tokens):
            attribute, sep, value = token.partition(_SEPARATOR)
            if not sep or attribute not in known:
                raise ValueError(f"code token {token!r} is not attribute=value over {self.attributes}")
            if (attribute, value) in self._id:
                raise ValueError(f"duplicate code token {token!r}")
            self._id[(attribute, value)] = RESERVED + n
        self._rank = {a: n for n, a in enumerate(self.attributes)}

    @classmethod
    def build(cls, attributes: Sequence[str], codes: Sequence[Code]) -> CodeVocab:
        """Every value that occurs in ``codes``, sorted by attribute order then value."""
        rank = {a: n for n, a in enumerate(attributes)}
        pairs = sorted({pair for code in codes for pair in code}, key=lambda p: (rank[p[0]], p[1]))
        return cls(attributes, [f"{a}{_SEPARATOR}{v}" for a, v in pairs])

    @property
    def size(self) -> int:
        """Decoder vocabulary: reserved tokens plus values."""
        return RESERVED + len(self.tokens)

    def token_of(self, attribute: str, value: str) -> int | None:
        return self._id.get((attribute, value))

    def pair_of(self, token: int) -> tuple[str, str]:
        if not RESERVED <= token < self.size:
            raise ValueError(f"token {token} is not a value token (3..{self.size - 1})")
        attribute, _, value = self.tokens[token - RESERVED].partition(_SEPARATOR)
        return attribute, value

    def encode(self, codes: Sequence[Code]) -> np.ndarray:
        """(E, MAX_CODE_TOKENS) int64: each code's value tokens in attribute order, EOS, PAD.
        Raises ``ValueError`` for an unknown value, too many attributes or a repeated attribute."""
        out = np.full((len(codes), MAX_CODE_TOKENS), PAD, dtype=np.int64)
        for row, code in enumerate(codes):
            if not 1 <= len(code) <= MAX_CODE_ATTRIBUTES:
                raise ValueError(f"a code has 1..{MAX_CODE_ATTRIBUTES} attributes, got {code!r}")
            ordered = sorted(code, key=lambda p: self._rank.get(p[0], len(self._rank)))
            if len({a for a, _ in ordered}) != len(ordered):
                raise ValueError(f"code {code!r} repeats an attribute")
            for col, (attribute, value) in enumerate(ordered):
                token = self._id.get((attribute, value))
                if token is None:
                    raise ValueError(f"{attribute}={value} is not in the code vocabulary")
                out[row, col] = token
            out[row, len(ordered)] = EOS
        return out

    def decode(self, row: np.ndarray) -> Code:
        """The code of one token row (values up to the first EOS or PAD)."""
        pairs = []
        for token in np.asarray(row).tolist():
            if token in (EOS, PAD):
                break
            pairs.append(self.pair_of(int(token)))
        return tuple(pairs)

    def save(self, directory: Path) -> None:
        payload = {"attributes": list(self.attributes), "tokens": list(self.tokens)}
        (directory / GRAM_VOCAB_FILE).write_text(json.dumps(payload, indent=1))

    @classmethod
    def load(cls, directory: Path) -> CodeVocab:
        """Raises ``OSError`` for a missing file and ``ValueError`` starting with the file name
        for an unreadable or inconsistent one."""
        path = directory / GRAM_VOCAB_FILE
        text = path.read_text()
        try:
            payload = json.loads(text)
            return cls(payload["attributes"], payload["tokens"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{GRAM_VOCAB_FILE}: {exc}") from exc


def code_lengths(rows: np.ndarray) -> np.ndarray:
    """(E,) real tokens per row (values + EOS): what a code's probability multiplies over."""
    lengths: np.ndarray = (np.asarray(rows) != PAD).sum(axis=-1)
    return lengths
