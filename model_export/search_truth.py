"""A search world's ground truth and statistics, for evaluation only: nothing that trains reads
these. ``relevant_items`` says which items match a search's intent (the relevance rate of
``bench/search.py``); ``search_stats`` measures a written world (docs/search.md).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from index.text import normalize_text
from model_export.search_vocab import ATTRIBUTES, STOPWORDS
from model_export.search_world import GRANULARITIES, INTENT_COLUMNS, read_table, tokens


def relevant_items(intents: pd.DataFrame, catalog: pd.DataFrame) -> dict[str, set[str]]:
    """request_id -> ids of the items that have every attribute the intent constrains (its
    non-empty ``INTENT_COLUMNS``); arrival days are not considered.  Frames as ``read_table``."""
    by_type = {t: frame for t, frame in catalog.groupby("product_type", sort=False)}
    out: dict[str, set[str]] = {}
    for row in intents[["request_id", *INTENT_COLUMNS]].itertuples(index=False):
        items = by_type.get(row.product_type)
        if items is None:
            out[row.request_id] = set()
            continue
        mask = np.ones(len(items), bool)
        for name in ATTRIBUTES:
            value = getattr(row, name)
            if value:
                mask &= items[name].to_numpy() == value
        out[row.request_id] = set(items["item_id"].to_numpy()[mask].tolist())
    return out


def search_stats(out_dir: Path) -> dict[str, float]:
    """Measured statistics of a written search world (docs/search.md): searches per
    granularity, the share of query words no relevant title has, click rates on relevant and
    other items, and how often queries repeat (head: issued 5+ times, torso 2-4, tail once)."""
    catalog = read_table(out_dir / "catalog.csv")
    intents = read_table(out_dir / "search_intents.csv")
    events = read_table(out_dir / "events.csv")
    relevant = relevant_items(intents, catalog)
    title_words = {i: set(tokens(t)) for i, t in zip(catalog["item_id"], catalog["title"], strict=True)}
    absent = total = 0
    for request, query in zip(intents["request_id"], intents["query"], strict=True):
        words = set().union(*(title_words[i] for i in relevant[request])) if relevant[request] else set()
        content = [w for w in tokens(query) if w not in STOPWORDS]
        absent += sum(w not in words for w in content)
        total += len(content)
    search = events[events["scene"] == "search"]
    shown = search[search["action"] == "exposure"]
    clicks = search[search["action"] == "click"]
    clicked = set(zip(clicks["request_id"], clicks["item_id"], strict=True))
    is_rel = np.array([i in relevant[r] for r, i in zip(shown["request_id"], shown["item_id"], strict=True)])
    is_click = np.array(
        [(r, i) in clicked for r, i in zip(shown["request_id"], shown["item_id"], strict=True)]
    )
    freq = intents["query"].map(normalize_text).value_counts()
    per_search = intents["query"].map(normalize_text).map(freq)
    n = max(len(intents), 1)
    users = intents.groupby("query")["user_id"].nunique()
    shared = intents["query"].map(users) >= 2  # the same text typed by another user too
    stats: dict[str, float] = {
        "searches": len(intents),
        **{g: int((intents["granularity"] == g).sum()) for g in GRANULARITIES},
        "absent_word_share": absent / max(total, 1),
        "with_relevant_share": sum(bool(v) for v in relevant.values()) / n,
        "ctr_relevant": float(is_click[is_rel].mean()) if is_rel.any() else 0.0,
        "ctr_other": float(is_click[~is_rel].mean()) if (~is_rel).any() else 0.0,
        "distinct_queries": len(freq),
        "head_queries": int((freq >= 5).sum()),
        "torso_queries": int(((freq >= 2) & (freq < 5)).sum()),
        "tail_queries": int((freq == 1).sum()),
        "head_search_share": float((per_search >= 5).sum() / n),
        "tail_search_share": float((per_search == 1).sum() / n),
        **{f"{g}_shared_share": float(shared[intents["granularity"] == g].mean()) for g in GRANULARITIES},
    }
    return stats
