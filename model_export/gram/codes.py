"""GRAM's shared text codes: ordered attribute-value combinations of a query or a product, and the
initial code targets built across the click link.

A code lists 1 to ``MAX_CODE_ATTRIBUTES`` (attribute, value) pairs in ``CODE_TYPES`` order
(product type, brand, series, audience, style, material, colour, size, season; marketing never).
Granularity (arXiv 2504.01403): coarse = 1-2 attributes ("sneakers | Nike"), medium = 3, fine =
more. A query has one code, all of its attributes, and backs off to its head (the product type)
alone and with each one of its other attributes. A product has the combinations a query can ask
for: its head alone, with one and with two of its other attributes, and all of them (fine), so
that "navy hoodie" and "mens navy hoodie" both meet a men's navy hoodie whatever its brand.
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
    "query_backoffs",
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


def query_backoffs(code: Code) -> list[Code]:
    """The coarser codes a query also accepts: its head alone and with each one of its other
    attributes (none for a one-attribute code)."""
    head, rest = code[:1], code[1:]
    if not rest:
        return []
    return [head, *((*head, pair) for pair in rest)] if len(rest) > 1 else [head]


def product_codes(attrs: Mapping[str, str]) -> list[Code]:
    """The product's codes, coarse first: its head (the first attribute in code order, the
    product type when it has one) alone, with each one and each two of its other attributes,
    then all of them (the first ``MAX_CODE_ATTRIBUTES``); [] without attributes."""
    code = _ordered(attrs)
    if not code:
        return []
    head, rest = code[:1], code[1:]
    codes = [head]
    codes += [(*head, a) for a in rest]
    codes += [(*head, a, b) for i, a in enumerate(rest) for b in rest[i + 1 :]]
    if len(code) > 3:
        codes.append(code[:MAX_CODE_ATTRIBUTES])
    return codes


def _within(code: Code, query: Code) -> bool:
    """Whether ``code`` names only the product type and attribute types ``query`` names."""
    asked = {a for a, _ in query} | {"product_type"}
    return all(a in asked for a, _ in code)


def click_link_targets(
    query_attrs: Mapping[str, Mapping[str, str]],
    item_attrs: Sequence[Mapping[str, str]],
    clicks: Sequence[tuple[str, int]],
) -> tuple[dict[str, set[Code]], dict[int, set[Code]]]:
    """Initial code targets shared across the click link: per query (a key of ``query_attrs``
    or a clicking query), its own code and its backoffs plus the codes of every item it clicked
    that name no attribute type the query does not (the product type always allowed: a query
    whose words the tagger missed still learns its clicked products' type); per item label (an
    index into ``item_attrs``), its product codes plus the codes of every query that clicked it.
    Every item with attributes gets its own codes even if never clicked; a query or item left
    with no code is absent. ``clicks`` are (query, item label) pairs, repeats harmless. Raises
    ``ValueError`` for a label outside ``item_attrs``."""
    own_query = {q: query_code(attrs) for q, attrs in query_attrs.items()}
    own_item = [product_codes(attrs) for attrs in item_attrs]
    queries: dict[str, set[Code]] = {
        q: {code, *query_backoffs(code)} for q, code in own_query.items() if code is not None
    }
    items: dict[int, set[Code]] = {label: set(codes) for label, codes in enumerate(own_item) if codes}
    for query, label in clicks:
        if not 0 <= label < len(item_attrs):
            raise ValueError(f"click on item label {label}, outside the {len(item_attrs)} items")
        code = own_query.get(query)
        shared = [c for c in own_item[label] if _within(c, code or ())]
        if shared:
            queries.setdefault(query, set()).update(shared)
        if code is not None:
            items.setdefault(label, set()).add(code)
    return queries, items
