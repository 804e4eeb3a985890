"""A bundle's search side loaded for serving: the shared tokenizer and the text indexes.

``load_text_indexes`` validates what the manifest's ``text`` section promises (files listed,
readable, consistent with the catalog) and raises ``BundleError`` otherwise, so a bundle with a
corrupt tokenizer or text index is refused at load and the serving version stays.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from index.bm25 import BM25_FILES, Bm25Index
from index.bundle import BundleError, Manifest, TextSpec
from index.dense import DENSE_FILES, DenseText
from index.sid_search import SID_FILES, SidSearch
from index.tokenizer import TOKENIZER_FILE, TextTokenizer


@dataclass(frozen=True)
class TextIndexes:
    """Immutable; every member is safe to use from many threads."""

    spec: TextSpec
    tokenizer: TextTokenizer
    bm25: Bm25Index | None = None  # the bm25 channel's index (spec.bm25)
    dense: DenseText | None = None  # the dense channel's encoder and index (spec.dense)
    sid: SidSearch | None = None  # the sid channel's generator, trie and table (spec.sid)


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
    bm25 = _load_bm25(directory, manifest, spec)
    dense = _load_dense(directory, manifest, spec)
    return TextIndexes(spec, tokenizer, bm25=bm25, dense=dense, sid=_load_sid(directory, manifest, spec))


def _load_bm25(directory: Path, manifest: Manifest, spec: TextSpec) -> Bm25Index | None:
    if spec.bm25 is None:
        return None
    _require_files(directory, manifest, "bm25", BM25_FILES)
    try:
        return Bm25Index.load(directory, manifest.item_count, spec.bm25)
    except (OSError, ValueError) as exc:  # the message starts with the file's name
        raise BundleError(f"{directory}: unreadable bm25 index: {exc}") from exc


def _load_dense(directory: Path, manifest: Manifest, spec: TextSpec) -> DenseText | None:
    if spec.dense is None:
        return None
    _require_files(directory, manifest, "dense", DENSE_FILES)
    try:
        return DenseText.load(directory, spec.dense, manifest.item_count, spec.max_query_tokens)
    except (OSError, RuntimeError, ValueError) as exc:
        raise BundleError(f"{directory}: dense channel refused: {exc}") from exc


def _load_sid(directory: Path, manifest: Manifest, spec: TextSpec) -> SidSearch | None:
    if spec.sid is None:
        return None
    _require_files(directory, manifest, "sid", SID_FILES)
    try:
        return SidSearch.load(directory, spec.sid, manifest.item_count)
    except (OSError, RuntimeError, ValueError) as exc:
        raise BundleError(f"{directory}: sid channel refused: {exc}") from exc


def _require_files(directory: Path, manifest: Manifest, channel: str, names: Sequence[str]) -> None:
    missing = [name for name in names if name not in manifest.files]
    if missing:
        raise BundleError(
            f"{directory}: manifest configures the {channel} channel but does not list {', '.join(missing)}"
        )
