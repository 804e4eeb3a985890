"""The ``gram`` channel's code index: the published codes, the items under each code, and the
product side's token log-probabilities of each (code, item) posting.

The product generator codes every catalog item at publish; each (code, item) it keeps is a
posting carrying that generator's log-probability of each of the code's tokens for that item
(values + EOS, 0 at PAD), which the score compares with the query side's
(``index.gram_score``). Codes are the rows of a ``CodeTable`` (the trie is built from it);
postings are CSR by code row, labels ascending within a code. Saved as ``GRAM_INDEX_FILE`` in the
bundle and checked in full on load.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from index.gram_trie import CodeTable, code_keys, code_rows_problem
from index.gram_vocab import MAX_CODE_TOKENS, PAD
from index.i2i import gather_rows
from index.sid_table import read_arrays

GRAM_INDEX_FILE = "gram_index.npz"
GRAM_INDEX_FORMAT = 1
_INT_KEYS = ("format", "codes", "offsets", "items")
_LOGPROBS = "token_logprobs"


@dataclass(frozen=True, eq=False)
class CodeIndex:
    """Codes and their postings. Immutable (arrays are read-only); safe to share between threads.

    Construct with ``build`` or ``load``; the constructor trusts its arguments.
    """

    table: CodeTable
    offsets: np.ndarray  # (C + 1,) int64 CSR into items; every code has at least one item
    items: np.ndarray  # (P,) int64 item labels, ascending within a code
    token_logprobs: np.ndarray  # (P, 7) float32 product-side log-prob per code token, 0 at PAD

    def __post_init__(self) -> None:
        for array in (self.offsets, self.items, self.token_logprobs):
            array.setflags(write=False)

    @property
    def n_codes(self) -> int:
        return self.table.n_codes

    @property
    def n_postings(self) -> int:
        return len(self.items)

    @classmethod
    def build(cls, codes: np.ndarray, labels: np.ndarray, token_logprobs: np.ndarray) -> CodeIndex:
        """From postings: each one's code token row ``(P, 7)``, item label ``(P,)`` and
        product-side token log-probs ``(P, 7)``. The table is the distinct codes of the
        postings. Raises ``ValueError`` for rows that are not codes, a negative label, a
        (code, item) pair given twice, or log-probs not finite and <= 0 at the code's tokens
        (their PAD positions are set to 0)."""
        codes = np.asarray(codes)
        labels = np.asarray(labels, dtype=np.int64)
        logprobs = np.asarray(token_logprobs, dtype=np.float32)
        if (problem := code_rows_problem(codes)) is not None:
            raise ValueError(problem)
        if labels.shape != (len(codes),) or logprobs.shape != codes.shape:
            raise ValueError(
                f"{len(codes)} posting codes, labels of shape {labels.shape}, log-probs {logprobs.shape}"
            )
        if len(labels) and labels.min() < 0:
            raise ValueError("item labels must be >= 0")
        logprobs = np.where(codes != PAD, logprobs, np.float32(0.0))
        if (problem := _logprob_problem(codes, logprobs)) is not None:
            raise ValueError(problem)
        table = CodeTable.build(codes)
        row = np.searchsorted(table.keys, code_keys(codes))
        order = np.lexsort((labels, row))
        row, labels, logprobs = row[order], labels[order], logprobs[order]
        if np.any((np.diff(row) == 0) & (np.diff(labels) == 0)):
            raise ValueError("a (code, item) posting is given twice")
        offsets = np.searchsorted(row, np.arange(table.n_codes + 1)).astype(np.int64)
        return cls(table, offsets, labels, np.ascontiguousarray(logprobs))

    def save(self, directory: Path) -> None:
        with (directory / GRAM_INDEX_FILE).open("wb") as f:
            np.savez(
                f,
                format=np.int64(GRAM_INDEX_FORMAT),
                codes=self.table.codes,
                offsets=self.offsets,
                items=self.items,
                token_logprobs=self.token_logprobs,
            )

    @classmethod
    def load(cls, directory: Path, vocab_size: int, n_items: int) -> CodeIndex:
        """The index in ``directory``, checked against the code vocabulary and the catalog.

        Raises ``OSError`` (``FileNotFoundError``) for a missing file and ``ValueError`` whose
        message starts with the file's name for anything else: an unreadable file, a missing
        array, another format, rows that are not codes, tokens outside the vocabulary, codes
        unsorted or repeated, offsets that are not a CSR index over the postings (or leave a
        code without items), labels outside the catalog or not ascending within a code,
        log-probs of another shape, not finite, above 0 or non-zero at PAD.
        """
        path = directory / GRAM_INDEX_FILE
        data = read_arrays(path, _INT_KEYS)  # the integer arrays, with the file's own checks
        try:
            with np.load(path, allow_pickle=False) as archive:
                logprobs = archive[_LOGPROBS]
        except KeyError as exc:
            raise ValueError(f"{GRAM_INDEX_FILE}: missing array {_LOGPROBS!r}") from exc
        except (OSError, ValueError) as exc:
            raise ValueError(f"{GRAM_INDEX_FILE}: unreadable: {exc}") from exc
        if (problem := _index_problem(data, logprobs, vocab_size, n_items)) is not None:
            raise ValueError(f"{GRAM_INDEX_FILE}: {problem}")
        return cls(
            CodeTable(data["codes"].astype(np.int64)),
            data["offsets"].astype(np.int64),
            data["items"].astype(np.int64),
            np.ascontiguousarray(logprobs, dtype=np.float32),
        )

    def postings(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every posting of code ``rows``, in that order: (position in ``rows`` (K,) int64, item
        labels (K,) int64, product token log-probs (K, 7) float32). Raises ``ValueError`` for a
        row outside the table."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        if len(rows) and (rows.min() < 0 or rows.max() >= self.n_codes):
            raise ValueError(f"code rows outside the index's {self.n_codes} codes")
        which, element = gather_rows(self.offsets, rows)
        return which.astype(np.int64), self.items[element], self.token_logprobs[element]

    def items_per_code(self) -> dict[str, float]:
        """Codes, postings, distinct items and the items-per-code distribution (mean, p50, p90,
        p99, max), for the manifest and the benchmark."""
        sizes = np.diff(self.offsets)
        if not len(sizes):
            sizes = np.zeros(1, dtype=np.int64)
        return {
            "codes": float(self.n_codes),
            "postings": float(self.n_postings),
            "items": float(len(np.unique(self.items))),
            "mean": float(sizes.mean()),
            "p50": float(np.percentile(sizes, 50)),
            "p90": float(np.percentile(sizes, 90)),
            "p99": float(np.percentile(sizes, 99)),
            "max": float(sizes.max()),
        }


def _logprob_problem(codes: np.ndarray, logprobs: np.ndarray) -> str | None:
    real = codes != PAD
    if not np.all(np.isfinite(logprobs)):
        return "token log-probs are not all finite"
    if np.any(logprobs[real] > 0):
        return "token log-probs above 0"
    if np.any(logprobs[~real] != 0):
        return "token log-probs non-zero at PAD positions"
    return None


def _index_problem(
    data: dict[str, np.ndarray], logprobs: np.ndarray, vocab_size: int, n_items: int
) -> str | None:
    codes, offsets, items = data["codes"], data["offsets"], data["items"]
    if data["format"].shape != () or int(data["format"]) != GRAM_INDEX_FORMAT:
        return f"format {data['format']}, this build reads {GRAM_INDEX_FORMAT}"
    if (problem := code_rows_problem(codes)) is not None:
        return problem
    if len(codes) and codes.max() >= vocab_size:
        return f"code tokens outside the vocabulary of {vocab_size}"
    keys = code_keys(codes)
    unique = np.unique(keys)
    if len(unique) < len(keys):
        return "codes repeat a code"
    if not np.array_equal(unique, keys):
        return "codes are not lexicographically sorted"
    if offsets.shape != (len(codes) + 1,):
        return f"offsets of shape {offsets.shape} for {len(codes)} codes"
    if items.ndim != 1:
        return f"items must be 1-D, found shape {items.shape}"
    if offsets[0] != 0 or offsets[-1] != len(items):
        return f"offsets run {offsets[0]}..{offsets[-1]}, items has {len(items)}"
    if np.any(np.diff(offsets) <= 0):
        return "offsets are not increasing (a code without items)"
    if len(items) and (items.min() < 0 or items.max() >= n_items):
        return f"item labels outside the catalog's {n_items} items"
    starts = np.zeros(len(items), dtype=bool)  # first posting of each code
    starts[offsets[:-1]] = True
    if np.any((np.diff(items) <= 0) & ~starts[1:]):
        return "item labels are not ascending (or repeat) within a code"
    if logprobs.dtype.kind != "f":
        return f"{_LOGPROBS} must be floats, found {logprobs.dtype}"
    if logprobs.shape != (len(items), MAX_CODE_TOKENS):
        return f"{_LOGPROBS} of shape {logprobs.shape} for {len(items)} postings"
    posting_code = codes[np.repeat(np.arange(len(codes)), np.diff(offsets))]  # (P, 7)
    return _logprob_problem(posting_code, logprobs)
