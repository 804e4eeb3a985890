"""Synthetic e-commerce world: a catalog and a time-ordered event log for offline testing.

The world is built so that a sequential recommender has something real to learn: users have
sparse, slowly drifting category interests and a latent taste; what they are shown depends on
the scene and on what they did moments ago (detail after a click, cart after a cart event); and
whether they engage is a logistic function of user-item affinity.  So the items a user engages
with next are predictable from their own recent history, clearly better than from global
popularity, while popularity, freshness and scene still matter.

Everything is vectorised over users: the simulation walks day by day, and within a day over a
user's k-th visit and that visit's j-th request, each step a handful of numpy operations over all
users concerned.  Output is formatted as byte matrices, never row by row in Python.  One
``np.random.default_rng(seed)`` drives every draw, in a fixed order, so a config always yields
byte-identical files.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import numpy.typing as npt

from model_export.progress import progress_bar

log = logging.getLogger(__name__)

IntArr = npt.NDArray[np.int64]
FloatArr = npt.NDArray[np.float64]
F32Arr = npt.NDArray[np.float32]
BoolArr = npt.NDArray[np.bool_]
U8Arr = npt.NDArray[np.uint8]

DAY0_TS = 1767225600  # 2026-01-01 00:00:00 UTC
DAY = 86400

ACTIONS = ("exposure", "click", "cart", "pay")
SCENES = ("homepage", "search", "detail", "cart")
EXPOSURE, CLICK, CART_ACTION, PAY = 0, 1, 2, 3
HOMEPAGE, SEARCH, DETAIL, CART = 0, 1, 2, 3
EVENTS_HEADER = "user_id,item_id,ts,action,scene,request_id\n"
CATALOG_HEADER = "item_id,category,price,title,brand,colour,first_day\n"

# Per-scene behaviour, indexed by the scene codes above.  Biases are logits, calibrated so that
# click/exposure is roughly 3-4 % on homepage, ~10 % on search, ~7 % on detail and ~20 % on cart,
# cart/click rises from homepage to cart, and pay/cart is highest on the cart page.
CLICK_BIAS = np.array([-5.9, -5.15, -6.1, -5.8])
CART_BIAS = np.array([-4.0, -3.2, -3.6, -2.0])
PAY_BIAS = np.array([-2.1, -1.35, -1.8, -0.25])
MIN_EXPOSURES = np.array([6, 6, 4, 3])
MAX_EXPOSURES = np.array([12, 12, 10, 8])
K_MAX = 12  # widest exposure list of any scene; requests are padded to it
CART_RING = 4  # carted-but-unpaid items remembered per user, shown again on the cart page

# Diurnal visit intensity per hour of the day: quiet at night, a lunch bump, an evening peak.
DIURNAL = np.array(
    [0.35, 0.2, 0.12, 0.08, 0.08, 0.12, 0.3, 0.55, 0.75, 0.85, 0.95, 1.05,
     1.15, 1.05, 0.95, 0.95, 1.0, 1.1, 1.3, 1.55, 1.75, 1.7, 1.3, 0.75]
)  # fmt: skip
# 2026-01-01 is a Thursday: days 2 and 3 (mod 7) are weekends, when people shop a bit more.
WEEKDAY_FACTOR = np.array([1.0, 1.0, 1.15, 1.15, 0.95, 0.95, 1.0])

_NOUNS = (
    "lamp", "sneaker", "kettle", "backpack", "jacket", "blender", "headphones", "mug", "novel",
    "charger", "tent", "blanket", "watch", "scarf", "drill", "pillow", "candle", "vase", "speaker",
    "keyboard", "mouse", "monitor", "shirt", "dress", "boots", "sunglasses", "wallet", "belt",
    "perfume", "serum", "shampoo", "toothbrush", "razor", "towel", "pan", "knife", "grinder", "bike",
    "helmet", "ball", "racket", "yoga-mat", "puzzle", "doll", "kite", "guitar", "camera", "tripod",
    "printer", "router", "sofa", "rug", "shelf", "clock", "mirror", "planter", "hammock", "cooler"
)  # fmt: skip
_QUALIFIERS = (
    "home", "outdoor", "kids", "pro", "travel", "office", "studio", "garden", "sport", "classic"
)  # fmt: skip
_ADJECTIVES = (
    "soft", "bold", "sleek", "cozy", "smart", "compact", "sturdy", "light", "vintage", "modern",
    "rustic", "deluxe", "urban", "premium", "eco", "classic", "fresh", "quiet", "bright", "slim",
    "handy", "royal", "wild", "swift"
)  # fmt: skip
_SIZES = (
    "mini", "lite", "plus", "max", "one", "air", "go", "neo", "duo", "xl"
)  # fmt: skip
_SYLLABLES = (
    "ka", "lo", "mi", "ra", "ven", "tor", "zu", "bel", "nor", "qui", "sa", "ter", "vo", "lux", "den",
    "fi", "gra", "hel", "ix", "jo"
)  # fmt: skip
_COLOURS = (
    "black", "white", "grey", "navy", "red", "green", "blue", "beige", "brown", "pink", "yellow",
    "orange", "purple", "teal", "silver", "gold"
)  # fmt: skip
BRANDS_PER_CATEGORY = 8


@dataclass(frozen=True)
class SynthConfig:
    # The default world is small enough to generate in about a second and still has structure.
    n_users: int = 2000
    n_items: int = 5000
    n_categories: int = 50
    n_days: int = 30  # a month: enough for drift, arrivals and a train/val/test split by time
    seed: int = 0
    # 16 dimensions is plenty for taste structure and keeps per-step gathers cheap at 1M items.
    latent_dim: int = 16
    # Sub-clusters ("product types") inside a category give detail pages a real neighbourhood.
    subclusters_per_category: int = 8
    # Mild skew across categories: big ones dominate global popularity without swamping interests.
    category_zipf: float = 0.7
    # Classic long tail inside a category: a few head items take a large share of its exposure.
    item_zipf: float = 0.9
    # Roughly a third of the catalog arrives during the period, so cold-start items exist.
    new_item_frac: float = 0.3
    # A new item gets up to (1 + boost) times its popularity weight, decaying over a few days.
    fresh_boost: float = 3.0
    fresh_tau_days: float = 3.0
    # 2-5 favourite categories, Dirichlet-weighted with small concentration: sparse and skewed.
    min_favourites: int = 2
    max_favourites: int = 5
    interest_concentration: float = 0.7
    # Daily log-normal jitter of interest weights: slow drift, visible only over weeks.
    interest_drift_sigma: float = 0.12
    # ~25 % of users pick up one new favourite category over a 30-day period.
    new_favourite_prob: float = 0.01
    # Mean visits per user-day; with ~2 requests per visit this gives ~20 sessions in 30 days.
    visits_per_day: float = 0.33
    # Lognormal activity spread: the most active 1 % visit ~10x more than the median user.
    activity_sigma: float = 1.0
    max_visits_per_day: int = 12  # caps the lognormal tail so one "bot-like" user cannot dominate
    # Chance of another request after one without engagement; raised after a click.
    continue_prob: float = 0.45
    max_requests_per_visit: int = 8  # continuation is geometric; the cap only trims rare runs
    # Click logit weights: favourite-category share and user.item taste (unit vectors).
    interest_weight: float = 3.0
    taste_weight: float = 2.5
    # Homepage shows a "buy again" slot for the user's last purchase this often.
    buy_again_prob: float = 0.25
    # ---- session-context knobs: 0 leaves the world above unchanged (byte for byte), 1 is
    # strong.  ``SESSION_WORLD`` is the setting the benchmarks call the session-context world.
    # The scene decides which interests a session serves: homepage and search each serve only
    # the user's favourite categories that lean to them (``category_scene``); a detail page
    # shows complements of the viewed item, the cart page accessories of the carted ones.
    scene_interest: float = 0.0
    # Hour of day and weekday modulate interests (``category_peak_hour``, ``category_weekend``).
    time_interest: float = 0.0
    # After paying for an item the next requests turn to its complements (phone -> case ->
    # charger, ``_Catalog.complement``); the paid item and its substitutes become rarer.
    complement_chain: float = 0.0
    # Share of requests shown as a grid: every item exposed at once, no position effect.
    unordered_exposure: float = 0.0


SESSION_KNOBS = ("scene_interest", "time_interest", "complement_chain", "unordered_exposure")
# The session-context world: every knob strong.  docs/model.md#data describes it.
SESSION_WORLD = {
    "scene_interest": 1.0,
    "time_interest": 1.0,
    "complement_chain": 1.0,
    "unordered_exposure": 1.0,
}
WORLDS = {"base": dict.fromkeys(SESSION_KNOBS, 0.0), "session": SESSION_WORLD}
MISSION_REQUESTS = 8  # requests a complement mission lasts unless a purchase renews it
# Share of a request's candidates a mission takes over at full strength, per scene.
MISSION_SHARE = np.array([0.4, 0.6, 0.3, 0.3])
WEEKEND_DAYS = (2, 3)  # day index mod 7: 2026-01-01 is a Thursday


def category_scene(category: IntArr) -> IntArr:
    """The scene a category leans to under ``scene_interest``: even ids homepage, odd search."""
    out: IntArr = np.where(np.asarray(category) % 2 == 0, HOMEPAGE, SEARCH)
    return out


def category_peak_hour(category: IntArr) -> IntArr:
    """Hour of day at which a category is most wanted under ``time_interest``."""
    out: IntArr = (np.asarray(category) * 7) % 24
    return out


def category_weekend(category: IntArr) -> FloatArr:
    """+1 for weekend categories (every third id), 0 for the others."""
    out: FloatArr = (np.asarray(category) % 3 == 0).astype(np.float64)
    return out


@dataclass
class _Catalog:
    """Items live in "slot" order, sorted by (category, sub-cluster), so every category and
    every sub-cluster is a contiguous slot range and can be sampled with one searchsorted."""

    cat: IntArr  # slot -> category
    group: IntArr  # slot -> global sub-cluster index
    cat_start: IntArr
    cat_end: IntArr
    group_start: IntArr
    group_end: IntArr
    group_anchor: IntArr  # most popular slot of each sub-cluster, always available from day 0
    cat_anchor: IntArr
    cat_share: FloatArr
    cat_vec: F32Arr  # category centroids in latent space
    base_weight: FloatArr
    first_day: IntArr
    vec: F32Arr
    quality: F32Arr
    external_id: IntArr  # slot -> the integer in "i<id>", a random permutation
    complement: IntArr  # sub-cluster -> its complement sub-cluster (one cycle over all of them)


@dataclass
class _Users:
    fav_cat: IntArr  # (n_users, max_favourites), -1 = empty slot
    fav_w: FloatArr  # same shape, rows sum to 1
    personal: F32Arr  # (n_users, dim) unit vectors: taste not explained by categories
    rate: FloatArr  # mean visits per day
    last_click: IntArr  # slot, -1 = none
    last_pay: IntArr
    ring: IntArr  # (n_users, CART_RING) carted, unpaid slots; -1 = empty
    ring_next: IntArr
    busy_until: IntArr  # absolute ts of the user's last event so far
    vec: F32Arr  # today's taste vector
    mission: IntArr  # sub-cluster the user is shopping complements in, -1 = none
    mission_left: IntArr  # requests the mission still lasts
    paid_group: IntArr  # sub-cluster of the last purchase, -1 = none


@dataclass
class _Day:
    """Sampling tables for one day: cumulative exposure weights over slots."""

    weight: FloatArr  # popularity x freshness; 0 exactly for items that have not arrived yet
    cum: FloatArr  # len n_items + 1
    cum_avail: FloatArr  # len n_items + 1, one unit per available item: uniform sampling


@dataclass
class _Buffer:
    """Events of one day in generation order; columns are parallel arrays."""

    user: list[IntArr]
    item: list[IntArr]
    ts: list[IntArr]
    action: list[IntArr]
    scene: list[IntArr]
    request: list[IntArr]


def _unit(x: F32Arr) -> F32Arr:
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    out: F32Arr = (x / np.maximum(norm, 1e-6)).astype(np.float32)
    return out


def _sigmoid(x: FloatArr) -> FloatArr:
    return 1.0 / (1.0 + np.exp(-x))


def _build_catalog(config: SynthConfig, rng: np.random.Generator) -> _Catalog:
    n, n_cat, dim = config.n_items, config.n_categories, config.latent_dim
    if n < n_cat:
        raise ValueError("n_items must be at least n_categories")
    cat_rank = rng.permutation(n_cat)
    cat_share = np.power(cat_rank + 1.0, -config.category_zipf, dtype=np.float64)
    cat_share /= cat_share.sum()
    # Bigger categories also have more items, but sub-linearly (many shoppers, few product lines).
    size_p = np.sqrt(cat_share) / np.sqrt(cat_share).sum()
    cat_size = 1 + rng.multinomial(n - n_cat, size_p)
    cat_end = np.cumsum(cat_size)
    cat_start = cat_end - cat_size
    cat = np.repeat(np.arange(n_cat), cat_size)

    n_sub = np.minimum(config.subclusters_per_category, cat_size)
    group_cat = np.repeat(np.arange(n_cat), n_sub)
    first_group = np.cumsum(n_sub) - n_sub
    # Every sub-cluster gets one item, the surplus is spread uniformly over the category's ones.
    surplus = cat_size - n_sub
    surplus_cat = np.repeat(np.arange(n_cat), surplus)
    surplus_group = first_group[surplus_cat] + (rng.random(surplus_cat.size) * n_sub[surplus_cat]).astype(
        np.int64
    )
    group_size = 1 + np.bincount(surplus_group, minlength=group_cat.size)
    group_end = np.cumsum(group_size)
    group_start = group_end - group_size
    group = np.repeat(np.arange(group_cat.size), group_size)

    # Zipf rank inside the category, in random slot order so popularity is not tied to sub-cluster.
    keys = rng.random(n)
    by_rank = np.lexsort((keys, cat))
    rank = np.empty(n, np.int64)
    rank[by_rank] = np.arange(n) - cat_start[cat[by_rank]]
    within = (rank + 1.0) ** -config.item_zipf
    within /= np.bincount(cat, weights=within, minlength=n_cat)[cat]
    base_weight = cat_share[cat] * within

    by_weight = np.lexsort((-base_weight, group))
    group_anchor = by_weight[group_start]
    cat_anchor = group_anchor[first_group]

    first_day = np.zeros(n, np.int64)
    if config.n_days > 1:
        new = rng.random(n) < config.new_item_frac
        new[group_anchor] = False
        first_day[new] = rng.integers(1, config.n_days, int(new.sum()))

    centroid = _unit(rng.standard_normal((n_cat, dim)).astype(np.float32))
    sub_offset = _unit(rng.standard_normal((group_cat.size, dim)).astype(np.float32))
    noise = _unit(rng.standard_normal((n, dim)).astype(np.float32))
    vec = _unit(centroid[cat] + 0.6 * sub_offset[group] + 0.35 * noise)
    # Quality correlates a little with popularity: popular items are popular partly for a reason.
    log_w = np.log(within)
    quality = (0.15 * (log_w - log_w.mean()) / (log_w.std() + 1e-9) + 0.3 * rng.standard_normal(n)).astype(
        np.float32
    )
    # A separate stream, so the knobs-at-0 world draws exactly what it always drew.
    cycle = np.random.default_rng([config.seed, 1]).permutation(group_cat.size)
    complement = np.empty(group_cat.size, np.int64)
    complement[cycle] = np.roll(cycle, -1)
    return _Catalog(
        cat=cat,
        group=group,
        cat_start=cat_start,
        cat_end=cat_end,
        group_start=group_start,
        group_end=group_end,
        group_anchor=group_anchor,
        cat_anchor=cat_anchor,
        cat_share=cat_share,
        cat_vec=centroid,
        base_weight=base_weight,
        first_day=first_day,
        vec=vec,
        quality=quality,
        external_id=rng.permutation(n).astype(np.int64),
        complement=complement,
    )


def _sample_categories(cat_share: FloatArr, size: int, rng: np.random.Generator) -> IntArr:
    cum = np.cumsum(cat_share)
    idx = np.searchsorted(cum, rng.random(size) * cum[-1], side="right")
    out: IntArr = np.minimum(idx, cat_share.size - 1).astype(np.int64)
    return out


def _build_users(config: SynthConfig, catalog: _Catalog, rng: np.random.Generator) -> _Users:
    n, f = config.n_users, config.max_favourites
    if not 1 <= config.min_favourites <= f:
        raise ValueError("need 1 <= min_favourites <= max_favourites")
    # Favourites follow category popularity, flattened, so niche categories still have fans.
    fav_p = catalog.cat_share**0.6
    fav_cat = _sample_categories(fav_p / fav_p.sum(), n * f, rng).reshape(n, f)
    n_fav = rng.integers(config.min_favourites, f + 1, n)
    used = np.arange(f)[None, :] < n_fav[:, None]
    ordered = np.sort(np.where(used, fav_cat, -1), axis=1)
    dup = np.zeros_like(used)
    dup[:, 1:] = (ordered[:, 1:] == ordered[:, :-1]) & (ordered[:, 1:] >= 0)
    fav_cat = np.where(dup, -1, ordered)
    fav_w = rng.gamma(config.interest_concentration, 1.0, (n, f)) * (fav_cat >= 0)
    fav_w += 1e-3 * (fav_cat >= 0)  # tiny floor: a gamma draw of ~0 would silently drop a favourite
    fav_w /= fav_w.sum(axis=1, keepdims=True)
    rate = config.visits_per_day * np.exp(
        config.activity_sigma * rng.standard_normal(n) - config.activity_sigma**2 / 2
    )
    return _Users(
        fav_cat=fav_cat,
        fav_w=fav_w,
        personal=_unit(rng.standard_normal((n, config.latent_dim)).astype(np.float32)),
        rate=rate,
        last_click=np.full(n, -1, np.int64),
        last_pay=np.full(n, -1, np.int64),
        ring=np.full((n, CART_RING), -1, np.int64),
        ring_next=np.zeros(n, np.int64),
        busy_until=np.zeros(n, np.int64),
        vec=np.zeros((n, config.latent_dim), np.float32),
        mission=np.full(n, -1, np.int64),
        mission_left=np.zeros(n, np.int64),
        paid_group=np.full(n, -1, np.int64),
    )


def _drift_interests(config: SynthConfig, users: _Users, catalog: _Catalog, rng: np.random.Generator) -> None:
    n, f = users.fav_w.shape
    valid = users.fav_cat >= 0
    users.fav_w *= np.exp(config.interest_drift_sigma * rng.standard_normal((n, f))) * valid
    switch = np.flatnonzero(rng.random(n) < config.new_favourite_prob)
    new_cat = _sample_categories(catalog.cat_share, switch.size, rng)
    fav_cat = users.fav_cat[switch]
    w = users.fav_w[switch]
    already = fav_cat == new_cat[:, None]
    # An existing favourite is reinforced; otherwise an empty or the weakest slot is replaced.
    slot = np.where(
        already.any(axis=1), already.argmax(axis=1), np.where(fav_cat >= 0, w, -1.0).argmin(axis=1)
    )
    rows = np.arange(switch.size)
    total = w.sum(axis=1)
    w[rows, slot] = 0.0
    w *= (0.7 * total / np.maximum(w.sum(axis=1), 1e-12))[:, None]
    w[rows, slot] = 0.3 * total
    fav_cat[rows, slot] = new_cat
    users.fav_cat[switch] = fav_cat
    users.fav_w[switch] = w
    users.fav_w /= users.fav_w.sum(axis=1, keepdims=True)


def _taste_vectors(users: _Users, catalog: _Catalog) -> F32Arr:
    centroid = catalog.cat_vec[np.maximum(users.fav_cat, 0)]
    mix = np.einsum("uf,ufd->ud", users.fav_w, centroid).astype(np.float32)
    return _unit(mix + 0.7 * users.personal)


def _day_tables(config: SynthConfig, catalog: _Catalog, day: int) -> _Day:
    age = day - catalog.first_day
    avail = age >= 0
    fresh = np.where(
        (catalog.first_day > 0) & avail,
        config.fresh_boost * np.exp(-np.maximum(age, 0) / config.fresh_tau_days),
        0.0,
    )
    weight = catalog.base_weight * (1.0 + fresh) * avail
    zero = np.zeros(1)
    return _Day(
        weight=weight,
        cum=np.concatenate([zero, np.cumsum(weight)]),
        cum_avail=np.concatenate([zero, np.cumsum(avail.astype(np.float64))]),
    )


def _sample_range(cum: FloatArr, start: IntArr, end: IntArr, rng: np.random.Generator) -> IntArr:
    """One weighted draw per (start, end) slot range, weights given as a cumulative table."""
    lo, hi = cum[start], cum[end]
    idx = np.searchsorted(cum, lo + rng.random(start.shape) * (hi - lo), side="right") - 1
    return np.clip(idx, start, end - 1).astype(np.int64)


def _sample_items(
    day: _Day, start: IntArr, end: IntArr, fallback: IntArr, rng: np.random.Generator, uniform: bool = False
) -> IntArr:
    idx = _sample_range(day.cum_avail if uniform else day.cum, start, end, rng)
    # Float rounding at a range edge can land on a zero-weight (not yet arrived) item.
    bad = day.weight[idx] <= 0
    idx[bad] = fallback[bad]
    return idx


def _sample_in_category(day: _Day, catalog: _Catalog, cat: IntArr, rng: np.random.Generator) -> IntArr:
    return _sample_items(day, catalog.cat_start[cat], catalog.cat_end[cat], catalog.cat_anchor[cat], rng)


def _sample_favourite(fav_cat: IntArr, fav_w: FloatArr, rng: np.random.Generator) -> IntArr:
    """A category per row from that row's interest mixture (favourite categories, weights)."""
    cum = np.cumsum(fav_w, axis=1)
    pick = (rng.random((fav_cat.shape[0], 1)) * cum[:, -1:] >= cum).sum(axis=1)
    pick = np.minimum(pick, cum.shape[1] - 1)
    rows = np.arange(fav_cat.shape[0])
    cat = fav_cat[rows, pick]
    # Zero-weight empty slots are never picked except via rounding; fall back to the top favourite.
    top = fav_cat[rows, fav_w.argmax(axis=1)]
    out: IntArr = np.where(cat >= 0, cat, top)
    return out


def _gumbel(rng: np.random.Generator, shape: tuple[int, ...]) -> FloatArr:
    return -np.log(-np.log(rng.random(shape) + 1e-12) + 1e-12)


class _Simulator:
    def __init__(
        self, config: SynthConfig, catalog: _Catalog, users: _Users, rng: np.random.Generator
    ) -> None:
        self.config = config
        self.catalog = catalog
        self.users = users
        self.rng = rng
        self.day_tables = _day_tables(config, catalog, 0)
        self.next_request = 0

    # ---- candidate generation per scene: (rows, M) slot matrix and ranking scores -------------

    def _homepage(self, uid: IntArr, weights: FloatArr) -> tuple[IntArr, FloatArr, BoolArr]:
        rng, cat, day = self.rng, self.catalog, self.day_tables
        n = uid.size
        cand = np.full((n, K_MAX), -1, np.int64)
        source = rng.random((n, K_MAX))
        interest = source < 0.5
        popular = (source >= 0.5) & (source < 0.8)
        rand = source >= 0.8
        rows = np.broadcast_to(np.arange(n)[:, None], (n, K_MAX))[interest]
        favourites = _sample_favourite(self.users.fav_cat[uid][rows], weights[rows], rng)
        cand[interest] = _sample_in_category(day, cat, favourites, rng)
        for mask, uniform in ((popular, False), (rand, True)):
            m = int(mask.sum())
            start, end = np.zeros(m, np.int64), np.full(m, cat.cat.size, np.int64)
            fallback = np.full(m, cat.cat_anchor[0], np.int64)
            cand[mask] = _sample_items(day, start, end, fallback, rng, uniform=uniform)
        last_pay = self.users.last_pay[uid]
        buy_again = self.config.buy_again_prob * (1.0 - self.config.complement_chain)
        again = (last_pay >= 0) & (rng.random(n) < buy_again)
        cand[again, 0] = last_pay[again]
        boost = np.zeros((n, K_MAX), bool)
        boost[again, 0] = True
        # Homepage keeps its mixed sampling order: slot position is the ranking.
        score = np.broadcast_to(-np.arange(K_MAX, dtype=np.float64), (n, K_MAX)).copy()
        return cand, score, boost

    def _search(self, uid: IntArr, weights: FloatArr) -> tuple[IntArr, FloatArr, BoolArr]:
        rng, cat, day = self.rng, self.catalog, self.day_tables
        n, m = uid.size, 2 * K_MAX
        query_cat = _sample_favourite(self.users.fav_cat[uid], weights, rng)
        # Some searches are for something new: this is how users discover categories.
        explore = rng.random(n) < 0.15
        query_cat[explore] = _sample_categories(cat.cat_share, int(explore.sum()), rng)
        cand = _sample_in_category(day, cat, np.repeat(query_cat, m), rng).reshape(n, m)
        # Search ranks by relevance to the user, with noise: a decent but imperfect ranker.
        taste = np.einsum("ud,umd->um", self.users.vec[uid], cat.vec[cand])
        score = taste + 0.5 * _gumbel(rng, (n, m))
        return cand, score, np.zeros((n, m), bool)

    def _detail(self, uid: IntArr, weights: FloatArr) -> tuple[IntArr, FloatArr, BoolArr]:
        rng, cat, day = self.rng, self.catalog, self.day_tables
        n, half = uid.size, K_MAX
        anchor = self.users.last_click[uid]
        group, category = cat.group[anchor], cat.cat[anchor]
        same_group = self._in_group(group, half)
        same_cat = _sample_in_category(day, cat, np.repeat(category, half), rng).reshape(n, half)
        # Scene interest: the page's second half shows complements of the viewed item instead.
        centre = np.broadcast_to(anchor[:, None], (n, half)).copy()
        complements = self._complement_rows(n, self.config.scene_interest)
        if complements.any():
            partner = cat.complement[group[complements]]
            same_cat[complements] = self._in_group(partner, half)
            centre[complements] = cat.group_anchor[partner][:, None]
        cand = np.concatenate([same_group, same_cat], axis=1)
        centres = np.concatenate([np.broadcast_to(anchor[:, None], (n, half)), centre], axis=1)
        diff = cat.vec[cand] - cat.vec[centres]
        score = -np.einsum("umd,umd->um", diff, diff).astype(np.float64) + 0.05 * _gumbel(rng, cand.shape)
        score[cand == anchor[:, None]] = -np.inf
        return cand, score, np.zeros(cand.shape, bool)

    def _in_group(self, group: IntArr, per_row: int) -> IntArr:
        """``per_row`` popularity-weighted items of each row's sub-cluster, (rows, per_row)."""
        cat = self.catalog
        return _sample_items(
            self.day_tables,
            np.repeat(cat.group_start[group], per_row),
            np.repeat(cat.group_end[group], per_row),
            np.repeat(cat.group_anchor[group], per_row),
            self.rng,
        ).reshape(group.size, per_row)

    def _complement_rows(self, n: int, strength: float) -> BoolArr:
        """Rows (of ``n``) that show complements, each with probability ``strength``; no draw at 0."""
        if strength <= 0:
            return np.zeros(n, bool)
        out: BoolArr = self.rng.random(n) < strength
        return out

    def _cart(self, uid: IntArr, weights: FloatArr) -> tuple[IntArr, FloatArr, BoolArr]:
        rng, cat, day = self.rng, self.catalog, self.day_tables
        n = uid.size
        ring = self.users.ring[uid]
        held = ring >= 0
        # Fill the page with items from the category of one random carted item.
        pick = (rng.random((n, CART_RING)) * held).argmax(axis=1)
        seed_item = ring[np.arange(n), pick]
        fill = _sample_in_category(day, cat, np.repeat(cat.cat[seed_item], K_MAX), rng).reshape(n, K_MAX)
        # Scene interest: accessories, i.e. complements of the carted item, instead.
        accessories = self._complement_rows(n, self.config.scene_interest)
        if accessories.any():
            fill[accessories] = self._in_group(cat.complement[cat.group[seed_item[accessories]]], K_MAX)
        cand = np.concatenate([np.where(held, ring, -1), fill], axis=1)
        score = np.concatenate([np.where(held, 100.0, -np.inf), np.zeros((n, K_MAX))], axis=1)
        score = score + _gumbel(rng, cand.shape)
        boost = np.concatenate([held, np.zeros((n, K_MAX), bool)], axis=1)
        return cand, score, boost

    # ---- the session-context knobs -------------------------------------------------------------

    def _interest_weights(self, uid: IntArr, scene: IntArr, ts: IntArr) -> FloatArr:
        """Each row's weights over its user's favourite slots, given the request's scene and time."""
        config, users = self.config, self.users
        weights = users.fav_w[uid]
        if config.scene_interest <= 0 and config.time_interest <= 0:
            return weights
        fav = np.maximum(users.fav_cat[uid], 0)
        factor = np.ones_like(weights)
        if config.scene_interest > 0:
            # Homepage and search serve the favourites that lean to them; others are damped.
            browsing = (scene == HOMEPAGE) | (scene == SEARCH)
            serves = category_scene(fav) == scene[:, None]
            factor *= np.where(serves | ~browsing[:, None], 1.0, 1.0 - config.scene_interest)
        if config.time_interest > 0:
            hour = (ts % DAY) / 3600.0
            weekend = np.isin(((ts - DAY0_TS) // DAY) % 7, WEEKEND_DAYS)
            phase = 2 * np.pi * (hour[:, None] - category_peak_hour(fav)) / 24.0
            lean = category_weekend(fav) * np.where(weekend, 1.0, -1.0)[:, None]
            factor *= np.exp(config.time_interest * (1.5 * np.cos(phase) + 1.0 * lean))
        damped = weights * factor
        # A user none of whose favourites the scene serves keeps the undamped mixture.
        total = damped.sum(axis=1, keepdims=True)
        out: FloatArr = np.where(total > 0, damped / np.maximum(total, 1e-12), weights)
        return out

    def _mission_slots(self, uid: IntArr, scene: int, cand: IntArr, score: FloatArr) -> None:
        """Complement chain: a user on a mission sees items of the mission's sub-cluster in place
        of some candidates (in place; they rank first among the request's candidates)."""
        strength = self.config.complement_chain
        if strength <= 0:
            return
        mission = self.users.mission[uid]
        rows = np.flatnonzero(mission >= 0)
        if rows.size == 0:
            return
        share = MISSION_SHARE[scene] * strength
        swap = self.rng.random((rows.size, cand.shape[1])) < share
        swapped = self._in_group(mission[rows], cand.shape[1])
        sub_cand, sub_score = cand[rows], score[rows]
        top = np.where(np.isfinite(sub_score), sub_score, -1e9).max(axis=1, keepdims=True)
        sub_cand[swap] = swapped[swap]
        sub_score[swap] = (top + 1.0 + _gumbel(self.rng, swap.shape))[swap]
        cand[rows], score[rows] = sub_cand, sub_score

    def _after_purchase(self, uid: IntArr, paid_item: IntArr) -> None:
        """Starts (or moves on) the complement mission of users who just paid."""
        users, cat = self.users, self.catalog
        group = cat.group[paid_item]
        users.paid_group[uid] = group
        start = self.rng.random(uid.size) < self.config.complement_chain
        users.mission[uid[start]] = cat.complement[group[start]]
        users.mission_left[uid[start]] = MISSION_REQUESTS

    # ---- one request per row ----------------------------------------------------------------

    def _choose_scene(self, uid: IntArr, prev_click: BoolArr, prev_cart: BoolArr, first: BoolArr) -> IntArr:
        n = uid.size
        has_click = self.users.last_click[uid] >= 0
        has_cart = (self.users.ring[uid] >= 0).any(axis=1)
        p = np.empty((n, 4))
        # Landing request of a visit: mostly homepage/search, sometimes straight back to an item or cart.
        p[:] = [0.5, 0.3, 0.1, 0.1]
        p[~first & ~prev_click & ~prev_cart] = [0.4, 0.45, 0.15, 0.0]
        p[~first & prev_click] = [0.15, 0.15, 0.6, 0.1]
        p[~first & prev_cart] = [0.1, 0.1, 0.25, 0.55]
        p[:, DETAIL] *= has_click
        p[:, CART] *= has_cart
        cum = np.cumsum(p, axis=1)
        scene: IntArr = (self.rng.random(n)[:, None] * cum[:, -1:] >= cum).sum(axis=1)
        return np.minimum(scene, CART)

    def _requests(
        self, uid: IntArr, ts: IntArr, scene: IntArr, buffer: _Buffer
    ) -> tuple[IntArr, BoolArr, BoolArr, BoolArr]:
        """Runs one request per row; returns (end ts, clicked, carted, paid) per row."""
        rng, cat, users, config = self.rng, self.catalog, self.users, self.config
        n = uid.size
        items = np.full((n, K_MAX), -1, np.int64)
        valid = np.zeros((n, K_MAX), bool)
        boosted = np.zeros((n, K_MAX), bool)
        weights = self._interest_weights(uid, scene, ts)
        builders = (self._homepage, self._search, self._detail, self._cart)
        for code, build in enumerate(builders):
            rows = np.flatnonzero(scene == code)
            if rows.size == 0:
                continue
            cand, score, boost = build(uid[rows], weights[rows])
            self._mission_slots(uid[rows], code, cand, score)
            score = np.where(cand >= 0, score, -np.inf)
            # Duplicate candidates keep only their first occurrence.
            order = np.argsort(cand, axis=1, kind="stable")
            ordered = np.take_along_axis(cand, order, axis=1)
            dup_sorted = np.zeros(cand.shape, bool)
            dup_sorted[:, 1:] = ordered[:, 1:] == ordered[:, :-1]
            dup = np.empty_like(dup_sorted)
            np.put_along_axis(dup, order, dup_sorted, axis=1)
            score[dup] = -np.inf
            top = np.argsort(-score, axis=1, kind="stable")[:, :K_MAX]
            k = rng.integers(MIN_EXPOSURES[code], MAX_EXPOSURES[code] + 1, rows.size)
            ok = (np.arange(K_MAX)[None, :] < k[:, None]) & np.isfinite(
                np.take_along_axis(score, top, axis=1)
            )
            items[rows] = np.where(ok, np.take_along_axis(cand, top, axis=1), -1)
            valid[rows] = ok
            boosted[rows] = np.take_along_axis(boost, top, axis=1) & ok

        safe = np.maximum(items, 0)
        item_cat = cat.cat[safe]
        interest = ((users.fav_cat[uid][:, None, :] == item_cat[:, :, None]) * weights[:, None, :]).sum(
            axis=2
        )
        taste = np.einsum("ud,ukd->uk", users.vec[uid], cat.vec[safe]).astype(np.float64)
        affinity = config.interest_weight * interest + config.taste_weight * taste + cat.quality[safe]
        affinity += self._context_affinity(uid, scene, items)
        position = np.arange(K_MAX)[None, :]
        grid = np.zeros(n, bool)
        if config.unordered_exposure > 0:
            grid = rng.random(n) < config.unordered_exposure
        # Items already in the cart or bought before are far more likely to be clicked again.
        position_effect = 0.05 * position * ~grid[:, None]
        click_logit = CLICK_BIAS[scene][:, None] + affinity - position_effect + 2.0 * boosted
        click = valid & (rng.random((n, K_MAX)) < _sigmoid(click_logit))
        cart = click & (rng.random((n, K_MAX)) < _sigmoid(CART_BIAS[scene][:, None] + 0.5 * affinity))
        pay = cart & (rng.random((n, K_MAX)) < _sigmoid(PAY_BIAS[scene][:, None] + 0.3 * affinity))

        # Impressions are logged as the user scrolls; deeper actions follow seconds to minutes later.
        # A grid is shown at once: every exposure shares the request's first second.
        t_exp = ts[:, None] + position * ~grid[:, None]
        t_click = t_exp + 2 + rng.integers(0, 40, (n, K_MAX))
        t_cart = t_click + 5 + rng.exponential(60.0, (n, K_MAX)).astype(np.int64)
        t_pay = t_cart + 10 + rng.exponential(120.0, (n, K_MAX)).astype(np.int64)
        last = np.where(pay, t_pay, np.where(cart, t_cart, np.where(click, t_click, t_exp)))
        end: IntArr = np.where(valid, last, 0).max(axis=1)

        request = self.next_request + np.arange(n, dtype=np.int64)
        self.next_request += n
        row_user = np.broadcast_to(uid[:, None], (n, K_MAX))
        row_scene = np.broadcast_to(scene[:, None], (n, K_MAX))
        row_request = np.broadcast_to(request[:, None], (n, K_MAX))
        outcomes = (
            (EXPOSURE, valid, t_exp),
            (CLICK, click, t_click),
            (CART_ACTION, cart, t_cart),
            (PAY, pay, t_pay),
        )
        for action, mask, t in outcomes:
            buffer.user.append(row_user[mask])
            buffer.item.append(items[mask])
            buffer.ts.append(t[mask])
            buffer.action.append(np.full(int(mask.sum()), action, np.int64))
            buffer.scene.append(row_scene[mask])
            buffer.request.append(row_request[mask])

        clicked, carted, paid = np.any(click, axis=1), np.any(cart, axis=1), np.any(pay, axis=1)
        last_col = K_MAX - 1
        r = np.flatnonzero(clicked)
        users.last_click[uid[r]] = items[r, last_col - click[r, ::-1].argmax(axis=1)]
        r = np.flatnonzero(carted)
        u = uid[r]
        users.ring[u, users.ring_next[u]] = items[r, last_col - cart[r, ::-1].argmax(axis=1)]
        users.ring_next[u] = (users.ring_next[u] + 1) % CART_RING
        r = np.flatnonzero(paid)
        u = uid[r]
        paid_items = np.where(pay[r], items[r], -2)
        bought = (users.ring[u][:, :, None] == paid_items[:, None, :]).any(axis=2)
        users.ring[u] = np.where(bought, -1, users.ring[u])
        users.last_pay[u] = items[r, last_col - pay[r, ::-1].argmax(axis=1)]
        if config.complement_chain > 0:
            users.mission_left[uid] -= 1
            users.mission[uid[users.mission_left[uid] <= 0]] = -1
            self._after_purchase(u, users.last_pay[u])
        return end, clicked, carted, paid

    def _context_affinity(self, uid: IntArr, scene: IntArr, items: IntArr) -> FloatArr:
        """Click affinity the knobs add: complements on detail and cart pages are what the user
        looks for there; mission items draw clicks, the last purchase and its substitutes fewer."""
        config, cat, users = self.config, self.catalog, self.users
        out = np.zeros(items.shape)
        group = cat.group[np.maximum(items, 0)]
        if config.scene_interest > 0:
            viewed = np.where(scene == DETAIL, users.last_click[uid], -1)
            # The cart page's accessories complement any carted item.
            carted = np.where((scene == CART)[:, None], users.ring[uid], -1)
            anchors = np.concatenate([viewed[:, None], carted], axis=1)
            partner = np.where(anchors >= 0, cat.complement[cat.group[np.maximum(anchors, 0)]], -1)
            is_partner = (group[:, :, None] == partner[:, None, :]).any(axis=2)
            out += 2.0 * config.scene_interest * is_partner
        if config.complement_chain > 0:
            mission = users.mission[uid][:, None]
            paid = users.paid_group[uid][:, None]
            out += 2.0 * config.complement_chain * ((group == mission) & (mission >= 0))
            out -= 2.0 * config.complement_chain * ((group == paid) & (paid >= 0))
        return out

    def run_day(self, day: int, buffer: _Buffer) -> IntArr:
        """Simulates all visits of one day; returns each request's start ts, by request id offset."""
        rng, users, config = self.rng, self.users, self.config
        if day > 0:
            _drift_interests(config, users, self.catalog, rng)
        users.vec = _taste_vectors(users, self.catalog)
        self.day_tables = _day_tables(config, self.catalog, day)
        starts: list[IntArr] = []

        lam = users.rate * WEEKDAY_FACTOR[day % 7]
        n_visits = np.minimum(rng.poisson(lam), config.max_visits_per_day)
        visit_user = np.repeat(np.arange(users.rate.size), n_visits)
        hour_p = DIURNAL / DIURNAL.sum()
        hour = np.searchsorted(
            np.cumsum(hour_p), rng.random(visit_user.size) * np.cumsum(hour_p)[-1], side="right"
        )
        second = np.minimum(hour, 23) * 3600 + rng.integers(0, 3600, visit_user.size)
        order = np.lexsort((second, visit_user))
        visit_user, second = visit_user[order], second[order]
        slot = np.arange(visit_user.size) - np.repeat(np.cumsum(n_visits) - n_visits, n_visits)

        day_start = DAY0_TS + day * DAY
        for k in range(int(slot.max(initial=-1)) + 1):
            sel = slot == k
            uid = visit_user[sel]
            # A visit cannot start before the user's previous one has ended.
            ts = np.maximum(day_start + second[sel], users.busy_until[uid] + 60)
            n = uid.size
            prev_click = np.zeros(n, bool)
            prev_cart = np.zeros(n, bool)
            first = np.ones(n, bool)
            for _ in range(config.max_requests_per_visit):
                if uid.size == 0:
                    break
                scene = self._choose_scene(uid, prev_click, prev_cart, first)
                starts.append(ts)
                end, clicked, carted, paid = self._requests(uid, ts, scene, buffer)
                users.busy_until[uid] = np.maximum(end, ts)
                stay_p = config.continue_prob + 0.2 * clicked - 0.2 * paid
                stay = rng.random(uid.size) < stay_p
                gap = 30 + rng.exponential(150.0, uid.size).astype(np.int64)
                uid, ts = uid[stay], np.maximum(end, ts)[stay] + gap[stay]
                prev_click, prev_cart, first = clicked[stay], carted[stay], np.zeros(int(stay.sum()), bool)
        return np.concatenate(starts) if starts else np.zeros(0, np.int64)


# ---- CSV as byte matrices: each field is a zero-padded uint8 block, zeros are squeezed out ----


def _digits(x: IntArr) -> U8Arr:
    """ASCII digits of non-negative ints, right-aligned; leading zeros become 0 bytes (dropped)."""
    x = np.asarray(x, np.int64)
    width = len(str(int(x.max()))) if x.size else 1
    out = np.empty((x.size, width), np.uint8)
    y = x.copy()
    for k in range(width - 1, -1, -1):
        out[:, k] = 48 + y % 10
        y //= 10
    for k in range(width - 1):
        out[:, k] *= x >= 10 ** (width - 1 - k)
    return out


def _literal(text: str, n: int) -> U8Arr:
    return np.broadcast_to(np.frombuffer(text.encode(), np.uint8), (n, len(text)))


def _words(table: list[str] | tuple[str, ...], idx: IntArr) -> U8Arr:
    encoded = [w.encode() for w in table]
    width = max(len(w) for w in encoded)
    lookup = np.zeros((len(encoded), width), np.uint8)
    for i, w in enumerate(encoded):
        lookup[i, : len(w)] = np.frombuffer(w, np.uint8)
    return lookup[idx]


def _write(fh: BinaryIO, fields: list[list[U8Arr]]) -> None:
    """Writes one CSV line per row; each field is a list of byte blocks with the same row count."""
    n = fields[0][0].shape[0]
    parts: list[U8Arr] = []
    for i, field in enumerate(fields):
        parts.extend(field)
        parts.append(_literal("\n" if i == len(fields) - 1 else ",", n))
    block = np.concatenate(parts, axis=1)
    fh.write(block[block != 0].tobytes())


CHUNK_ROWS = 1_000_000  # keeps the byte matrices near 100 MB however big the world


def _write_events(
    fh: BinaryIO, user: IntArr, item_ext: IntArr, ts: IntArr, action: IntArr, scene: IntArr, request: IntArr
) -> None:
    for lo in range(0, user.size, CHUNK_ROWS):
        s = slice(lo, lo + CHUNK_ROWS)
        n = user[s].size
        fields = [
            [_literal("u", n), _digits(user[s])],
            [_literal("i", n), _digits(item_ext[s])],
            [_digits(ts[s])],
            [_words(ACTIONS, action[s])],
            [_words(SCENES, scene[s])],
            [_literal("r", n), _digits(request[s])],
        ]
        _write(fh, fields)


def _write_catalog(path: Path, config: SynthConfig, catalog: _Catalog, rng: np.random.Generator) -> None:
    n = catalog.cat.size
    cat = catalog.cat
    n_cat = config.n_categories
    # Category-level attributes: a noun and qualifier (so titles reveal the category, like real
    # titles do), a price level and a small pool of brands.
    cat_noun = np.arange(n_cat) % len(_NOUNS)
    cat_qual = (np.arange(n_cat) // len(_NOUNS) + rng.integers(0, len(_QUALIFIERS), n_cat)) % len(_QUALIFIERS)
    cat_price = np.exp(rng.normal(3.2, 0.8, n_cat))
    brand_names = synthetic_brand_names()
    cat_brands = rng.integers(0, len(brand_names), (n_cat, BRANDS_PER_CATEGORY))
    # Brand follows the sub-cluster, so it carries real signal about an item's neighbourhood.
    brand_slot = (catalog.group * 3 + rng.integers(0, 3, n)) % BRANDS_PER_CATEGORY
    brand = cat_brands[cat, brand_slot]
    price = cat_price[cat] * np.exp(0.35 * rng.standard_normal(n))
    cents = np.maximum(np.round(price * 100).astype(np.int64), 99)
    adjective = rng.integers(0, len(_ADJECTIVES), n)
    size = rng.integers(0, len(_SIZES), n)
    colour = rng.integers(0, len(_COLOURS), n)

    # Catalog rows in external-id order, which is unrelated to category or popularity.
    by_id = np.argsort(catalog.external_id)
    pad2 = [f"{c:02d}" for c in range(100)]
    with path.open("wb") as fh:
        fh.write(CATALOG_HEADER.encode())
        for lo in range(0, n, CHUNK_ROWS):
            s = by_id[lo : lo + CHUNK_ROWS]
            m, c = s.size, cat[s]
            space = _literal(" ", m)
            title = [
                _words(_ADJECTIVES, adjective[s]),
                space,
                _words(_QUALIFIERS, cat_qual[c]),
                space,
                _words(_NOUNS, cat_noun[c]),
                space,
                _words(_SIZES, size[s]),
            ]
            fields = [
                [_literal("i", m), _digits(catalog.external_id[s])],
                [_literal("c", m), _digits(c)],
                [_digits(cents[s] // 100), _literal(".", m), _words(pad2, cents[s] % 100)],
                title,
                [_words(brand_names, brand[s])],
                [_words(_COLOURS, colour[s])],
                [_digits(catalog.first_day[s])],
            ]
            _write(fh, fields)


def synthetic_brand_names() -> list[str]:
    """Every brand name the synthetic catalog draws from (two syllables, capitalised)."""
    return [(a + b).capitalize() for a in _SYLLABLES for b in _SYLLABLES if a != b]


@dataclass(frozen=True)
class Structure:
    """The hidden structure of a world's catalog, by item id: what the knobs act on."""

    category: dict[str, int]
    group: dict[str, int]  # sub-cluster ("product type")
    complement: IntArr  # sub-cluster -> its complement sub-cluster


def catalog_structure(config: SynthConfig) -> Structure:
    """Rebuilds the catalog ``generate`` writes for ``config`` (its first draws) and returns its
    structure, for analyses and tests of the knobs."""
    catalog = _build_catalog(config, np.random.default_rng(config.seed))
    ids = [f"i{e}" for e in catalog.external_id.tolist()]
    return Structure(
        category=dict(zip(ids, catalog.cat.tolist(), strict=True)),
        group=dict(zip(ids, catalog.group.tolist(), strict=True)),
        complement=catalog.complement,
    )


def generate(config: SynthConfig, out_dir: Path, progress: bool = True) -> dict[str, int]:
    """Writes out_dir/catalog.csv and out_dir/events.csv; returns counts (users, items, sessions, events).

    events.csv is sorted by ts (ties in generation order).  Request ids are numbered in order of
    request start time, so they also increase with time apart from overlapping requests.
    """
    if config.n_days < 1 or config.n_users < 1:
        raise ValueError("need at least one day and one user")
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(config.seed)
    catalog = _build_catalog(config, rng)
    users = _build_users(config, catalog, rng)
    _write_catalog(out_dir / "catalog.csv", config, catalog, rng)
    sim = _Simulator(config, catalog, users, rng)

    active = np.zeros(config.n_users, bool)
    n_events = 0
    n_requests = 0
    carry: list[IntArr] = [np.zeros(0, np.int64) for _ in range(6)]
    with (out_dir / "events.csv").open("wb") as fh:
        fh.write(EVENTS_HEADER.encode())
        for day in progress_bar(range(config.n_days), progress, desc="synth days", unit="day"):
            buffer = _Buffer([], [], [], [], [], [])
            base = sim.next_request
            request_start = sim.run_day(day, buffer)
            # Renumber the day's requests by start time so ids are globally unique and time-ordered.
            rank = np.empty(request_start.size, np.int64)
            rank[np.argsort(request_start, kind="stable")] = np.arange(request_start.size)
            local = np.concatenate(buffer.request) - base if buffer.request else np.zeros(0, np.int64)
            new = [
                np.concatenate(buffer.user) if buffer.user else np.zeros(0, np.int64),
                np.concatenate(buffer.item) if buffer.item else np.zeros(0, np.int64),
                np.concatenate(buffer.ts) if buffer.ts else np.zeros(0, np.int64),
                np.concatenate(buffer.action) if buffer.action else np.zeros(0, np.int64),
                np.concatenate(buffer.scene) if buffer.scene else np.zeros(0, np.int64),
                base + rank[local],
            ]
            n_requests += int(np.unique(local).size)
            cols = [np.concatenate([c, x]) for c, x in zip(carry, new, strict=True)]
            order = np.argsort(cols[2], kind="stable")
            cols = [c[order] for c in cols]
            # Late events of visits that run past midnight wait for the next day's batch.
            cut = (
                cols[2].size
                if day == config.n_days - 1
                else int(np.searchsorted(cols[2], DAY0_TS + (day + 1) * DAY, side="left"))
            )
            out = [c[:cut] for c in cols]
            carry = [c[cut:] for c in cols]
            active[out[0]] = True
            n_events += cut
            _write_events(fh, out[0], catalog.external_id[out[1]], out[2], out[3], out[4], out[5])

    counts = {
        "users": int(active.sum()),
        "items": config.n_items,
        "sessions": n_requests,
        "events": n_events,
    }
    log.info("synthetic world written to %s: %s", out_dir, counts)
    return counts
