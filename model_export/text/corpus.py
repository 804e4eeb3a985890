"""What the text models learn from: each catalog item's text and the log's query → item pairs.

An item's text is its title followed by its attribute values (every catalog column except the
id, category id, price and arrival day), normalised. Query → item pairs are the engaged items
(click or deeper) of training sessions that carry a query; exposures are not pairs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import pandas as pd

from index.features import CLICK, Session
from index.text import normalize_text
from index.tokenizer import DEFAULT_VOCAB_SIZE, TextTokenizer, train_tokenizer
from index.vocab import Vocabulary

NON_TEXT_COLUMNS = frozenset({"item_id", "category", "price", "first_day"})


def item_texts(catalog: pd.DataFrame, vocab: Vocabulary) -> list[str]:
    """One normalised text per vocabulary label (label order); "" for an item without text."""
    columns = [c for c in catalog.columns if c not in NON_TEXT_COLUMNS]
    if "title" in columns:  # the title first: it is what a shopper reads
        columns.remove("title")
        columns.insert(0, "title")
    texts = (
        pd.concat([as_text(catalog[c]) for c in columns], axis=1).agg(" ".join, axis=1) if columns else None
    )
    by_id = (
        dict(zip(catalog["item_id"].astype(str), texts.tolist(), strict=True)) if texts is not None else {}
    )
    return [normalize_text(by_id.get(str(item), "")) for item in vocab.item_ids.tolist()]


def as_text(column: pd.Series) -> pd.Series:
    """A catalog column as words: empty for missing values, and a numeric column that pandas
    read as floats because of them (sizes "42", "43") without a trailing ".0"."""
    if pd.api.types.is_float_dtype(column):
        return column.map(lambda v: "" if pd.isna(v) else str(int(v)) if float(v).is_integer() else str(v))
    return column.fillna("").astype(str)


def query_pairs(sessions: Mapping[str, Sequence[Session]], vocab: Vocabulary) -> list[tuple[str, int]]:
    """(query, item label) for every engaged item of every session with a query, in log order."""
    pairs = []
    for user_sessions in sessions.values():
        for session in user_sessions:
            if not session.query:
                continue
            for item, action in session.items:
                label = vocab.item_index(item)
                if action >= CLICK and label is not None:
                    pairs.append((session.query, label))
    return pairs


def training_queries(sessions: Mapping[str, Sequence[Session]]) -> list[str]:
    return [s.query for user_sessions in sessions.values() for s in user_sessions if s.query]


def fit_tokenizer(
    texts: Iterable[str], queries: Iterable[str], vocab_size: int = DEFAULT_VOCAB_SIZE
) -> TextTokenizer:
    """The bundle's shared tokenizer, trained on the catalog texts and the training queries."""
    return train_tokenizer([*texts, *queries], vocab_size=vocab_size)
