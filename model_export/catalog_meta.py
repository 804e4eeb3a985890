"""Each vocabulary item's metadata from the catalog (``index.item_meta``), for the run directory.

The title, the category and the price have their own columns; every other catalog column
except the id and the arrival day (``first_day``) is an attribute, written as text the way the
text channels read it (``model_export.text.corpus.as_text``: numbers without a trailing
".0"), and left out where the item has no value. An item the vocabulary keeps but the catalog
no longer lists (an incremental round's vocabulary only grows) gets its category from the
vocabulary, no title, price or attributes.
"""

from __future__ import annotations

import pandas as pd

from index.item_meta import ItemMeta
from index.vocab import Vocabulary
from model_export.text.corpus import NON_TEXT_COLUMNS, as_text

# The columns with a field of their own, or none: the text channels' non-text columns and the title.
NOT_ATTRIBUTES = NON_TEXT_COLUMNS | {"title"}


def catalog_meta(catalog: pd.DataFrame, vocab: Vocabulary) -> ItemMeta:
    """One row per ``vocab`` label from the ``catalog`` frame (``model_export.data.read_catalog``)."""
    ids = [str(i) for i in vocab.item_ids.tolist()]
    frame = catalog.assign(item_id=catalog["item_id"].astype(str)).drop_duplicates("item_id", keep="last")
    listed = pd.Index(ids).isin(frame["item_id"])
    rows = frame.set_index("item_id").reindex(ids)
    known_category = pd.Series(
        [vocab.categories[c - 1] if c > 0 else "" for c in vocab.item_category.tolist()], index=rows.index
    )
    category = rows["category"].where(listed, known_category).fillna("").astype(str)
    title = as_text(rows["title"]) if "title" in rows.columns else pd.Series("", index=rows.index)
    price = pd.to_numeric(rows["price"], errors="coerce").astype(float)
    names = [c for c in catalog.columns if c not in NOT_ATTRIBUTES]
    return ItemMeta(
        titles=title.tolist(),
        categories=category.tolist(),
        prices=price.tolist(),
        attributes={str(name): as_text(rows[name]).tolist() for name in names},
    )
