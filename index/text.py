"""Search text as every part of the product sees it: one normalisation for queries and titles.

A query goes through ``normalize_text`` wherever it enters (the API, the event log, training
data), so the same words always reach the tokenizer and the models in the same form: Unicode
NFKC (full-width letters, ligatures and compatibility forms folded), lower case, control and
format characters dropped, every run of whitespace one space, no space at either end.
"""

from __future__ import annotations

import re
import unicodedata

MAX_QUERY_CHARS = 512  # after normalisation; longer queries are refused, never truncated
_SPACE = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """``text`` folded to the form the tokenizer and the text indexes were built on."""
    folded = unicodedata.normalize("NFKC", text).lower()
    # Cc (control) and Cf (format: zero-width joiners, direction marks) carry no search meaning;
    # whitespace controls (\t, \n) become spaces first so words do not run together.
    kept = "".join(
        " " if ch.isspace() else ch
        for ch in folded
        if ch.isspace() or unicodedata.category(ch) not in {"Cc", "Cf"}
    )
    return _SPACE.sub(" ", kept).strip()
