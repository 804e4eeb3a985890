"""GRAM's shared text codes: ordered attribute-value combinations of a query or a product, and the
initial code targets built across the click link.

A code lists 1 to ``MAX_CODE_ATTRIBUTES`` (attribute, value) pairs in ``CODE_TYPES`` order
(product type, brand, series, audience, style, material, colour, size, season; marketing never).
Granularity (arXiv 2504.01403): coarse = 1-2 attributes ("sneakers | Nike"), medium = 3, fine =
more. A query has one code, all of its attributes; a product has the ladder of prefixes of its
attributes, one code per granularity step, so a coarse query and a fine one can both meet it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from index.gram_vocab import MAX_CODE_ATTRIBUTES, Code
from model_export.gram.lexicon import CODE_TYPES

GRANULARITIES = ("coarse", "medium", "fine")

__all__ = [
    "GRANULARITIES",
    "MAX_CODE_ATTRIBUTES",
    "Code",
    "click_link_targets",
    "granularity",
    "product_codes",
    "query_code",
]


def granularity(code: Code) -> str:
    """ "coarse" (1-2 attributes), "medium" (3) or "fine" (4+); ``ValueError`` for an empty code."""
    if not code:
        raise ValueError("an empty code has no granularity")
    return "coarse" if len(code) <= 2 else "medium" if len(code) == 3 else "fine"


def _ordered(attrs: Mapping[str, str]) -> Code:
    """The code attributes of ``attrs`` with a value, in code order (others, marketing among
    them, left out)."""
    return tuple((a, attrs[a]) for a in CODE_TYPES if attrs.get(a))


def query_code(attrs: Mapping[str, str]) -> Code | None:
    """All of the query's attributes in code order, the first ``MAX_CODE_ATTRIBUTES`` of them;
    None for a query without any."""
    code = _ordered(attrs)[:MAX_CODE_ATTRIBUTES]
    return code or None


def product_codes(attrs: Mapping[str, str]) -> list[Code]:
    """The ladder of prefixes of the product's attributes in code order, lengths 1 to
    min(``MAX_CODE_ATTRIBUTES``, n): coarse first, fine last; [] without attributes."""
    code = _ordered(attrs)
    return [code[:n] for n in range(1, min(MAX_CODE_ATTRIBUTES, len(code)) + 1)]


def click_link_targets(
    query_attrs: Mapping[str, Mapping[str, str]],
    item_attrs: Sequence[Mapping[str, str]],
    clicks: Sequence[tuple[str, int]],
) -> tuple[dict[str, set[Code]], dict[int, set[Code]]]:
    """Initial code targets shared across the click link: per query (a key of ``query_attrs``
    or a clicking query), its own code plus the product codes of every item it clicked; per item
    label (an index into ``item_attrs``), its product codes plus the codes of every query that
    clicked it. Every item with attributes gets its own codes even if never clicked; a query
    or item left with no code is absent. ``clicks`` are (query, item label) pairs, repeats
    harmless. Raises ``ValueError`` for a label outside ``item_attrs``."""
    own_query = {q: query_code(attrs) for q, attrs in query_attrs.items()}
    own_item = [product_codes(attrs) for attrs in item_attrs]
    queries: dict[str, set[Code]] = {q: {code} for q, code in own_query.items() if code is not None}
    items: dict[int, set[Code]] = {label: set(codes) for label, codes in enumerate(own_item) if codes}
    for query, label in clicks:
        if not 0 <= label < len(item_attrs):
            raise ValueError(f"click on item label {label}, outside the {len(item_attrs)} items")
        if own_item[label]:
            queries.setdefault(query, set()).update(own_item[label])
        code = own_query.get(query)
        if code is not None:
            items.setdefault(label, set()).add(code)
    return queries, items
