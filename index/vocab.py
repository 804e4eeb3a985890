"""The vocabulary a bundle's encoder needs: item id map, item side info, categories, scenes.

Item *index* ``i`` (0..N-1) is the item's row in the id map and its label in the HNSW index.
Inside encoder token sequences the item appears as token id ``i + ITEM_OFFSET``; token 0 is
padding and token 1 stands for an item the vocabulary does not know (a new item seen online
before the next training round), so unknown ids never fail a request.

Category, price-bucket and scene tokens reserve 0 for "unknown" the same way.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

PAD_ITEM = 0
UNKNOWN_ITEM = 1
ITEM_OFFSET = 2
N_PRICE_BUCKETS = 10

VOCAB_FILE = "vocab.json"
ITEMS_FILE = "items.npz"


@dataclass
class Vocabulary:
    """Immutable after construction; safe to share between threads."""

    item_ids: np.ndarray  # (N,) str — the id map
    item_category: np.ndarray  # (N,) int64 category token (0 = unknown)
    item_price: np.ndarray  # (N,) int64 price-bucket token (0 = unknown)
    categories: list[str]
    scenes: list[str]
    price_edges: list[float]
    _item_lookup: dict[str, int] = field(init=False, repr=False)
    _scene_lookup: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._item_lookup = {str(item): i for i, item in enumerate(self.item_ids.tolist())}
        self._scene_lookup = {scene: i + 1 for i, scene in enumerate(self.scenes)}

    @classmethod
    def build(
        cls,
        item_ids: Sequence[str],
        categories: Sequence[str],
        prices: Sequence[float],
        scenes: Sequence[str],
    ) -> Vocabulary:
        """Build from catalog columns; price buckets are catalog quantiles."""
        category_names = sorted(set(categories))
        category_token = {name: i + 1 for i, name in enumerate(category_names)}
        price_arr = np.asarray(prices, dtype=np.float64)
        edges = np.quantile(price_arr, np.linspace(0, 1, N_PRICE_BUCKETS + 1)[1:-1]).tolist()
        return cls(
            item_ids=np.asarray(item_ids, dtype=str),
            item_category=np.asarray([category_token[c] for c in categories], dtype=np.int64),
            item_price=np.searchsorted(edges, price_arr, side="right").astype(np.int64) + 1,
            categories=category_names,
            scenes=sorted(set(scenes)),
            price_edges=edges,
        )

    def extended(
        self,
        item_ids: Sequence[str],
        categories: Sequence[str],
        prices: Sequence[float],
        scenes: Sequence[str],
    ) -> Vocabulary:
        """This vocabulary plus the catalog rows and scenes it does not know yet (a new round).

        Every known item, category and scene keeps its index and token, so a model trained on
        this vocabulary stays valid for them; new ones are appended. Prices of new items are
        bucketed with this vocabulary's edges.
        """
        known = self._item_lookup
        fresh = [i for i, item in enumerate(item_ids) if str(item) not in known]
        new_categories = sorted({categories[i] for i in fresh} - set(self.categories))
        all_categories = self.categories + new_categories
        category_token = {name: i + 1 for i, name in enumerate(all_categories)}
        fresh_prices = np.asarray([prices[i] for i in fresh], dtype=np.float64)
        return Vocabulary(
            item_ids=np.concatenate(
                [self.item_ids, np.asarray([str(item_ids[i]) for i in fresh], dtype=str)]
            ),
            item_category=np.concatenate(
                [self.item_category, np.asarray([category_token[categories[i]] for i in fresh], np.int64)]
            ),
            item_price=np.concatenate(
                [
                    self.item_price,
                    np.searchsorted(self.price_edges, fresh_prices, side="right").astype(np.int64) + 1,
                ]
            ),
            categories=all_categories,
            scenes=self.scenes + sorted(set(scenes) - set(self.scenes)),
            price_edges=list(self.price_edges),
        )

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def n_category_tokens(self) -> int:
        return len(self.categories) + 1

    @property
    def n_scene_tokens(self) -> int:
        return len(self.scenes) + 1

    def item_index(self, item_id: str) -> int | None:
        return self._item_lookup.get(item_id)

    def labels_of(self, item_ids: Iterable[str]) -> list[int]:
        """The labels of the ids in the catalog (others left out), in order: one dict lookup
        an id, without a method call each (a heavy user's exclusions are thousands of ids)."""
        get = self._item_lookup.get
        return [label for item in item_ids if (label := get(item)) is not None]

    def item_features(self, item_id: str) -> tuple[int, int, int]:
        """(item token, category token, price-bucket token); unknown items get (UNKNOWN_ITEM, 0, 0)."""
        index = self._item_lookup.get(item_id)
        if index is None:
            return UNKNOWN_ITEM, 0, 0
        return index + ITEM_OFFSET, int(self.item_category[index]), int(self.item_price[index])

    def item_feature_columns(self, item_ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``item_features`` of many ids at once: (item tokens, category tokens, price-bucket
        tokens), each (len(item_ids),) int64."""
        get = self._item_lookup.get
        labels = np.fromiter((get(item, -1) for item in item_ids), np.int64, len(item_ids))
        known = labels >= 0
        safe = np.where(known, labels, 0)
        tokens = np.where(known, labels + ITEM_OFFSET, UNKNOWN_ITEM)
        categories = np.where(known, self.item_category[safe], 0)
        prices = np.where(known, self.item_price[safe], 0)
        return tokens, categories.astype(np.int64), prices.astype(np.int64)

    def scene_token(self, scene: str) -> int:
        return self._scene_lookup.get(scene, 0)

    def save(self, directory: Path) -> list[Path]:
        meta = {"categories": self.categories, "scenes": self.scenes, "price_edges": self.price_edges}
        vocab_path = directory / VOCAB_FILE
        vocab_path.write_text(json.dumps(meta))
        items_path = directory / ITEMS_FILE
        with items_path.open("wb") as f:
            np.savez(f, ids=self.item_ids, category=self.item_category, price=self.item_price)
        return [vocab_path, items_path]

    @classmethod
    def load(cls, directory: Path) -> Vocabulary:
        meta = json.loads((directory / VOCAB_FILE).read_text())
        with np.load(directory / ITEMS_FILE, allow_pickle=False) as items:
            return cls(
                item_ids=items["ids"],
                item_category=items["category"],
                item_price=items["price"],
                categories=list(meta["categories"]),
                scenes=list(meta["scenes"]),
                price_edges=[float(x) for x in meta["price_edges"]],
            )
