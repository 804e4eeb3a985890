"""Search world: the synthetic world of ``synth.generate`` with a catalog worth searching and a
search scene whose requests carry a query.

Generative process (docs/search.md#the-search-world):

1. *Catalog.*  Each item's category and sub-cluster (``synth.catalog_structure``) map onto a
   taxonomy of 10 departments x 5 categories x 8 product types (``search_vocab``); the item draws
   colour, material, style, size, audience and season from the tables its product type allows,
   and a title is written from them in one of several seller styles, with marketing words.
2. *Intents.*  Base-log search requests are dropped; on each day a user was active they search
   ``Poisson(rate)`` times.  A search wants a product type, mostly of a category the user
   engaged with, and 0-4 more attributes copied from one real (popular, arrived) item, so most
   intents have relevant items.
3. *Queries* say the intent in shoppers' words: synonyms, abbreviations, other word orders and
   typos, so a query and the titles it wants share fewer words than a lexical matcher needs.
4. *Exposure* by an older system: exact word overlap with titles + noise + log popularity over
   the matching items and a few random ones of the intent's category, top 8-12 shown in order.
5. *Engagement* is a logistic of relevance (share of the intent's attributes an item has), the
   user's preferred brands and price level, and position.

``search_intents.csv`` holds the intents: ground truth for evaluation, never a training input.
``lexicon.csv`` is the world's dictionary (``attribute,value,surface``): every way its titles and
queries write an attribute value of the catalog (value, title forms, query forms; product types
with their qualifier forms), the model words as ``series`` and the marketing phrases as
``marketing``: what the GRAM attribute tagger (``model_export.gram``) labels spans from.
One ``np.random.default_rng`` (seed ``config.seed + SEED_OFFSET``) drives every draw in a fixed
order, so a config yields byte-identical files.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from index.text import normalize_text
from model_export.progress import progress_bar
from model_export.search_vocab import (
    ATTRIBUTES,
    FAMILIES,
    MARKETING,
    MODEL_WORDS,
    QUALIFIERS,
    STOPWORDS,
    TAXONOMY,
    TYPES_PER_CATEGORY,
    VALUES,
    Forms,
)
from model_export.synth import DAY, DAY0_TS, SynthConfig, catalog_structure, generate

log = logging.getLogger(__name__)

SEED_OFFSET = 104729  # the search overlay's stream is not the base world's
LEXICON_COLUMNS = ["attribute", "value", "surface"]
INTENT_COLUMNS = ["product_type", *ATTRIBUTES]
CATALOG_COLUMNS = [
    "item_id", "category", "category_path", "product_type", "price", "title", "first_day", *ATTRIBUTES,
]  # fmt: skip
GRANULARITIES = ("coarse", "medium", "fine")
_TOKEN = re.compile(r"[0-9a-z]+(?:['./-][0-9a-z]+)*")
# How often an intent constrains each attribute, relative to the others, when it constrains some.
_ATTRIBUTE_WEIGHT = {
    "brand": 0.5, "colour": 1.0, "material": 0.6, "style": 0.5, "size": 0.6, "audience": 0.9, "season": 0.3,
}  # fmt: skip


@dataclass(frozen=True)
class SearchConfig:
    searches_per_active_day: float = 0.3  # mean searches on a day the user visits at all
    rate_sigma: float = 0.6  # lognormal spread of the per-user search rate
    coarse_share: float = 0.45  # product type alone or with 1 attribute: the head queries
    medium_share: float = 0.35  # product type + 2 attributes; fine (+3 or 4) is the rest
    interest_share: float = 0.8  # intents in a category the user engaged with in the base log
    synonym_prob: float = 0.6  # a query says a value in other words than titles do
    typo_rate: float = 0.03  # per query word of 4+ letters
    min_exposed: int = 8
    max_exposed: int = 12
    random_candidates: int = 20  # items of the intent's category the old matcher adds
    match_noise: float = 0.7  # std of the old matcher's score noise (one shared word = 1)
    popularity_weight: float = 0.3  # of log(1 + base-log exposures) in the old matcher's score
    preferred_brands: int = 2  # per user and category
    # Engagement logits.  Calibrated for a search click rate near the base log's ~10 %, about
    # 25 % on fully relevant items and a few % on others.
    click_bias: float = -3.8
    relevance_weight: float = 3.2
    brand_weight: float = 1.0  # a preferred brand
    price_weight: float = 0.6  # the item's price tier is the user's level
    position_weight: float = 0.1  # per rank
    cart_bias: float = -2.0
    pay_bias: float = -0.8


@dataclass(frozen=True)
class Preferences:
    """Each user's preferred brands per category and price level (0 cheap, 1 mid, 2 premium)."""

    brands: dict[tuple[str, str], frozenset[str]]  # (user_id, category) -> brand names
    price_level: dict[str, int]


def tokens(text: str) -> list[str]:
    """Words of ``text`` as the old matcher and the statistics see them."""
    return _TOKEN.findall(normalize_text(text))


def read_table(path: Path) -> pd.DataFrame:
    """A world CSV with every column as text and empty fields as "" (sizes like "42" stay text)."""
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def type_qualifier(k: int) -> str:
    return QUALIFIERS[(k - 1) % len(QUALIFIERS)] + ("" if k <= len(QUALIFIERS) else f" {(k - 1) // 8 + 1}")


def _pick(forms: tuple[str, ...], u: float) -> str:
    """One of ``forms``, the first most often (weights 1/(rank+1)): shoppers favour one phrasing."""
    w = np.cumsum(1.0 / np.arange(1, len(forms) + 1))
    return forms[min(int(np.searchsorted(w, u * w[-1], side="right")), len(forms) - 1)]


@dataclass
class _Items:
    frame: pd.DataFrame  # the rewritten catalog, in catalog order
    cat: np.ndarray  # int category per item
    first_day: np.ndarray
    forms: list[dict[str, Forms]]  # per item: attribute -> its value's forms (type included)
    brand_code: np.ndarray
    price_tier: np.ndarray


def _build_items(config: SynthConfig, base: pd.DataFrame, rng: np.random.Generator) -> _Items:
    structure = catalog_structure(config)
    ids = base["item_id"].tolist()
    cat = np.array([structure.category[i] for i in ids], np.int64)
    group = np.array([structure.group[i] for i in ids], np.int64)
    first_group = np.full(config.n_categories, np.iinfo(np.int64).max)
    np.minimum.at(first_group, cat, group)
    local = group - first_group[cat]
    cycles_per_cat = max(1, math.ceil(config.subclusters_per_category / TYPES_PER_CATEGORY))
    n = len(ids)
    draws = rng.random((n, 16))

    columns: dict[str, list[str]] = {
        c: [] for c in ("category_path", "product_type", "title", *ATTRIBUTES[1:])
    }
    forms: list[dict[str, Forms]] = []
    brands = base["brand"].tolist()
    for i in range(n):
        c, g, r = int(cat[i]), int(local[i]), draws[i]
        node = TAXONOMY[c % len(TAXONOMY)]
        cycle = (c // len(TAXONOMY)) * cycles_per_cat + g // TYPES_PER_CATEGORY
        base_type = node.types[g % TYPES_PER_CATEGORY]
        qualifier = type_qualifier(cycle) if cycle else ""
        cat_qual = type_qualifier(c // len(TAXONOMY)) + " " if c >= len(TAXONOMY) else ""
        ptype = f"{qualifier} {base_type.value}".strip()
        item_forms = {
            "product_type": Forms(
                ptype, (ptype.title(),), tuple(f"{qualifier} {q}".strip() for q in base_type.query)
            ),
            "brand": Forms(brands[i], (brands[i],), ()),
        }
        for k, name in enumerate(ATTRIBUTES[1:]):
            table = FAMILIES[node.family].get(name)
            if table is not None:
                values = VALUES[table]
                item_forms[name] = values[int(r[k] * len(values))]
            columns[name].append(item_forms[name].value if table is not None else "")
        forms.append(item_forms)
        columns["category_path"].append(f"{node.department} > {cat_qual}{node.name}".lower())
        columns["product_type"].append(ptype)
        columns["title"].append(write_title(item_forms, r[6:]))

    frame = pd.DataFrame({"item_id": ids, "category": base["category"], **columns})
    frame["price"] = base["price"]
    frame["brand"] = base["brand"]
    frame["first_day"] = base["first_day"]
    frame = frame[CATALOG_COLUMNS]
    price = base["price"].astype(float)
    tier = price.groupby(frame["product_type"]).rank(method="first", pct=True)
    return _Items(
        frame=frame,
        cat=cat,
        first_day=base["first_day"].astype(np.int64).to_numpy(),
        forms=forms,
        brand_code=pd.factorize(base["brand"], sort=True)[0].astype(np.int64),
        price_tier=np.minimum((tier.to_numpy() * 3).astype(np.int64), 2),
    )


def write_title(forms: dict[str, Forms], r: np.ndarray) -> str:
    """A seller's title from the item's attribute forms; ``r`` holds 10 uniform draws."""

    def part(name: str, u: float, drop: float) -> str:
        f = forms.get(name)
        return "" if f is None or u < drop else _pick(f.title, (u - drop) / (1 - drop))

    audience = part("audience", r[0], 0.1)
    before, after = ("", audience) if audience.startswith("for ") else (audience, "")
    p = {
        "B": forms["brand"].value,
        "T": forms["product_type"].title[0],
        "C": part("colour", r[1], 0.1),
        "MAT": part("material", r[2], 0.25),
        "S": part("style", r[3], 0.3),
        "Z": part("size", r[4], 0.25),
        "SE": part("season", r[5], 0.3),
        "M": "" if r[6] < 0.5 else MODEL_WORDS[int(r[6] * 2 * len(MODEL_WORDS)) % len(MODEL_WORDS)],
        "MK": "" if r[7] < 0.35 else MARKETING[int(r[7] * 7919) % len(MARKETING)],
        "A": before,
        "FA": after,
    }
    template = _TEMPLATES[int(r[8] * len(_TEMPLATES))]
    lower = r[9] < 0.3  # some sellers write in lower case, brand apart
    text = ""
    for prefix, key, suffix in template:
        value = p[key]
        if value:
            text += prefix + (value.lower() if lower and key not in ("B", "MK") else value) + suffix
    return re.sub(r"\s+,", ",", re.sub(r"\s+", " ", text)).strip(" ,-|")


# Seller styles: (prefix, part, suffix) pieces, a piece left out when its part is empty.
_TEMPLATES: tuple[tuple[tuple[str, str, str], ...], ...] = (
    (("", "B", " "), ("", "M", " "), ("", "A", " "), ("", "S", " "), ("", "T", " "), ("", "FA", " "),
     ("", "MAT", " "), ("", "C", " "), ("", "Z", " "), ("", "MK", "")),
    (("[", "MK", "] "), ("", "B", " "), ("", "MAT", " "), ("", "S", " "), ("", "A", " "), ("", "T", ""),
     (" ", "FA", ""), (", ", "C", ""), (", ", "Z", ""), (", ", "SE", "")),
    (("", "B", " "), ("", "A", " "), ("", "T", " "), ("", "FA", " "), ("- ", "C", " "), ("", "MAT", " "),
     ("", "S", ""), (", ", "Z", ""), (" | ", "MK", "")),
    (("", "SE", " "), ("", "A", " "), ("", "C", " "), ("", "T", " "), ("", "FA", " "), ("by ", "B", " "),
     ("| ", "MK", "")),
    (("", "MK", " "), ("", "B", " "), ("", "M", " "), ("", "S", " "), ("", "MAT", " "), ("", "A", " "),
     ("", "T", " "), ("", "FA", " "), ("(", "Z", ") "), ("", "C", "")),
    (("", "C", " "), ("", "MAT", " "), ("", "T", " "), ("", "Z", " "), ("- ", "B", " "), ("", "M", " "),
     ("", "S", " "), ("", "A", " "), ("", "FA", " "), ("", "SE", "")),
)  # fmt: skip


def world_lexicon(forms: list[dict[str, Forms]]) -> pd.DataFrame:
    """``lexicon.csv``'s rows: (attribute, value, surface) for every form of every value the
    items carry, plus ``MODEL_WORDS`` as ``series`` and ``MARKETING`` as ``marketing``; surfaces
    as ``tokens`` sees them (joined by one space), one row per distinct triple, sorted."""
    rows = {
        (name, f.value, surface)
        for item in forms
        for name, f in item.items()
        for surface in (f.value, *f.title, *f.query)
    }
    rows |= {("series", w.lower(), w) for w in MODEL_WORDS}
    rows |= {("marketing", m.lower(), m) for m in MARKETING}
    keyed = {(a, v, " ".join(tokens(s))) for a, v, s in rows}
    return pd.DataFrame(sorted(t for t in keyed if t[2]), columns=LEXICON_COLUMNS)


def _draw_preferences(
    config: SynthConfig, search: SearchConfig, items: pd.DataFrame, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    """(user, category, k) -> preferred brand code, user -> price level; brand and category names."""
    brand_names = sorted(items["brand"].unique().tolist())
    code = {b: k for k, b in enumerate(brand_names)}
    cat = items["category"].str[1:].astype(np.int64).to_numpy()
    per_cat = [
        sorted({code[b] for b in items["brand"].to_numpy()[cat == c]}) or [0]
        for c in range(config.n_categories)
    ]
    width = max(len(b) for b in per_cat)
    table = np.array([(b * width)[:width] for b in per_cat], np.int64)
    count = np.array([len(b) for b in per_cat])
    u = rng.random((config.n_users, config.n_categories, search.preferred_brands))
    pick = (u * count[None, :, None]).astype(np.int64)
    brands = table[np.arange(config.n_categories)[None, :, None], pick]
    level = rng.integers(0, 3, config.n_users)
    return brands, level, brand_names, [f"c{c}" for c in range(config.n_categories)]


def user_preferences(config: SynthConfig, search: SearchConfig, catalog: pd.DataFrame) -> Preferences:
    """The preferences ``generate_search_world`` drew for ``config`` (its first draws), for
    analyses and tests; ``catalog`` is the world's catalog.csv (brand and category columns)."""
    brands, level, names, cats = _draw_preferences(
        config, search, catalog, np.random.default_rng(config.seed + SEED_OFFSET)
    )
    return Preferences(
        brands={
            (f"u{u}", cats[c]): frozenset(names[b] for b in brands[u, c].tolist())
            for u in range(config.n_users)
            for c in range(config.n_categories)
        },
        price_level={f"u{u}": int(x) for u, x in enumerate(level.tolist())},
    )


@dataclass
class _Log:
    """Search events in generation order; columns are parallel lists."""

    user: list[str]
    item: list[str]
    ts: list[int]
    action: list[str]
    request: list[str]
    query: list[str]


class _Searcher:
    """Draws one search request at a time: intent, query, the old system's exposure, engagement."""

    def __init__(
        self,
        search: SearchConfig,
        items: _Items,
        popularity: np.ndarray,
        brands: np.ndarray,
        level: np.ndarray,
        rng: np.random.Generator,
    ) -> None:
        self.search, self.items, self.rng = search, items, rng
        self.brands, self.level = brands, level
        self.log_pop = np.log1p(popularity)
        self.weight = 1.0 + popularity
        n_cat = brands.shape[1]
        self.cat_items = [np.flatnonzero(items.cat == c) for c in range(n_cat)]
        self.cat_weight = np.array([self.weight[i].sum() for i in self.cat_items])
        postings: dict[str, list[int]] = {}
        for i, title in enumerate(items.frame["title"].tolist()):
            for word in dict.fromkeys(tokens(title)):
                if word not in STOPWORDS:
                    postings.setdefault(word, []).append(i)
        self.postings = {w: np.array(p, np.int64) for w, p in postings.items()}
        self.columns = {a: items.frame[a].to_numpy() for a in INTENT_COLUMNS}

    def _choice(self, weight: np.ndarray) -> int:
        cum = np.cumsum(weight)
        return min(int(np.searchsorted(cum, self.rng.random() * cum[-1], side="right")), weight.size - 1)

    def intent(self, user: int, day: int, liked: tuple[np.ndarray, np.ndarray] | None) -> dict[str, str]:
        """Constrained attributes (product type always) copied from one arrived item."""
        rng, search = self.rng, self.search
        if liked is not None and rng.random() < search.interest_share:
            cat = int(liked[0][self._choice(liked[1])])
        else:
            cat = self._choice(self.cat_weight)
        pool = self.cat_items[cat]
        anchor = int(pool[self._choice(self.weight[pool] * (self.items.first_day[pool] <= day))])
        forms = self.items.forms[anchor]
        u = rng.random()
        if u < search.coarse_share:
            extra = int(rng.integers(0, 2))
        elif u < search.coarse_share + search.medium_share:
            extra = 2
        else:
            extra = 3 + int(rng.random() < 0.4)
        names = [a for a in ATTRIBUTES if a in forms]
        w = np.array([_ATTRIBUTE_WEIGHT[a] for a in names])
        chosen = rng.choice(len(names), size=min(extra, len(names)), replace=False, p=w / w.sum())
        keep = {"product_type", *(names[k] for k in chosen.tolist())}
        return {a: forms[a].value if a in keep else "" for a in INTENT_COLUMNS} | {"_anchor": str(anchor)}

    def query(self, intent: dict[str, str]) -> str:
        rng, search = self.rng, self.search
        forms = self.items.forms[int(intent["_anchor"])]
        phrases = []
        for name in ATTRIBUTES:
            if not intent[name]:
                continue
            f = forms[name]
            if name == "brand":
                phrases.append(f.value.lower())
            elif f.query and rng.random() < search.synonym_prob:
                phrases.append(_pick(f.query, rng.random()))
            else:
                phrases.append(f.value)
        order = rng.permutation(len(phrases)).tolist()
        phrases = [phrases[k] for k in order]
        f = forms["product_type"]
        noun = _pick(f.query, rng.random()) if f.query and rng.random() < search.synonym_prob else f.value
        u = rng.random()
        at = len(phrases) if u < 0.6 else 0 if u < 0.85 else int(rng.integers(0, len(phrases) + 1))
        phrases.insert(at, noun)
        return " ".join(self._typo(w) for w in " ".join(phrases).split())

    def _typo(self, word: str) -> str:
        rng = self.rng
        if len(word) < 4 or rng.random() >= self.search.typo_rate:
            return word
        k = int(rng.integers(1, len(word) - 1))
        kind = int(rng.integers(0, 4))
        if kind == 0:  # swapped neighbours
            return word[: k - 1] + word[k] + word[k - 1] + word[k + 1 :]
        if kind == 1:  # dropped letter
            return word[:k] + word[k + 1 :]
        if kind == 2:  # doubled letter
            return word[:k] + word[k] + word[k:]
        return word[:k] + "abcdefghijklmnopqrstuvwxyz"[int(rng.integers(0, 26))] + word[k + 1 :]

    def expose(self, query: str, cat: int, day: int) -> np.ndarray:
        """The older system's ranked list: exact word overlap + noise + log popularity."""
        rng, search, n = self.rng, self.search, self.items.cat.size
        lists = [self.postings[w] for w in dict.fromkeys(tokens(query)) if w in self.postings]
        overlap = np.bincount(np.concatenate(lists), minlength=n) if lists else np.zeros(n, np.int64)
        pool = self.cat_items[cat]
        extra = rng.choice(pool, size=min(search.random_candidates, pool.size), replace=False)
        cand = np.union1d(np.flatnonzero(overlap), extra)
        cand = cand[self.items.first_day[cand] <= day]
        score = overlap[cand] + search.match_noise * rng.standard_normal(cand.size)
        score += search.popularity_weight * self.log_pop[cand]
        k = int(rng.integers(search.min_exposed, search.max_exposed + 1))
        shown: np.ndarray = cand[np.argsort(-score, kind="stable")[:k]]
        return shown

    def engage(self, user: int, intent: dict[str, str], shown: np.ndarray) -> tuple[np.ndarray, ...]:
        rng, s, items = self.rng, self.search, self.items
        constrained = [a for a in INTENT_COLUMNS if intent[a]]
        match = sum((self.columns[a][shown] == intent[a]).astype(np.float64) for a in constrained)
        relevance = np.asarray(match) / len(constrained)
        liked = (self.brands[user, items.cat[shown]] == items.brand_code[shown][:, None]).any(axis=1)
        price = items.price_tier[shown] == self.level[user]
        personal = s.brand_weight * liked + s.price_weight * price
        position = np.arange(shown.size)
        click_logit = s.click_bias + s.relevance_weight * relevance + personal - s.position_weight * position
        click = rng.random(shown.size) < _sigmoid(click_logit)
        cart = click & (rng.random(shown.size) < _sigmoid(s.cart_bias + relevance + personal))
        pay = cart & (rng.random(shown.size) < _sigmoid(s.pay_bias + personal))
        return click, cart, pay


def _sigmoid(x: np.ndarray) -> np.ndarray:
    out: np.ndarray = 1.0 / (1.0 + np.exp(-x))
    return out


def _search_starts(
    config: SynthConfig, search: SearchConfig, events: pd.DataFrame, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(user, day, ts) of every search request, in start order: Poisson(rate) searches on each
    day a user was active in the base log, at uniform times within that day's activity."""
    user = events["user_id"].str[1:].astype(np.int64).to_numpy()
    ts = events["ts"].to_numpy()
    day = (ts - DAY0_TS) // DAY
    key = user * config.n_days + np.minimum(day, config.n_days - 1)
    active, inverse = np.unique(key, return_inverse=True)
    first = np.full(active.size, np.iinfo(np.int64).max)
    last = np.zeros(active.size, np.int64)
    np.minimum.at(first, inverse, ts)
    np.maximum.at(last, inverse, ts)
    sigma = search.rate_sigma
    rate = search.searches_per_active_day * np.exp(sigma * rng.standard_normal(config.n_users) - sigma**2 / 2)
    a_user, a_day = active // config.n_days, active % config.n_days
    n = rng.poisson(rate[a_user])
    s_user, s_day = np.repeat(a_user, n), np.repeat(a_day, n)
    lo, hi = np.repeat(first, n), np.repeat(last, n) + 300
    s_ts = lo + (rng.random(s_user.size) * (hi - lo)).astype(np.int64)
    order = np.lexsort((s_user, s_ts))
    return s_user[order], s_day[order], s_ts[order]


def _liked_categories(
    events: pd.DataFrame, cat_of: dict[str, int], n_users: int
) -> list[tuple[np.ndarray, np.ndarray] | None]:
    """Per user: (categories, engagement counts) in the base log, or None without engagement."""
    engaged = events[events["action"] != "exposure"]
    user = engaged["user_id"].str[1:].astype(np.int64).to_numpy()
    cat = engaged["item_id"].map(cat_of).to_numpy(np.int64)
    n_cat = max(cat_of.values()) + 1
    pairs, counts = np.unique(user * n_cat + cat, return_counts=True)
    out: list[tuple[np.ndarray, np.ndarray] | None] = [None] * n_users
    bounds = np.flatnonzero(np.diff(pairs // n_cat)) + 1
    for lo, hi in zip(np.r_[0, bounds], np.r_[bounds, pairs.size], strict=True):
        if hi > lo:
            out[int(pairs[lo] // n_cat)] = (pairs[lo:hi] % n_cat, counts[lo:hi].astype(np.float64))
    return out


def generate_search_world(
    config: SynthConfig, out_dir: Path, search: SearchConfig = SearchConfig(), progress: bool = False
) -> dict[str, int]:
    """Writes catalog.csv (with attributes), lexicon.csv (the attribute dictionary), events.csv
    (with a ``query`` column; the base log's search requests replaced) and search_intents.csv
    (ground truth, for evaluation only) under ``out_dir``; returns counts.  Same arguments,
    byte-identical files."""
    if not 0 <= search.coarse_share + search.medium_share <= 1:
        raise ValueError("coarse_share + medium_share must be between 0 and 1")
    if not 1 <= search.min_exposed <= search.max_exposed:
        raise ValueError("need 1 <= min_exposed <= max_exposed")
    counts = generate(config, out_dir, progress)
    rng = np.random.default_rng(config.seed + SEED_OFFSET)
    base = read_table(out_dir / "catalog.csv")
    brands, level, _, _ = _draw_preferences(config, search, base, rng)
    items = _build_items(config, base, rng)
    items.frame.to_csv(out_dir / "catalog.csv", index=False)
    world_lexicon(items.forms).to_csv(out_dir / "lexicon.csv", index=False)

    events = pd.read_csv(out_dir / "events.csv", dtype={"ts": np.int64}, keep_default_na=False)
    index_of = {item: k for k, item in enumerate(items.frame["item_id"].tolist())}
    exposures = events.loc[events["action"] == "exposure", "item_id"].map(index_of).to_numpy(np.int64)
    popularity = np.bincount(exposures, minlength=len(index_of)).astype(np.float64)
    liked = _liked_categories(events, dict(zip(index_of, items.cat.tolist(), strict=True)), config.n_users)
    s_user, s_day, s_ts = _search_starts(config, search, events, rng)
    dropped = events.loc[events["scene"] == "search", "request_id"].nunique()
    events = events[events["scene"] != "search"].assign(query="")

    searcher = _Searcher(search, items, popularity, brands, level, rng)
    ids = items.frame["item_id"].to_numpy()
    out = _Log([], [], [], [], [], [])
    intents: list[dict[str, str]] = []
    steps = progress_bar(range(s_user.size), progress, desc="searches", unit="search")
    for r in steps:
        user, day, t0 = int(s_user[r]), int(s_day[r]), int(s_ts[r])
        intent = searcher.intent(user, day, liked[user])
        query = searcher.query(intent)
        anchor = int(intent.pop("_anchor"))
        shown = searcher.expose(query, int(items.cat[anchor]), day)
        click, cart, pay = searcher.engage(user, intent, shown)
        k = shown.size
        t_exp = t0 + np.arange(k)
        t_click = t_exp + 2 + rng.integers(0, 20, k)
        t_cart = t_click + 5 + rng.exponential(30.0, k).astype(np.int64)
        t_pay = t_cart + 10 + rng.exponential(60.0, k).astype(np.int64)
        request = f"s{r}"
        for action, mask, t in (
            ("exposure", None, t_exp),
            ("click", click, t_click),
            ("cart", cart, t_cart),
            ("pay", pay, t_pay),
        ):
            sel = np.arange(k) if mask is None else np.flatnonzero(mask)
            out.item.extend(ids[shown[sel]].tolist())
            out.ts.extend(t[sel].tolist())
            m = sel.size
            out.user.extend([f"u{user}"] * m)
            out.action.extend([action] * m)
            out.request.extend([request] * m)
            out.query.extend([query] * m)
        used = sum(1 for a in ATTRIBUTES if intent[a]) + 1
        granularity = "coarse" if used <= 2 else "medium" if used == 3 else "fine"
        intents.append({"request_id": request, "user_id": f"u{user}", "ts": str(t0), "query": query,
                        "granularity": granularity, **intent})  # fmt: skip

    searched = pd.DataFrame(
        {"user_id": out.user, "item_id": out.item, "ts": np.array(out.ts, np.int64), "action": out.action,
         "scene": "search", "request_id": out.request, "query": out.query}
    )  # fmt: skip
    merged = pd.concat([events, searched], ignore_index=True).sort_values("ts", kind="stable")
    merged.to_csv(out_dir / "events.csv", index=False)
    columns = ["request_id", "user_id", "ts", "query", "granularity", *INTENT_COLUMNS]
    pd.DataFrame(intents, columns=columns).to_csv(out_dir / "search_intents.csv", index=False)
    result = {
        **counts,
        "events": len(merged),
        "sessions": counts["sessions"] - dropped + len(intents),
        "searches": len(intents),
        "search_events": len(searched),
    }
    log.info("search world written to %s: %s", out_dir, result)
    return result
