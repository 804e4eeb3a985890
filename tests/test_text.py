"""index.text: the one normalisation every query and title goes through."""

from __future__ import annotations

import re
import sys

import pytest

from index.text import MAX_QUERY_CHARS, normalize_text
from service.schemas import BLANK_CHARS

CASES = {
    "full-width letters and digits fold (NFKC)": ("\uff33\uff28\uff2f\uff25\uff33 \uff14\uff12", "shoes 42"),
    "ligatures fold": ("ﬁne", "fine"),
    "upper case is lowered": ("Red Shoes", "red shoes"),
    "control characters are dropped": ("red\x00\x07shoes\x7f", "redshoes"),
    "zero-width and direction marks are dropped": ("red\u200bsh\u200does\u200e\ufeff", "redshoes"),
    "soft hyphen is dropped": ("sneak\u00aders", "sneakers"),
    "whitespace runs collapse": ("red    shoes", "red shoes"),
    "tabs and newlines become spaces": ("red\tshoes\nsize\r\n42", "red shoes size 42"),
    "no-break and ideographic spaces are spaces": ("red\u00a0shoes\u3000now", "red shoes now"),
    "both ends are stripped": ("  \t red shoes \n ", "red shoes"),
    "blank text is empty": (" \t\n\u200b\u2060", ""),
    "empty stays empty": ("", ""),
    "letters of other scripts are kept": ("Café Ünïcode 東京", "café ünïcode 東京"),
}


@pytest.mark.parametrize(("text", "expected"), CASES.values(), ids=CASES.keys())
def test_normalize_text(text: str, expected: str) -> None:
    assert normalize_text(text) == expected


def test_normalisation_is_idempotent() -> None:
    for text, _ in CASES.values():
        once = normalize_text(text)
        assert normalize_text(once) == once


def test_nfkc_can_lengthen_a_query() -> None:
    """Why the API checks the length after normalisation as well as before."""
    assert len(normalize_text("ǆ" * (MAX_QUERY_CHARS // 2 + 1))) == MAX_QUERY_CHARS + 2


def test_the_schemas_blank_characters_are_exactly_what_normalisation_drops() -> None:
    """The OpenAPI pattern of a query (one character outside ``BLANK_CHARS``) must refuse exactly
    the strings the validator refuses as empty, on this Python's Unicode tables."""
    blank = re.compile(f"[{BLANK_CHARS}]")
    disagree = [
        f"U+{code:04X}"
        for code in range(sys.maxunicode + 1)
        if not 0xD800 <= code <= 0xDFFF  # lone surrogates are not characters
        and (normalize_text(chr(code)) == "") != bool(blank.fullmatch(chr(code)))
    ]
    assert disagree == []
