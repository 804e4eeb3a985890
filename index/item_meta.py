"""What the catalog says about each item, for people: title, category, price and attributes.

Built offline from the catalog (``model_export.catalog_meta``), one row per vocabulary label,
written as ``ITEM_META_FILE`` into the run directory and copied into the bundle by publish; the
manifest's ``item_meta`` (``index.bundle.ItemMetaSpec``) says it is there and names the
attributes. The service shows it on request (``include: ["meta"]``) and in the item view, so
the API and the console always describe an item the way the served bundle does.

``item_meta.json`` is one JSON object of columns, each a list in vocabulary label order::

    {
      "format": 1,
      "item_ids": ["i-0001", ...],         # must equal the bundle's id map (items.npz), in order
      "titles": ["Red running shoe", ...], # "" when the catalog has no title
      "categories": ["shoes", ...],        # the catalog's category value
      "prices": [49.9, null, ...],         # null when the catalog has no price
      "attributes": {"brand": ["acme", "", ...], ...}  # "" where the item has no value
    }

To change one item's title (a test does): ``i = data["item_ids"].index(item_id);
data["titles"][i] = "..."``. ``ItemMeta.load`` checks the file against the bundle's id map and
raises ``BundleError`` when anything disagrees, so the bundle is refused and the served one
stays.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeGuard

import numpy as np

from index.bundle import BundleError

ITEM_META_FILE = "item_meta.json"
ITEM_META_FORMAT = 1


@dataclass(frozen=True)
class ItemInfo:
    """One item's metadata."""

    title: str
    category: str
    price: float | None
    attributes: dict[str, str] = field(default_factory=dict)  # only the values the item has


class ItemMeta:
    """Every vocabulary label's metadata, held by column. Immutable; safe to share between
    threads.

    Construct from columns in label order (a None or NaN price is none; ``ValueError`` for
    columns of different lengths) or with ``load``."""

    def __init__(
        self,
        titles: Sequence[str],
        categories: Sequence[str],
        prices: Sequence[float | None],
        attributes: Mapping[str, Sequence[str]],
    ) -> None:
        n = len(titles)
        if len(categories) != n or len(prices) != n or any(len(v) != n for v in attributes.values()):
            raise ValueError("item metadata columns differ in length")
        interned: dict[str, str] = {}  # categories and attribute values repeat across items
        self._titles = tuple(titles)
        self._categories = tuple(interned.setdefault(c, c) for c in categories)
        price_array = np.asarray([math.nan if p is None else p for p in prices], dtype=np.float64)
        price_array.setflags(write=False)
        self._prices = price_array
        self._attributes = {
            name: tuple(interned.setdefault(v, v) for v in values) for name, values in attributes.items()
        }

    @property
    def n_items(self) -> int:
        return len(self._titles)

    @property
    def attribute_names(self) -> list[str]:
        return list(self._attributes)

    def of(self, label: int) -> ItemInfo | None:
        """The metadata of vocabulary ``label``; None outside the vocabulary."""
        if not 0 <= label < len(self._titles):
            return None
        price = float(self._prices[label])
        return ItemInfo(
            title=self._titles[label],
            category=self._categories[label],
            price=None if math.isnan(price) else price,
            attributes={name: v for name, values in self._attributes.items() if (v := values[label])},
        )

    def save(self, path: Path, item_ids: Sequence[str]) -> None:
        """Write ``path`` (``ITEM_META_FILE`` in a run or bundle directory); ``item_ids``: the
        vocabulary's id map, recorded so a load can tell a file of another vocabulary."""
        if len(item_ids) != self.n_items:
            raise ValueError(f"{len(item_ids)} item ids for metadata of {self.n_items} items")
        payload = {
            "format": ITEM_META_FORMAT,
            "item_ids": [str(i) for i in item_ids],
            "titles": list(self._titles),
            "categories": list(self._categories),
            "prices": [None if math.isnan(p) else p for p in self._prices.tolist()],
            "attributes": {name: list(values) for name, values in self._attributes.items()},
        }
        path.write_text(json.dumps(payload, ensure_ascii=False))

    @classmethod
    def load(cls, path: Path, item_ids: Sequence[str], attributes: Sequence[str] | None = None) -> ItemMeta:
        """The metadata at ``path``, checked against the bundle's id map ``item_ids`` (and, given
        ``attributes``, the attribute names the manifest lists). Raises ``BundleError`` naming
        the problem: a missing or unreadable file, another format, columns of the wrong type or
        length, item ids that are not the id map."""
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise BundleError(f"{path.parent}: unreadable {ITEM_META_FILE}: {exc}") from exc
        problem = _problem(payload, item_ids, attributes)
        if problem is not None:
            raise BundleError(f"{path.parent}: {ITEM_META_FILE}: {problem}")
        return cls(payload["titles"], payload["categories"], payload["prices"], payload["attributes"])


def _strings(values: Any) -> TypeGuard[list[str]]:
    return isinstance(values, list) and all(isinstance(v, str) for v in values)


def _finite_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _problem(payload: Any, item_ids: Sequence[str], attributes: Sequence[str] | None) -> str | None:
    if not isinstance(payload, dict):
        return "not a JSON object"
    if payload.get("format") != ITEM_META_FORMAT:
        return f"format {payload.get('format')!r}, this build reads {ITEM_META_FORMAT}"
    ids = payload.get("item_ids")
    if not _strings(ids):
        return "item_ids must be a list of strings"
    if len(ids) != len(item_ids):
        return f"{len(ids)} items, the bundle has {len(item_ids)}"
    if ids != [str(i) for i in item_ids]:
        at = next(n for n, (a, b) in enumerate(zip(ids, item_ids, strict=True)) if a != str(b))
        return f"item {at} is {ids[at]!r}, the bundle's id map has {str(item_ids[at])!r}"
    for column in ("titles", "categories"):
        if not _strings(payload.get(column)) or len(payload[column]) != len(ids):
            return f"{column} must be a list of {len(ids)} strings"
    prices = payload.get("prices")
    if not isinstance(prices, list) or len(prices) != len(ids):
        return f"prices must be a list of {len(ids)} numbers or nulls"
    if not all(p is None or _finite_number(p) for p in prices):
        return "prices must be finite numbers or null"
    columns = payload.get("attributes")
    if not isinstance(columns, dict):
        return "attributes must be an object of columns"
    for name, values in columns.items():
        if not _strings(values) or len(values) != len(ids):
            return f"attribute {name!r} must be a list of {len(ids)} strings"
    if attributes is not None and list(columns) != list(attributes):
        return f"attributes {list(columns)}, the manifest lists {list(attributes)}"
    return None
