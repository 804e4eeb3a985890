"""A bundle's search side loaded for serving: the shared tokenizer and the text indexes.

``load_text_indexes`` validates what the manifest's ``text`` section promises (files listed,
readable, consistent with the catalog) and raises ``BundleError`` otherwise, so a bundle with a
corrupt tokenizer or text index is refused at load and the serving version stays.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from index.bm25 import BM25_FILES, Bm25Index
from index.bundle import BundleError, Manifest, TextSpec
from index.dense import DENSE_FILES, DenseText
from index.gram_search import GRAM_FILES, GramSearch
from index.sid_search import SID_FILES, SidSearch
from index.tokenizer import TOKENIZER_FILE, TextTokenizer

T = TypeVar("T")


@dataclass(frozen=True)
class TextIndexes:
    """Immutable; every member is safe to use from many threads."""

    spec: TextSpec
    tokenizer: TextTokenizer
    bm25: Bm25Index | None = None  # the bm25 channel's index (spec.bm25)
    dense: DenseText | None = None  # the dense channel's encoder and index (spec.dense)
    sid: SidSearch | None = None  # the sid channel's generator, trie and table (spec.sid)
    gram: GramSearch | None = None  # the gram channel's generator, code index and scorer (spec.gram)


def load_text_indexes(directory: Path, manifest: Manifest) -> TextIndexes | None:
    """None when the manifest has no text section. Call after the checksums were verified."""
    spec = manifest.text
    if spec is None:
        return None
    if TOKENIZER_FILE not in manifest.files:
        raise BundleError(
            f"{directory}: manifest configures text channels but does not list {TOKENIZER_FILE}"
        )
    try:
        tokenizer = TextTokenizer.load(directory / TOKENIZER_FILE)
    except (OSError, ValueError) as exc:
        raise BundleError(f"{directory}: unreadable {TOKENIZER_FILE}: {exc}") from exc
    n_items = manifest.item_count
    bm25, dense, sid, gram = None, None, None, None
    if (bm25_params := spec.bm25) is not None:
        bm25 = _load_channel(
            directory, manifest, "bm25", BM25_FILES, "unreadable bm25 index",
            lambda: Bm25Index.load(directory, n_items, bm25_params),
        )  # fmt: skip
    if (dense_spec := spec.dense) is not None:
        dense = _load_channel(
            directory, manifest, "dense", DENSE_FILES, "dense channel refused",
            lambda: DenseText.load(directory, dense_spec, n_items, spec.max_query_tokens),
        )  # fmt: skip
    if (sid_spec := spec.sid) is not None:
        sid = _load_channel(
            directory, manifest, "sid", SID_FILES, "sid channel refused",
            lambda: SidSearch.load(directory, sid_spec, n_items),
        )  # fmt: skip
    if (gram_spec := spec.gram) is not None:
        gram = _load_channel(
            directory, manifest, "gram", GRAM_FILES, "gram channel refused",
            lambda: GramSearch.load(directory, gram_spec, n_items),
        )  # fmt: skip
    return TextIndexes(spec, tokenizer, bm25=bm25, dense=dense, sid=sid, gram=gram)


def _load_channel(
    directory: Path,
    manifest: Manifest,
    channel: str,
    names: Sequence[str],
    refusal: str,
    load: Callable[[], T],
) -> T:
    """``load()`` the channel's files once the manifest is seen to list them all; any reader
    error (their messages start with the file's name) becomes a ``BundleError``."""
    missing = [name for name in names if name not in manifest.files]
    if missing:
        raise BundleError(
            f"{directory}: manifest configures the {channel} channel but does not list {', '.join(missing)}"
        )
    try:
        return load()
    except (OSError, RuntimeError, ValueError) as exc:  # hnswlib and ONNX Runtime raise RuntimeError
        raise BundleError(f"{directory}: {refusal}: {exc}") from exc
