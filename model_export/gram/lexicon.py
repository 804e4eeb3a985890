"""The attribute dictionary of the GRAM channel: the surfaces (ways titles and queries write an
attribute value) of every canonical value, the normaliser from a surface to its value, and the
dictionary tagging that labels the spans the learned tagger (``tagger``) trains on.

Surfaces are kept in the form ``words`` gives them (lower-case word tokens joined by one space),
so "Men's", "MEN'S" and "men's" are one surface.  A surface can mean several values ("navy" is
the value navy and, for tech colours, a synonym of blue; "pro" is a series and a style): every
*sense* is kept, preferred first — a sense whose value is the surface itself, then attribute
order, then value — and an item's own values (``allowed``) or the values seen beside a product
type (``among``) pick between them where they are known.

``tagger.title_spans`` and ``tagger.query_spans`` label the tagger's training rows with
``dictionary_spans``.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import pandas as pd

from model_export.search_world import read_table, tokens

# In code order (a code lists its values in this order); ``marketing`` is tagged so the tagger
# learns to leave it out, and never enters a code.
ATTRIBUTE_TYPES = (
    "product_type", "brand", "series", "audience", "style", "material", "colour", "size", "season",
    "marketing",
)  # fmt: skip
CODE_TYPES = tuple(a for a in ATTRIBUTE_TYPES if a != "marketing")
LEXICON_FILE = "lexicon.csv"
LEXICON_COLUMNS = ("attribute", "value", "surface")
# Catalog placeholders that say "no value" (the Instacart catalog writes "unknown" for brand and colour).
MISSING_VALUES = frozenset({"", "unknown"})
CLOSE_MATCH_CUTOFF = 0.8  # difflib ratio: one typo in a word of 8+ letters still matches

Sense = tuple[str, str]  # (attribute, canonical value)


def words(text: str) -> list[str]:
    """The normalised word tokens the tagger reads (``index.text.normalize_text``, then words
    with inner ' . / - kept: "Men's T-Shirt 0.5L" -> ["men's", "t-shirt", "0.5l"])."""
    return tokens(text)


def surface_key(text: str) -> str:
    """``text`` as a lexicon surface: its ``words`` joined by one space."""
    return " ".join(words(text))


@dataclass(frozen=True)
class Span:
    start: int  # first word
    end: int  # one past the last word
    attribute: str
    surface: str  # the span's words joined by one space


@dataclass(frozen=True)
class Lexicon:
    """Rows (attribute, canonical value, surface), sorted and unique. Immutable; the derived
    tables are built on first use."""

    rows: tuple[tuple[str, str, str], ...]

    @classmethod
    def from_rows(cls, rows: Iterable[tuple[str, str, str]]) -> Lexicon:
        """Surfaces are brought to ``surface_key`` form; rows with an empty value or surface are
        dropped. Raises ``ValueError`` for an attribute outside ``ATTRIBUTE_TYPES``."""
        kept = set()
        for attribute, value, surface in rows:
            if attribute not in ATTRIBUTE_TYPES:
                raise ValueError(f"unknown attribute type {attribute!r}; known: {', '.join(ATTRIBUTE_TYPES)}")
            key = surface_key(surface)
            if value.strip() and key:
                kept.add((attribute, value, key))
        return cls(tuple(sorted(kept)))

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> Lexicon:
        """From columns ``attribute, value, surface`` (``ValueError`` when one is missing)."""
        missing = [c for c in LEXICON_COLUMNS if c not in frame.columns]
        if missing:
            raise ValueError(f"lexicon is missing columns {missing}")
        columns = [frame[c].fillna("").astype(str).tolist() for c in LEXICON_COLUMNS]
        return cls.from_rows(zip(*columns, strict=True))

    @classmethod
    def read(cls, path: Path) -> Lexicon:
        """``lexicon.csv``; ``OSError`` when absent, ``ValueError`` naming the file when invalid."""
        try:
            return cls.from_frame(read_table(path))
        except ValueError as exc:
            raise ValueError(f"{path.name}: {exc}") from exc

    @classmethod
    def from_catalog(cls, catalog: pd.DataFrame) -> Lexicon:
        """The fallback without a lexicon file: every value of a catalog column named like an
        attribute type is its own (only) surface; ``MISSING_VALUES`` are no values."""
        rows = []
        for attribute in ATTRIBUTE_TYPES:
            if attribute in catalog.columns:
                for value in catalog[attribute].fillna("").astype(str).unique().tolist():
                    if value.strip().lower() not in MISSING_VALUES:
                        rows.append((attribute, value, value))
        return cls.from_rows(rows)

    def merge(self, other: Lexicon) -> Lexicon:
        return Lexicon(tuple(sorted(set(self.rows) | set(other.rows))))

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame(list(self.rows), columns=list(LEXICON_COLUMNS))

    @cached_property
    def senses(self) -> dict[str, tuple[Sense, ...]]:
        """Surface -> every (attribute, value) it can mean, preferred first."""
        found: dict[str, list[Sense]] = {}
        for attribute, value, surface in self.rows:
            found.setdefault(surface, []).append((attribute, value))
        return {
            surface: tuple(sorted(s, key=lambda x: _preference(surface, *x))) for surface, s in found.items()
        }

    @cached_property
    def entries(self) -> dict[str, Sense]:
        """Surface -> its preferred (attribute, value)."""
        return {surface: senses[0] for surface, senses in self.senses.items()}

    @cached_property
    def max_surface_words(self) -> int:
        return max((len(surface.split(" ")) for _, _, surface in self.rows), default=0)

    @cached_property
    def _by_attribute(self) -> dict[str, dict[str, tuple[str, ...]]]:
        """Attribute -> surface -> values, preferred first."""
        out: dict[str, dict[str, tuple[str, ...]]] = {}
        for surface, senses in self.senses.items():
            for attribute, value in senses:
                table = out.setdefault(attribute, {})
                table[surface] = (*table.get(surface, ()), value)
        return out

    def has(self, attribute: str, surface: str) -> bool:
        """Whether ``surface`` is exactly a surface of ``attribute``."""
        return surface_key(surface) in self._by_attribute.get(attribute, {})

    @cached_property
    def _values(self) -> dict[str, frozenset[str]]:
        return {
            a: frozenset(v for values in table.values() for v in values)
            for a, table in self._by_attribute.items()
        }

    def values(self, attribute: str) -> frozenset[str]:
        """Every canonical value of ``attribute``."""
        return self._values.get(attribute, frozenset())

    def normalize(self, attribute: str, surface: str, among: Collection[str] | None = None) -> str:
        """The canonical value ``surface`` names as ``attribute``: an exact surface of that
        attribute, else the closest one (``difflib``, ratio >= ``CLOSE_MATCH_CUTOFF``: typos),
        else the normalised surface itself (a value the lexicon does not know). ``among``
        (e.g. the values seen with the query's product type) picks between senses and close
        matches when it contains one of them. Never raises."""
        key = surface_key(surface)
        table = self._by_attribute.get(attribute, {})
        if key in table:
            return _pick(table[key], among)
        candidates = list(table)
        if among:
            fitting = [s for s in candidates if any(v in among for v in table[s])]
            close = difflib.get_close_matches(key, fitting, n=1, cutoff=CLOSE_MATCH_CUTOFF)
            if close:
                return _pick(table[close[0]], among)
        close = difflib.get_close_matches(key, candidates, n=1, cutoff=CLOSE_MATCH_CUTOFF)
        return _pick(table[close[0]], among) if close else key


def _preference(surface: str, attribute: str, value: str) -> tuple[bool, int, str]:
    return surface_key(value) != surface, ATTRIBUTE_TYPES.index(attribute), value


def _pick(values: tuple[str, ...], among: Collection[str] | None) -> str:
    if among:
        for value in values:
            if value in among:
                return value
    return values[0]


def dictionary_spans(
    sentence: Sequence[str], lexicon: Lexicon, allowed: Mapping[str, Collection[str]] | None = None
) -> list[Span]:
    """Longest match first, left to right: at each word the longest surface starting there wins
    and matching resumes after it. ``allowed`` (attribute -> values) keeps only senses among an
    item's own values (title truth; an attribute absent from it is not tagged); None accepts any
    sense (weak query labels)."""
    spans = []
    start, n = 0, len(sentence)
    while start < n:
        for end in range(min(n, start + lexicon.max_surface_words), start, -1):
            surface = " ".join(sentence[start:end])
            sense = next(
                (
                    (a, v)
                    for a, v in lexicon.senses.get(surface, ())
                    if allowed is None or v in allowed.get(a, ())
                ),
                None,
            )
            if sense is not None:
                spans.append(Span(start, end, sense[0], surface))
                start = end
                break
        else:
            start += 1
    return spans


def read_lexicon(data_dir: Path, catalog: pd.DataFrame) -> Lexicon:
    """``lexicon.csv`` beside ``catalog.csv`` in ``data_dir`` merged with the catalog fallback
    (so every catalog value is its own surface), or the fallback alone when there is no file."""
    fallback = Lexicon.from_catalog(catalog)
    path = data_dir / LEXICON_FILE
    return Lexicon.read(path).merge(fallback) if path.exists() else fallback


def item_attributes(catalog: pd.DataFrame, lexicon: Lexicon) -> dict[str, dict[str, str]]:
    """item_id -> attribute -> canonical value: the catalog columns named like attribute types
    (``MISSING_VALUES`` left out), normalised through ``lexicon``, plus ``series`` when the
    catalog has no such column: the first series surface in the title, matched with the item's
    other values allowed so that "Air" inside "Air Fryer" stays the product type. A catalog
    without a ``title`` column has no series."""
    columns = [a for a in CODE_TYPES if a in catalog.columns]
    series, marketing = lexicon.values("series"), lexicon.values("marketing")
    table = catalog.reindex(columns=["item_id", "title", *columns]).fillna("").astype(str)
    out: dict[str, dict[str, str]] = {}
    for item_id, title, *values in table.itertuples(index=False, name=None):
        attrs = {
            a: lexicon.normalize(a, v)
            for a, v in zip(columns, values, strict=True)
            if v.strip().lower() not in MISSING_VALUES
        }
        if "series" not in columns and series:
            allowed = {a: {v} for a, v in attrs.items()} | {"series": series, "marketing": marketing}
            found = [s for s in dictionary_spans(words(title), lexicon, allowed) if s.attribute == "series"]
            if found:
                attrs["series"] = lexicon.normalize("series", found[0].surface)
        out[item_id] = attrs
    return out


def companion_values(attributes: Iterable[Mapping[str, str]]) -> dict[str, dict[str, set[str]]]:
    """product type -> attribute -> the values items of that type have: the ``among`` that lets
    ``normalize`` read a query's "medium" as size m for a hoodie and size medium for a rug."""
    out: dict[str, dict[str, set[str]]] = {}
    for attrs in attributes:
        product_type = attrs.get("product_type")
        if product_type is not None:
            per_type = out.setdefault(product_type, {})
            for attribute, value in attrs.items():
                per_type.setdefault(attribute, set()).add(value)
    return out
