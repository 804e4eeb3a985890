"""The CQ-SID tokenizer (model_export.sid.rqvae) and the group-suffix split
(model_export.sid.clusters) on tiny synthetic catalogs."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from model_export.sid.clusters import place_new_items, split_clusters
from model_export.sid.rqvae import (
    RQVAE,
    RqvaeConfig,
    assign_codes,
    codebook_stats,
    info_nce,
    init_rqvae,
    rqvae_losses,
    train_rqvae,
)

TINY = RqvaeConfig(
    level_sizes=(8, 8, 8), latent_dim=8, hidden=32, batch_size=32, epochs=1, min_steps=200, progress=False
)


def catalog(
    seed: int = 0, n: int = 600, dim: int = 16, n_clusters: int = 24, per_intent: int = 3
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Items in content clusters; each query (intent) leads to the items of ``per_intent``
    content clusters, and its vector is a random direction (a query worded unlike any title).
    Returns items (N, D), pairs (P, 2), queries (Q, D), each item's intent and content cluster."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_clusters, dim))
    cluster = rng.integers(n_clusters, size=n)
    items = (centers[cluster] + 0.3 * rng.normal(size=(n, dim))).astype(np.float32)
    intent = (rng.permutation(n_clusters) % (n_clusters // per_intent))[cluster]
    queries = rng.normal(size=(n_clusters // per_intent, dim)).astype(np.float32)
    searched = np.nonzero(rng.random(n) < 0.7)[0]
    pairs = np.stack([intent[searched], searched], 1).astype(np.int64)
    return items, pairs, queries, intent, cluster


def random_categories(n: int, n_categories: int, unknown: float, seed: int = 0) -> np.ndarray:
    """Categories unrelated to content (so the nearest level-1 code is rarely the category)."""
    rng = np.random.default_rng(seed)
    categories = rng.integers(n_categories, size=n).astype(np.int64)
    categories[rng.random(n) < unknown] = -1
    return categories


def test_level_one_is_the_category_for_every_categorised_item() -> None:
    items, pairs, queries, _, _ = catalog()
    categories = random_categories(len(items), 5, unknown=0.2)
    model = train_rqvae(items, categories, pairs, queries, TINY)
    codes = assign_codes(model, items, categories)
    known = categories >= 0
    assert (codes[known, 0] == categories[known]).all()
    # Without the category the same model picks the nearest code, which here mostly is not it.
    nearest = assign_codes(model, items, np.full(len(items), -1))
    assert (nearest[known, 0] != categories[known]).mean() > 0.3
    assert ((codes[:, 1:] >= 0) & (codes[:, 1:] < 8)).all()
    with pytest.raises(ValueError, match="no level-1 code"):
        assign_codes(model, items[:1], np.array([5]))
    with pytest.raises(ValueError, match="do not fit"):
        train_rqvae(items, random_categories(len(items), 9, 0.0), pairs, queries, TINY)


def test_without_use_category_level_one_is_nearest() -> None:
    items, pairs, queries, _, _ = catalog()
    categories = random_categories(len(items), 5, unknown=0.0)
    model = train_rqvae(items, categories, pairs, queries, replace(TINY, use_category=False))
    assert (assign_codes(model, items, categories) == assign_codes(model, items, categories * 0 - 1)).all()


def test_dead_code_restart_revives_an_unused_code() -> None:
    items, _, _, _, _ = catalog(n=200)
    categories = np.where(
        np.arange(200) % 2 == 0, np.arange(200) % 8 // 2, -1
    )  # categories 0-3, half unknown
    model = init_rqvae(items, categories, TINY)
    far = torch.full((TINY.latent_dim,), 1e3)
    batch = torch.from_numpy(np.nonzero(categories != 3)[0][:64])  # no item of category 3
    cats = torch.from_numpy(categories)[batch]
    level1, level2 = model.codebook(0), model.codebook(1)
    for book, code in ((level1, 3), (level1, 6), (level2, 5)):  # reserved, free, level 2
        book.embed[code] = far
        book.cluster_size[code] = 0.0
        book.embed_sum[code] = 0.0
    out = model(torch.from_numpy(items)[batch], cats)
    assert not (out.codes[:, 1] == 5).any() and not (out.codes[:, 0] == 6).any()
    generator = torch.Generator().manual_seed(0)
    assert model.update_codebooks(out, cats, generator) >= 2

    # The dead level-2 code now sits on one of the batch's level-2 residuals and takes items.
    assert ((out.residuals[1] - level2.embed[5]) ** 2).sum(1).min() < 1e-10
    assert (level2.nearest(out.residuals[1]) == 5).any()
    # The free level-1 code restarts on the latent of an item of unknown category only.
    unknown = out.residuals[0][cats < 0]
    assert ((unknown - level1.embed[6]) ** 2).sum(1).min() < 1e-10
    # The reserved code of category 3 is never restarted, however unused.
    assert torch.equal(level1.embed[3], far)


def test_same_seed_same_codes() -> None:
    items, pairs, queries, _, _ = catalog()
    categories = random_categories(len(items), 5, unknown=0.3)
    first = assign_codes(train_rqvae(items, categories, pairs, queries, TINY), items, categories)
    again = assign_codes(train_rqvae(items, categories, pairs, queries, TINY), items, categories)
    other = assign_codes(
        train_rqvae(items, categories, pairs, queries, replace(TINY, seed=1)), items, categories
    )
    assert (first == again).all()
    assert (first != other).any()


def test_query_pairs_pull_co_clicked_items_into_shared_codes() -> None:
    """Items of different content clusters led to by the same query share level-1 codes more
    often with the InfoNCE term than without it (level 1 unforced, so only content and queries
    decide it)."""
    shared = {False: 0.0, True: 0.0}
    for seed in range(3):
        items, pairs, queries, intent, cluster = catalog(seed)
        none = np.full(len(items), -1)
        a, b = np.triu_indices(len(items), 1)
        across = (intent[a] == intent[b]) & (cluster[a] != cluster[b])
        codes = {}
        for use_query in (False, True):
            config = replace(TINY, use_category=False, use_query=use_query, seed=seed)
            codes[use_query] = assign_codes(train_rqvae(items, none, pairs, queries, config), items, none)
            shared[use_query] += float((codes[use_query][a, 0] == codes[use_query][b, 0])[across].mean())
        assert (codes[False] != codes[True]).any()
    assert shared[True] > 1.5 * shared[False]


def objective(model: RQVAE, items: np.ndarray, pairs: np.ndarray, queries: np.ndarray) -> float:
    x = torch.from_numpy(items)
    with torch.no_grad():
        reconstruction, commitment = rqvae_losses(model, model(x, torch.full((len(x),), -1)), x)
        rows = torch.from_numpy(pairs)
        contrast = info_nce(
            model.encode(x[rows[:, 1]]), model.encode(torch.from_numpy(queries)[rows[:, 0]]),
            rows[:, 1], rows[:, 0], TINY.temperature,
        )  # fmt: skip
    return float(reconstruction + TINY.beta * commitment + TINY.gamma * contrast)


def test_training_lowers_the_loss() -> None:
    items, pairs, queries, _, _ = catalog()
    none = np.full(len(items), -1)
    before = objective(init_rqvae(items, none, TINY), items, pairs, queries)  # train_rqvae's start
    model = train_rqvae(items, none, pairs, queries, TINY)
    assert objective(model, items, pairs, queries) < 0.8 * before


def test_checkpoint_round_trip_gives_the_same_codes() -> None:
    items, pairs, queries, _, _ = catalog(n=200)
    categories = random_categories(len(items), 4, unknown=0.3)
    model = train_rqvae(items, categories, pairs, queries, replace(TINY, min_steps=20))
    copy = RQVAE.from_checkpoint(model.checkpoint())
    assert (assign_codes(copy, items, categories) == assign_codes(model, items, categories)).all()


def test_codebook_stats_by_hand() -> None:
    codes = np.array([[0, 0, 0], [0, 0, 0], [1, 2, 0], [1, 3, 1]])
    stats = codebook_stats(codes, (2, 4, 2))
    assert stats["level1_usage"] == 1.0 and stats["level1_entropy"] == pytest.approx(1.0)
    assert stats["level2_usage"] == 0.75 and stats["level2_entropy"] == pytest.approx(1.5)
    assert stats["level3_entropy"] == pytest.approx(0.8112781)  # p = (3/4, 1/4)
    assert stats["unique_sids"] == 3 and stats["unique_sid_fraction"] == 0.75
    assert stats["largest_cluster"] == 2 and stats["items_per_cluster"] == pytest.approx(4 / 3)


def cluster_codes(sizes: list[int]) -> np.ndarray:
    """(sum(sizes), 3) codes: cluster i (codes (i, i % 3, 7)) repeated sizes[i] times, shuffled."""
    rows = np.repeat(np.arange(len(sizes)), sizes)
    np.random.default_rng(0).shuffle(rows)
    return np.stack([rows, rows % 3, np.full(len(rows), 7)], 1).astype(np.int64)


def test_split_keeps_every_group_within_t_max() -> None:
    sizes = [1, 49, 50, 51, 137, 500]
    codes = cluster_codes(sizes)
    keys = np.random.default_rng(1).permutation(len(codes)).astype(np.int64) * 7919
    groups = split_clusters(codes, keys, t_max=50, g_max=100)
    for cluster, size in enumerate(sizes):
        mine = codes[:, 0] == cluster
        counts = np.bincount(groups[mine])
        assert len(counts) == -(-size // 50)  # ceil(c / t_max) groups, all non-empty
        assert counts.max() <= 50 and counts.max() - counts.min() <= 1
        # Groups are contiguous runs of the key order.
        assert (np.diff(groups[mine][np.argsort(keys[mine])]) >= 0).all()
    # Row order does not matter, only the keys.
    shuffle = np.random.default_rng(2).permutation(len(codes))
    assert (split_clusters(codes[shuffle], keys[shuffle], 50, 100) == groups[shuffle]).all()


def test_split_when_g_max_binds_groups_exceed_t_max() -> None:
    """The documented exception: a cluster of more than t_max * g_max items (5,001 > 50 * 100)
    gets exactly g_max groups of up to ceil(c / g_max) = 51 items."""
    codes = cluster_codes([5001])
    groups = split_clusters(codes, np.arange(5001, dtype=np.int64), t_max=50, g_max=100)
    counts = np.bincount(groups)
    assert len(counts) == 100 and counts.max() == 51 and counts.min() == 50


def test_place_new_items_keeps_existing_and_fills_least_filled_groups() -> None:
    cluster = [4, 1, 7]
    existing = np.array([[*cluster, g] for g, n in enumerate([50, 48, 49]) for _ in range(n)], dtype=np.int64)
    before = existing.copy()
    new_codes = np.array([cluster] * 5 + [[9, 9, 9]] * 3, dtype=np.int64)
    new_keys = np.array([30, 10, 20, 40, 50, 3, 1, 2], dtype=np.int64)
    groups = place_new_items(existing, new_codes, new_keys, t_max=50, g_max=4)
    assert (existing == before).all()  # existing SIDs are read, never changed
    # In key order: g1 (48) → g1 (49 ties g2, lowest g) → g2 → all full: open g3 → g3.
    assert groups[:5][np.argsort(new_keys[:5])].tolist() == [1, 1, 2, 3, 3]
    assert groups[5:].tolist() == [0, 0, 0]  # a new cluster opens group 0
    # Every group full and g_max reached: the least filled group (lowest g on ties).
    full = place_new_items(existing, np.array([cluster] * 3), np.arange(3), t_max=48, g_max=3)
    assert full.tolist() == [1, 1, 2]
    # Row order does not matter, only the keys.
    shuffle = np.random.default_rng(0).permutation(len(new_codes))
    assert (place_new_items(existing, new_codes[shuffle], new_keys[shuffle], 50, 4) == groups[shuffle]).all()
