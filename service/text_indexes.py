"""A bundle's search side loaded for serving: the shared tokenizer and the text indexes.

``load_text_indexes`` validates what the manifest's ``text`` section promises (files listed,
readable, consistent with the catalog) and raises ``BundleError`` otherwise, so a bundle with a
corrupt tokenizer or text index is refused at load and the serving version stays.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from index.bundle import BundleError, Manifest, TextSpec
from index.tokenizer import TOKENIZER_FILE, TextTokenizer


@dataclass(frozen=True)
class TextIndexes:
    """Immutable; every member is safe to use from many threads."""

    spec: TextSpec
    tokenizer: TextTokenizer


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
    return TextIndexes(spec, tokenizer)
