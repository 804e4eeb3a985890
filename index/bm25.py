"""BM25 over the catalog's item texts (title + attributes), for the ``bm25`` search channel.

Terms are the word pieces of the bundle's shared tokenizer (``index.tokenizer``), so a query
word matches an item word through shared pieces where the vocabulary splits both (rare and
compound words); a frequent word is one piece, and a typo of it does not match.
Scoring is the ``bm25s`` library's (its numpy backend: an eager score matrix, terms by items, in
CSC form); this module adds what serving needs around it: labels as document ids, exclusions,
only matching items, a deterministic order, and validation of the files a bundle carries.

Files (flat, in the bundle directory): ``BM25_FILES``. The non-occurrence scores that only the
``bm25l`` and ``bm25+`` variants use are always written (zeros for the others), so every bundle
with a BM25 index carries the same file names.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import bm25s
import numpy as np

from index.bundle import Bm25Params
from index.fusion import EMPTY, Candidates
from index.tokenizer import UNK, TextTokenizer

BM25_DATA = "bm25.data.npy"  # per (term, item) score, CSC order
BM25_INDICES = "bm25.indices.npy"  # the item label of each score
BM25_INDPTR = "bm25.indptr.npy"  # (terms + 1,) where each term's scores start
BM25_VOCAB = "bm25.vocab.json"  # word piece → term column
BM25_PARAMS = "bm25.params.json"  # bm25s's parameters, with the document count
BM25_NONOCCURRENCE = "bm25.nonoccurrence.npy"  # (terms,) score of a term an item lacks
BM25_FILES = (BM25_DATA, BM25_INDICES, BM25_INDPTR, BM25_VOCAB, BM25_PARAMS, BM25_NONOCCURRENCE)

# bm25s's save/load keyword for each file (its defaults name files for a directory of their own)
_FILE_NAMES = {
    "data_name": BM25_DATA,
    "indices_name": BM25_INDICES,
    "indptr_name": BM25_INDPTR,
    "vocab_name": BM25_VOCAB,
    "params_name": BM25_PARAMS,
    "nnoc_name": BM25_NONOCCURRENCE,
}


class Bm25Index:
    """BM25 scores of word pieces in item texts; document i is catalog label i.

    Immutable once built or loaded. ``search`` is thread-safe: bm25s's ``get_scores_from_ids``
    (numpy backend) only reads the index and allocates its result per call.
    """

    def __init__(self, bm25: bm25s.BM25, n_items: int) -> None:
        self._bm25 = bm25
        self._n_items = n_items
        self._terms: dict[str, int] = bm25.vocab_dict
        self._indptr: np.ndarray = bm25.scores["indptr"]
        self._indices: np.ndarray = bm25.scores["indices"]

    @property
    def n_items(self) -> int:
        return self._n_items

    @property
    def n_terms(self) -> int:
        return len(self._terms)

    def search(self, query: str, tokenizer: TextTokenizer, k: int, excluded: np.ndarray) -> Candidates:
        """The ``k`` best items matching at least one piece of ``query`` with a positive score,
        best first, ties by label; never a label in ``excluded`` (sorted or not). EMPTY for a
        query with no piece in the index (empty, or only unknown words)."""
        terms = [self._terms[p] for p in tokenizer.pieces(query) if p != UNK and p in self._terms]
        if not terms or k <= 0:
            return EMPTY
        excluded = excluded[(excluded >= 0) & (excluded < self._n_items)]
        mask = None
        if len(excluded):
            mask = np.ones(self._n_items, dtype=np.float32)
            mask[excluded] = 0.0  # bm25s multiplies each item's score by its weight
        scores = self._bm25.get_scores_from_ids(terms, weight_mask=mask)  # (n_items,)
        # Only items holding a query piece: bm25l/bm25+ give every other item a positive score too.
        matched = np.zeros(self._n_items, dtype=bool)
        for term in set(terms):
            matched[self._indices[self._indptr[term] : self._indptr[term + 1]]] = True
        labels = np.flatnonzero(matched & (scores > 0))
        found = scores[labels]
        if len(labels) > k:  # keep every label tied with the k-th, so the sort breaks ties by label
            keep = found >= -np.partition(-found, k - 1)[k - 1]
            labels, found = labels[keep], found[keep]
        order = np.lexsort((labels, -found))[:k]
        return labels[order], found[order].astype(np.float32)

    def save(self, directory: Path) -> None:
        """Write ``BM25_FILES`` into ``directory`` (a bundle being staged)."""
        self._bm25.save(directory, **_FILE_NAMES, show_progress=False)
        if self._bm25.nonoccurrence_array is None:
            np.save(directory / BM25_NONOCCURRENCE, np.zeros(self.n_terms, dtype=np.float32))

    @classmethod
    def load(cls, directory: Path, n_items: int, params: Bm25Params) -> Bm25Index:
        """The index in ``directory``, checked against the catalog and the manifest's ``params``.

        Raises ``OSError`` for a missing file and ``ValueError`` for one that is unreadable or
        inconsistent (another catalog, other parameters, arrays that do not fit together); the
        message starts with the file's name.
        """
        for name in BM25_FILES:
            if not (directory / name).is_file():
                raise FileNotFoundError(f"{name}: missing")
        saved = _read_json(directory / BM25_PARAMS)
        _check_params(saved, n_items, params)
        terms = _read_json(directory / BM25_VOCAB)
        if not isinstance(terms, dict) or sorted(terms.values()) != list(range(len(terms))):
            raise ValueError(f"{BM25_VOCAB}: not a map of word pieces to term columns 0..n-1")
        for name in (BM25_DATA, BM25_INDICES, BM25_INDPTR, BM25_NONOCCURRENCE):
            _check_npy(directory / name)
        try:
            bm25 = bm25s.BM25.load(directory, **_FILE_NAMES, show_progress=False)
        except (TypeError, KeyError) as exc:  # bm25s passes the saved parameters on unchecked
            raise ValueError(f"{BM25_PARAMS}: {exc}") from exc
        _check_arrays(bm25, n_items, len(terms), np.load(directory / BM25_NONOCCURRENCE, allow_pickle=False))
        return cls(bm25, n_items)


def build_bm25(item_texts: Sequence[str], tokenizer: TextTokenizer, params: Bm25Params) -> Bm25Index:
    """The index of ``item_texts`` (one per catalog label, in label order). Raises
    ``ValueError`` when no text has a piece the tokenizer knows (nothing to search)."""
    corpus = [[p for p in tokenizer.pieces(text) if p != UNK] for text in item_texts]
    if not any(corpus):
        raise ValueError("no item text has a word piece the tokenizer knows")
    bm25 = bm25s.BM25(k1=params.k1, b=params.b, method=params.method, backend="numpy")
    bm25.index(corpus, create_empty_token=False, show_progress=False)
    return Bm25Index(bm25, len(item_texts))


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path.name}: not JSON: {exc}") from exc


def _check_params(saved: Any, n_items: int, params: Bm25Params) -> None:
    if not isinstance(saved, dict):
        raise ValueError(f"{BM25_PARAMS}: not a JSON object")
    if saved.get("num_docs") != n_items:
        raise ValueError(f"{BM25_PARAMS}: index of {saved.get('num_docs')} items, the catalog has {n_items}")
    built = {"k1": saved.get("k1"), "b": saved.get("b"), "method": saved.get("method")}
    if built != {"k1": params.k1, "b": params.b, "method": params.method}:
        raise ValueError(f"{BM25_PARAMS}: index built with {built}, the manifest says {params.model_dump()}")
    if saved.get("backend") != "numpy":  # the numba backend needs a package the service lacks
        raise ValueError(f"{BM25_PARAMS}: backend {saved.get('backend')!r}, this build reads 'numpy'")


def _check_npy(path: Path) -> None:
    """A 1-D array whose header parses and whose data fills the file exactly (no pickles)."""
    readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    try:
        with path.open("rb") as f:
            version = np.lib.format.read_magic(f)
            if version not in readers:
                raise ValueError(f"unsupported .npy version {version}")
            shape, _, dtype = readers[version](f)
            start = f.tell()
    except (ValueError, EOFError, SyntaxError) as exc:  # numpy parses the header dict literally
        raise ValueError(f"{path.name}: not a .npy array: {exc}") from exc
    if len(shape) != 1 or dtype.hasobject or dtype.kind not in "iuf":
        raise ValueError(f"{path.name}: expected a 1-D numeric array, found {dtype} {shape}")
    if path.stat().st_size != start + shape[0] * dtype.itemsize:
        raise ValueError(f"{path.name}: {path.stat().st_size} bytes, its header promises {shape[0]} {dtype}")


def _check_arrays(bm25: bm25s.BM25, n_items: int, n_terms: int, nonoccurrence: np.ndarray) -> None:
    data, indices, indptr = bm25.scores["data"], bm25.scores["indices"], bm25.scores["indptr"]
    if indptr.dtype.kind not in "iu" or indices.dtype.kind not in "iu" or data.dtype.kind != "f":
        raise ValueError(f"{BM25_INDPTR}, {BM25_INDICES}, {BM25_DATA}: expected int, int, float arrays")
    if len(indptr) != n_terms + 1 or indptr[0] != 0 or np.any(np.diff(indptr) < 0):
        raise ValueError(f"{BM25_INDPTR}: not {n_terms + 1} non-decreasing offsets from 0")
    if not int(indptr[-1]) == len(indices) == len(data):
        counts = f"{len(indices)} and {len(data)} entries, {BM25_INDPTR} says {indptr[-1]}"
        raise ValueError(f"{BM25_INDICES}, {BM25_DATA}: {counts}")
    if len(indices) and (int(indices.min()) < 0 or int(indices.max()) >= n_items):
        raise ValueError(f"{BM25_INDICES}: labels outside the catalog of {n_items} items")
    if not np.all(np.isfinite(data)):
        raise ValueError(f"{BM25_DATA}: scores are not all finite")
    if len(nonoccurrence) != n_terms or not np.all(np.isfinite(nonoccurrence)):
        raise ValueError(f"{BM25_NONOCCURRENCE}: not {n_terms} finite scores")
