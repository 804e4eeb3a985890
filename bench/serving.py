"""Serving speed on a 1M-item catalog: the stage floors, the in-process pipeline (NSP alone and
every channel merged, for recommendation and for search requests), the bundle's size and load
time, and HTTP under a load ladder — all in one run, so the ratios hold on a noisy machine.

    .venv/bin/python bench/serving.py [--items 1000000] [--k 200] [--skip-http] [--no-search]

1. A bundle is published through the real ``publish`` path from an NSP encoder with a 1M-item
   vocabulary (64-d, untrained weights: speed depends on the shapes, not on what was learned)
   and cached under ``var/bench/serving/``. Its run directory also holds an item-to-item table
   (``index.i2i``) built by ``ItemToItem.build`` from synthetic engaged sessions whose items
   follow a power law (``Popularity``), and ``channels.json`` (history defaults, the i2i
   params, default fusion), so the bundle carries every channel. With ``--search`` (the
   default) the run directory also gets a search side (``build_text_side``): a synthetic product
   title per item (``item_titles``), the tokenizer trained on them, a BM25 index, an untrained
   dense two-tower (random initial weights) written by ``write_dense``, and ``text.json``; the
   NSP encoder still reads no query. Search bundles are cached apart (``-search``).
2. Users with 20 sessions of history each (items from the same power law) are written to a real
   Redis (database 15, flushed).
3. Stage floors, each measured raw: one Redis history read (LRANGE), one ONNX Runtime encode at
   batch 1 on a real user's tokens, one HNSW query at the served k and ef, and exact search
   (numpy, all items) for reference.
4. The in-process recall pipeline (``service.recall.RecallPipeline`` with the service's
   channels, no HTTP) on the same users: NSP alone (``channels=["nsp"]``: what was served before
   the channel merge, through today's pipeline) and every channel (``channels=None``), each with
   seen items excluded and included, in ``--rounds`` rounds (each user's request in all four
   back to back, the order rotating); p50/p99 per round and pooled, per-channel and per-stage
   means from the pipeline's metrics. With a search side, then search requests (a query of 1-4
   words from the title of an item in the user's history, seen items excluded) the same way:
   bm25 alone, dense alone, NSP alone, every channel merged.
5. The bundle: bytes per file, ``LoadedBundle.load`` wall time (page cache warm), and the i2i
   table's memory at each ``--i2i-sweep`` N (cut from one table built at the largest N) with
   the i2i scoring time per request.
6. HTTP end to end: a real ``nsprecall serve`` driven by locust (headless, ``FastHttpUser``,
   constant throughput per user), an open-loop asyncio client at each rate of the ladder, and
   wrk; p50/p90/p99, achieved throughput, failures. Once per server variant (``--variants``).
   The load generators run on the same two cores as the server. Requests name no channels, so
   they run every channel the bundle carries. ``--skip-http`` leaves this out: the report then
   repeats the previous report's HTTP numbers under a heading that gives their date and commit.

Writes ``docs/benchmarks/serving.{json,md,png}``.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import redis.asyncio as aioredis
from benchlib import (
    committed_at,
    counter_values,
    free_port,
    histogram_means_ms,
    latency_summary,
    provenance,
    start_serve,
    wait_for,
)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from index.ann import ItemIndex, exact_top_k  # noqa: E402
from index.bm25 import BM25_FILES, BM25_INDICES, build_bm25  # noqa: E402
from index.bundle import (  # noqa: E402
    INDEX_FILE,
    Bm25Params,
    ChannelsSpec,
    TextSpec,
    latest_version,
    read_manifest,
    verify_files,
)
from index.dense import DENSE_FILES  # noqa: E402
from index.features import (  # noqa: E402
    ACTIONS,
    CLICK,
    Event,
    build_tokens,
    group_sessions,
    stack_left_padded,
)
from index.i2i import I2I_FILE, I2IParams, ItemToItem, i2i_candidates  # noqa: E402
from index.text import normalize_text  # noqa: E402
from index.tokenizer import TOKENIZER_FILE, train_tokenizer  # noqa: E402
from index.vocab import Vocabulary  # noqa: E402
from model_export.progress import progress_bar  # noqa: E402
from service.metrics import Metrics  # noqa: E402
from service.recall import RecallPipeline, RecallQuery, standard_channels  # noqa: E402
from service.registry import settle_memory  # noqa: E402
from service.runtime import LoadedBundle  # noqa: E402
from service.settings import Settings  # noqa: E402
from service.store import RedisSessionStore  # noqa: E402

log = logging.getLogger("bench.serving")

WORK = ROOT / "var" / "bench" / "serving"
OUT = ROOT / "docs" / "benchmarks"
REDIS_URL = "redis://127.0.0.1:6379/15"
KEY_PREFIX = "nspbench"
SCENES = ["default", "search", "home", "cart"]
DRIVERS = ("locust", "open-loop", "wrk")
DAY0_TS = 1767225600
# Part of the cached bundle's directory name: bump it when build_bundle's output changes, so an
# older cached bundle is rebuilt rather than measured. 2: the i2i table and channels.json.
BUNDLE_LAYOUT = 2
ZIPF_EXPONENT = 1.0  # item popularity ∝ rank^-s
I2I_BUILD = "i2i-build.json"  # beside the cached bundles: how the table was made, and its build time
TEXT_BUILD = "text-build.json"  # beside the cached bundles: the search side's build times and facts
TITLES_FILE = "titles.txt"  # beside the cached bundles: one item title a line, in label order
TEXT_FILES = (TOKENIZER_FILE, *BM25_FILES, *DENSE_FILES)  # the bundle files of the search side

# The in-process variants: channels (None: all the bundle carries) and exclude_seen.
PATHS: dict[str, tuple[list[str] | None, bool]] = {
    "nsp_unseen": (["nsp"], True),
    "merged_unseen": (None, True),
    "nsp_seen": (["nsp"], False),
    "merged_seen": (None, False),
}
PATH_LABELS = {
    "nsp_unseen": "NSP only, exclude_seen=true",
    "merged_unseen": "merged (all channels), exclude_seen=true",
    "nsp_seen": "NSP only, exclude_seen=false",
    "merged_seen": "merged (all channels), exclude_seen=false",
}
# The search requests (a query on every request, seen items excluded as the API's default).
SEARCH_PATHS: dict[str, tuple[list[str] | None, bool]] = {
    "bm25_search": (["bm25"], True),
    "dense_search": (["dense"], True),
    "nsp_search": (["nsp"], True),
    "merged_search": (None, True),
}
PATH_LABELS.update(
    {
        "bm25_search": "bm25 only",
        "dense_search": "dense only",
        "nsp_search": "NSP only (the query unread)",
        "merged_search": "merged (all channels)",
    }
)
TARGET_RATIO = 1.3


# --- the bundle -----------------------------------------------------------------------------


class Popularity:
    """Item popularity with a power law: the item of popularity rank r (from 1) is drawn with
    probability ∝ r^-``exponent``; ranks are shuffled over the labels, so popularity has nothing
    to do with an item's id, category or embedding."""

    def __init__(self, n_items: int, exponent: float = ZIPF_EXPONENT, seed: int = 3) -> None:
        self.by_rank = np.random.default_rng(seed).permutation(n_items)  # label of each rank
        weights = np.arange(1, n_items + 1, dtype=np.float64) ** -exponent
        self._cdf = np.cumsum(weights) / weights.sum()

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        rank = np.searchsorted(self._cdf, rng.random(size), side="right")
        return self.by_rank[np.minimum(rank, len(self._cdf) - 1)]


def engaged_rows(
    n_rows: int, popularity: Popularity, seed: int = 4
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """About ``n_rows`` engaged (owner, session position, item label) rows in
    ``ItemToItem.build``'s order: owners with 1 + Poisson(3) engaged sessions of 1 + Poisson(1.5)
    engaged items each, every item drawn independently from ``popularity``.

    Independent draws are the conservative case for the table's size: every co-occurrence is
    as likely as any to be a new neighbour, so rows fill towards N faster than with coherent
    sessions (which repeat the same pairs), while the power law leaves the long tail with few
    or none, as a real catalog's tail has.
    """
    rng = np.random.default_rng(seed)
    n_owners = max(1, n_rows // 10)  # 4 sessions x 2.5 items each on average
    per_owner = 1 + rng.poisson(3.0, n_owners)
    session_owner = np.repeat(np.arange(n_owners, dtype=np.int64), per_owner)
    first = np.repeat(np.cumsum(per_owner) - per_owner, per_owner)
    session_position = np.arange(len(session_owner), dtype=np.int64) - first
    per_session = 1 + rng.poisson(1.5, len(session_owner))
    owner = np.repeat(session_owner, per_session)
    position = np.repeat(session_position, per_session)
    item = popularity.sample(rng, len(owner)).astype(np.int64)
    return owner, position, item


def truncate_neighbours(table: ItemToItem, neighbours: int) -> ItemToItem:
    """The table with each row cut to its ``neighbours`` strongest entries: rows are stored
    strongest first, so this is what ``ItemToItem.build`` with that N returns."""
    lengths = np.diff(table.indptr)
    rank = np.arange(table.nnz) - np.repeat(table.indptr[:-1], lengths)
    keep = rank < neighbours
    indptr = np.concatenate([[0], np.cumsum(np.minimum(lengths, neighbours))]).astype(np.int64)
    return ItemToItem(indptr, table.indices[keep], table.weights[keep])


def sweep_table_path(root: Path, neighbours: int) -> Path:
    return root / f"i2i-n{neighbours}.npz"


def build_i2i(root: Path, n_items: int, n_rows: int, neighbours: int, popularity: Popularity) -> ItemToItem:
    """The co-occurrence table at ``neighbours`` per item from ``engaged_rows``; the table and
    how it was made (rows, build time) are kept beside the bundles for the N sweep."""
    owner, position, item = engaged_rows(n_rows, popularity)
    started = time.perf_counter()
    table = ItemToItem.build(owner, position, item, n_items, I2IParams(neighbours=neighbours))
    build_s = time.perf_counter() - started
    log.info("i2i table: %d rows -> %d neighbours in %.0f s", len(item), table.nnz, build_s)
    table.save(sweep_table_path(root, neighbours))
    facts = {
        "rows": len(item),
        "owners": int(owner[-1]) + 1 if len(owner) else 0,
        "sessions": len(np.unique(owner * (int(position.max()) + 1) + position)),
        "distinct_items": len(np.unique(item)),
        "zipf_exponent": ZIPF_EXPONENT,
        "neighbours": neighbours,
        "build_s": build_s,
        "generator": "bench/serving.py engaged_rows: independent power-law draws",
    }
    (root / I2I_BUILD).write_text(json.dumps(facts, indent=2))
    return table


def bundle_root(items: int, dim: int, embeddings: str, neighbours: int, search: bool) -> Path:
    name = f"bundles-{items}-{dim}-{embeddings}-v{BUNDLE_LAYOUT}-i2i{neighbours}"
    return WORK / (f"{name}-search" if search else name)  # the search variant apart: other files


def build_bundle(
    root: Path,
    n_items: int,
    dim: int,
    embeddings: str,
    popularity: Popularity,
    neighbours: int,
    sweep_max: int,
    i2i_rows: int,
    search: bool,
) -> Path:
    """Publish (once) a bundle of an untrained NSP encoder over ``n_items`` items, with an i2i
    table at ``neighbours`` per item and ``channels.json``; with ``search``, also the search side
    (``build_text_side``: tokenizer, BM25, an untrained dense two-tower and ``text.json``).

    ``isotropic``: the encoder's random initial weights, so item vectors are near-uniform on
    the sphere — the worst case for HNSW, and unlike trained embeddings. ``clustered``: item
    embeddings placed around 1,000 category centroids in a 16-dimensional subspace (trained
    embeddings concentrate like that), and the user head projected onto the subspace the item
    vectors span, so queries live where items live, as after training.

    The i2i table is built once at ``sweep_max`` neighbours (kept for the N sweep) and cut to
    ``neighbours`` for the bundle. The popularity fallback is the power law's 2,000 head items.
    """
    if (version := latest_version(root)) is not None:
        directory = root / str(version)
        spec = read_manifest(directory).channels
        if (
            spec is not None
            and spec.i2i is not None
            and spec.i2i.neighbours == neighbours
            and sweep_table_path(root, sweep_max).is_file()
            and (not search or _has_text_side(root, directory))
        ):
            return directory
        raise RuntimeError(f"{root} holds a bundle without the expected i2i table or search side: remove it")
    import torch

    from model_export.evaluate import item_matrix
    from model_export.model import NSPConfig, NSPModel
    from model_export.publish import QualityGate, publish
    from model_export.train import CHANNELS, CHECKPOINT, METRICS, POPULARITY, TrainConfig

    rng = np.random.default_rng(0)
    ids = [f"i{n}" for n in range(n_items)]
    categories = [f"c{n}" for n in rng.integers(0, 1000, n_items)]
    prices = rng.lognormal(3.0, 1.0, n_items).round(2).tolist()
    vocab = Vocabulary.build(ids, categories, prices, SCENES)
    config = NSPConfig(n_items, vocab.n_category_tokens, vocab.n_scene_tokens, dim=dim)
    torch.manual_seed(0)
    model = NSPModel(config)
    if embeddings == "clustered":
        _cluster(model, np.asarray([int(c[1:]) for c in categories]), rng)
    run = root.parent / f"run-{root.name}"
    run.mkdir(parents=True, exist_ok=True)
    root.mkdir(parents=True, exist_ok=True)
    train_config = TrainConfig()
    torch.save(
        {
            "model_config": config.to_dict(),
            "train_config": asdict(train_config),  # as train saves it: the nested text config as a dict
            "state_dict": model.state_dict(),
            "best_epoch": 0,
            "data": {"data_start_ts": DAY0_TS, "val_start_ts": DAY0_TS, "test_start_ts": DAY0_TS},
        },
        run / CHECKPOINT,
    )
    vocab.save(run)
    top = [ids[i] for i in popularity.by_rank[:2000].tolist()]
    (run / POPULARITY).write_text(json.dumps({"*": top, **{s: top for s in SCENES}}))
    (run / METRICS).write_text(json.dumps({"val": {"hr@100": 0.0}}))
    full = build_i2i(root, n_items, i2i_rows, sweep_max, popularity)
    truncate_neighbours(full, neighbours).save(run / I2I_FILE)
    del full
    channels = ChannelsSpec(i2i=I2IParams(neighbours=neighbours))  # default history and fusion
    (run / CHANNELS).write_text(channels.model_dump_json(indent=2))
    if search:
        build_text_side(run, root, np.asarray([int(c[1:]) for c in categories]))
    started = time.perf_counter()
    path = publish(run, root, gate=QualityGate(force=True))
    log.info("published the %d-item bundle in %.0f s", n_items, time.perf_counter() - started)
    if I2I_FILE not in read_manifest(path).files:
        raise RuntimeError(f"publish left {I2I_FILE} out of {path}")
    if search and not _has_text_side(root, path):
        raise RuntimeError(f"publish left the search side out of {path}")
    np.save(root / "item_vectors.npy", item_matrix(model, vocab))  # for the exact-search reference
    return path


def item_titles(category: np.ndarray, seed: int = 5) -> list[str]:
    """A product title per item, in label order, from the ``search_vocab`` tables and written by
    the search world's own title writer: category c is taxonomy category c mod 50 (the larger c
    with a model-line qualifier on their product types, as the search world cycles them), each
    item one of its category's 8 product types and 8 brands, with the attribute values its
    type's family allows. Deterministic for a seed; unrelated to popularity and embeddings."""
    from model_export.search_vocab import ATTRIBUTES, FAMILIES, TAXONOMY, TYPES_PER_CATEGORY, VALUES, Forms
    from model_export.search_world import type_qualifier, write_title  # its title writer, reused as is
    from model_export.synth import BRANDS_PER_CATEGORY, synthetic_brand_names

    rng = np.random.default_rng(seed)
    n_categories = int(category.max()) + 1
    types = []
    for c in range(n_categories):
        cycle = c // len(TAXONOMY)
        names = (
            f"{type_qualifier(cycle)} {t.value}" if cycle else t.value
            for t in TAXONOMY[c % len(TAXONOMY)].types
        )
        types.append([Forms(name, (name.title(),), ()) for name in names])
    brand_names = synthetic_brand_names()
    brands = [Forms(name, (name,), ()) for name in brand_names]
    category_brands = rng.integers(0, len(brands), (n_categories, BRANDS_PER_CATEGORY))
    tables = {
        family: [(k, name, VALUES[table[name]]) for k, name in enumerate(ATTRIBUTES[1:]) if name in table]
        for family, table in FAMILIES.items()
    }
    kind = rng.integers(0, TYPES_PER_CATEGORY, len(category))
    brand = category_brands[category, rng.integers(0, BRANDS_PER_CATEGORY, len(category))]
    draws = rng.random((len(category), 16))  # as the search world: 6 attribute draws, 10 for the title
    titles = []
    for i in progress_bar(range(len(category)), desc="titles", leave=False):
        c, r = int(category[i]), draws[i]
        forms = {"product_type": types[c][kind[i]], "brand": brands[brand[i]]}
        for k, name, values in tables[TAXONOMY[c % len(TAXONOMY)].family]:
            forms[name] = values[int(r[k] * len(values))]
        titles.append(write_title(forms, r[6:]))
    return titles


def build_text_side(run: Path, root: Path, category: np.ndarray) -> None:
    """The search side of the run directory, as ``train`` builds it for a log with queries, but
    on synthetic titles (``item_titles``) and with an UNTRAINED dense two-tower (random initial
    weights, ``DenseConfig()`` shapes: the channel's speed depends on the shapes, not on what
    was learned). ``write_dense`` tunes ef_search as training does (recall 0.95 at k = 100 on
    1,000 item titles as queries). The titles and the build times are kept beside the bundles."""
    import torch

    from model_export.text.build import TEXT_SPEC_FILE
    from model_export.text.dense import DenseConfig, TwoTower, item_vectors, write_dense

    timings: dict[str, float] = {}

    def timed(step: str, started: float) -> None:
        timings[step] = time.perf_counter() - started
        log.info("search side: %s in %.1f s", step, timings[step])

    started = time.perf_counter()
    titles = item_titles(category)
    (root / TITLES_FILE).write_text("\n".join(titles) + "\n")
    timed("titles_s", started)
    started = time.perf_counter()
    tokenizer = train_tokenizer(titles)
    tokenizer.save(run / TOKENIZER_FILE)
    timed("tokenizer_s", started)
    params = Bm25Params()
    started = time.perf_counter()
    bm25 = build_bm25(titles, tokenizer, params)
    timed("bm25_build_s", started)
    started = time.perf_counter()
    bm25.save(run)
    timed("bm25_save_s", started)
    config = DenseConfig(progress=False)
    torch.manual_seed(config.seed)
    model = TwoTower(tokenizer.vocab_size, config).eval()
    started = time.perf_counter()
    item_vectors(model, titles, tokenizer)  # timed alone: write_dense computes them again
    timed("dense_item_vectors_s", started)
    started = time.perf_counter()
    dense = write_dense(run, model, titles, tokenizer, config)
    timed("dense_write_s", started)
    spec = TextSpec(max_query_tokens=config.max_query_tokens, bm25=params, dense=dense)
    (run / TEXT_SPEC_FILE).write_text(spec.model_dump_json(indent=2))
    facts = {
        **timings,
        "items": len(titles),
        "title_words_mean": float(np.mean([len(t.split()) for t in titles[:100_000]])),
        "title_examples": titles[:5],
        "tokenizer_vocab_size": tokenizer.vocab_size,
        "bm25_terms": bm25.n_terms,
        "bm25_postings": len(np.load(run / BM25_INDICES, mmap_mode="r")),  # (piece, item) scores
        "dense_config": config.to_dict(),
        "dense_hnsw": dense.hnsw.model_dump(),
        "dense_weights": "untrained (random initial weights, seed 0)",
        "build_threads": 2,  # write_dense's HNSW build threads
        "title_generator": "bench/serving.py item_titles: search_vocab tables, search_world's title writer",
    }
    (root / TEXT_BUILD).write_text(json.dumps(facts, indent=2))


def _has_text_side(root: Path, directory: Path) -> bool:
    text = read_manifest(directory).text
    return (
        text is not None
        and text.bm25 is not None
        and text.dense is not None
        and (root / TEXT_BUILD).is_file()
        and (root / TITLES_FILE).is_file()
    )


def _cluster(model: Any, category: np.ndarray, rng: np.random.Generator, rank: int = 16) -> None:
    import torch

    from index.vocab import ITEM_OFFSET

    dim = model.config.dim
    basis = rng.normal(size=(rank, dim)) / np.sqrt(rank)
    centroids = rng.normal(size=(int(category.max()) + 1, rank))
    z = centroids[category] + 0.5 * rng.normal(size=(len(category), rank))
    rows = 0.05 * (z @ basis) + 0.002 * rng.normal(size=(len(category), dim))
    with torch.no_grad():
        model.item.weight[ITEM_OFFSET:] = torch.from_numpy(rows.astype(np.float32))
        model.category.weight.zero_()
        model.price.weight.zero_()
        model.item_head.bias.zero_()
        # the subspace the item vectors span (before normalisation): item_head(basis rows)
        span = model.item_head.weight @ torch.from_numpy(basis.T.astype(np.float32))  # (dim, rank)
        q, _ = torch.linalg.qr(span)
        projector = q @ q.T
        for head in model.user_heads:
            head.weight.copy_(projector @ head.weight)
            head.bias.zero_()


# --- users in Redis ---------------------------------------------------------------------------


def make_events(n_users: int, sessions: int, popularity: Popularity, seed: int = 1) -> dict[str, list[Event]]:
    """Each user: ``sessions`` request sessions, one a day, 3-6 events each, items drawn from
    ``popularity`` (the i2i rows a request reads are then as long as a real user's would be)."""
    rng = np.random.default_rng(seed)
    users: dict[str, list[Event]] = {}
    for u in range(n_users):
        user = f"u{u}"
        events = []
        for s in range(sessions):
            ts = DAY0_TS + s * 86400 + int(rng.integers(0, 86400))
            scene = SCENES[int(rng.integers(0, len(SCENES)))]
            count = int(rng.integers(3, 7))
            for e, label in enumerate(popularity.sample(rng, count).tolist()):
                action = ACTIONS[int(rng.integers(0, len(ACTIONS)))]
                events.append(Event(user, f"i{label}", ts + e, action, scene, f"{user}-r{s}"))
        users[user] = events
    return users


async def seed_redis(users: dict[str, list[Event]]) -> RedisSessionStore:
    raw = aioredis.Redis.from_url(REDIS_URL)
    await raw.flushdb()
    await raw.aclose()
    store = RedisSessionStore(REDIS_URL, key_prefix=KEY_PREFIX, timeout_s=5.0)
    batch: list[Event] = []
    for events in users.values():
        batch.extend(events)
        if len(batch) > 5000:
            await store.append(batch)
            batch = []
    await store.append(batch)
    return store


# --- floors and the pipeline ------------------------------------------------------------------


async def measure_in_process(
    bundle: LoadedBundle,
    items: np.ndarray,
    users: dict[str, list[Event]],
    k: int,
    repeats: int,
    rounds: int,
    titles: list[str] | None,
) -> dict[str, Any]:
    """The stage floors, the ef ladder and the recommendation paths; with ``titles`` (a bundle
    with a search side) the search requests too."""
    store = await seed_redis(users)
    raw = aioredis.Redis.from_url(REDIS_URL)
    picks = pick_users(users, repeats)
    manifest = bundle.manifest
    limit = Settings.model_fields["history_sessions"].default

    fetch = []
    for user in picks:
        started = time.perf_counter()
        await raw.lrange(store.key(user), 0, limit - 1)
        fetch.append(time.perf_counter() - started)

    tokens = []
    for user in picks:
        events = (await store.history(user, limit, seen=False)).events
        sequence = build_tokens(
            group_sessions(events),
            "default",
            DAY0_TS + 40 * 86400,
            bundle.vocab,
            manifest.encoder.max_sessions,
            manifest.encoder.max_items_per_session,
        )
        tokens.append(stack_left_padded([sequence]))
    encode, vectors = [], []
    for t in tokens:
        started = time.perf_counter()
        vectors.append(bundle.encode(t))
        encode.append(time.perf_counter() - started)

    # the benchmark users' vectors: real encoder outputs, reused by bench/ann_compare.py
    np.save(bundle.directory.parent / "queries.npy", np.concatenate(vectors))
    ann = []
    for v in vectors:
        started = time.perf_counter()
        bundle.search(v, k)
        ann.append(time.perf_counter() - started)

    exact = []
    for v in vectors[: min(50, len(vectors))]:
        started = time.perf_counter()
        exact_top_k(items, v, k, manifest.hnsw.space)
        exact.append(time.perf_counter() - started)

    # ef ladder on the bundle's own index file: recall@k vs exact and query latency per ef
    manifest_hnsw = manifest.hnsw
    index = ItemIndex.load(
        bundle.directory / INDEX_FILE, manifest.embedding_dim, manifest.item_count, manifest_hnsw
    )
    queries = np.concatenate(vectors[:200])
    exact_labels = exact_top_k(items, queries, k, manifest_hnsw.space)
    ladder = []
    for ef in sorted({k, round(1.5 * k), 2 * k, 3 * k, 4 * k, manifest_hnsw.ef_search}):
        recall = index.recall_at(queries, exact_labels, ef)
        tuned = ItemIndex(index._index, manifest_hnsw.model_copy(update={"ef_search": ef}))
        timings = []
        for q in queries:
            started = time.perf_counter()
            tuned.search(q[None], k)
            timings.append(time.perf_counter() - started)
        ladder.append({"ef": ef, "recall": recall, **latency_summary(timings)})
    del index, tuned

    paths = await compare_paths(bundle, store, picks, k, rounds, limit)
    paths["p50_ratios"] = p50_ratios(
        paths["paths"],
        [("merged_unseen", "nsp_unseen"), ("merged_seen", "nsp_unseen"), ("merged_seen", "nsp_seen")],
    )
    search: dict[str, Any] = {}
    if titles is not None:
        texts = search_queries(users, picks, titles, bundle.vocab)
        search = await compare_paths(bundle, store, picks, k, rounds, limit, SEARCH_PATHS, texts)
        search["p50_ratios"] = p50_ratios(
            search["paths"], [("merged_search", "nsp_search"), ("merged_search", "bm25_search")]
        )
        search["queries"] = {
            "count": len(texts),
            "distinct": len(set(texts)),
            "words_mean": float(np.mean([len(q.split()) for q in texts])),
            "examples": texts[:8],
        }
    await store.close()
    await raw.aclose()
    floors = {
        "redis_fetch": latency_summary(fetch),
        "encode": latency_summary(encode),
        "hnsw": latency_summary(ann),
        "exact_search": latency_summary(exact),
    }
    floor_sum = sum(floors[s]["p50_ms"] for s in ("redis_fetch", "encode", "hnsw"))
    nsp_only = paths["paths"]["nsp_unseen"]["pooled"]
    return {
        "floors": floors,
        "floor_sum_p50_ms": floor_sum,
        "ann_recall_at_k": next(r["recall"] for r in ladder if r["ef"] == manifest_hnsw.ef_search),
        "ef_ladder": ladder,
        "pipeline": nsp_only,  # the NSP-only path, as this key held before the channel merge
        "pipeline_over_floors": nsp_only["p50_ms"] / floor_sum,
        **paths,
        **({"search": search} if search else {}),
    }


def pick_users(users: dict[str, list[Event]], repeats: int) -> list[str]:
    names = list(users)
    rng = np.random.default_rng(2)
    return [names[int(i)] for i in rng.integers(0, len(names), repeats)]


async def compare_paths(
    bundle: LoadedBundle,
    store: RedisSessionStore,
    picks: list[str],
    k: int,
    rounds: int,
    limit: int,
    paths: dict[str, tuple[list[str] | None, bool]] = PATHS,
    queries: list[str] | None = None,
) -> dict[str, Any]:
    """Every variant of ``paths`` over the same users, in ``rounds`` rounds. Within a round each
    user's request runs in every variant back to back, the variants' order rotating from user to
    user: a slow spell of the shared machine (or a cold cache for the first of the four) lands on
    all variants alike, so their ratio holds even when the absolute times move. ``queries``: the
    search text of each request (one per pick), for search requests."""
    defaults = Settings.model_fields
    timeout_s = defaults["channel_timeout_s"].default
    executor = ThreadPoolExecutor(defaults["cpu_workers"].default, thread_name_prefix="nsp-cpu")

    def pipeline_of() -> tuple[RecallPipeline, Metrics]:
        metrics = Metrics()  # one per variant: its channel and stage timings stay apart
        channels = standard_channels(executor, metrics)
        return RecallPipeline(
            store, channels, metrics, history_sessions=limit, channel_timeout_s=timeout_s
        ), metrics

    def query(i: int, name: str) -> RecallQuery:
        channels, exclude_seen = paths[name]
        text = None if queries is None else queries[i]
        return RecallQuery(user_id=picks[i], k=k, exclude_seen=exclude_seen, channels=channels, query=text)  # type: ignore[arg-type]

    per_round: dict[str, list[list[float]]] = {name: [] for name in paths}
    incomplete = {name: 0 for name in paths}
    load_before = os.getloadavg()
    try:
        for name in paths:  # warm-up, on pipelines of its own so the metrics below exclude it
            warm, _ = pipeline_of()
            for i in range(min(20, len(picks))):
                await warm.recall(bundle, query(i, name))
        pipelines = {name: pipeline_of() for name in paths}
        order = list(paths)
        for r in range(rounds):
            timings: dict[str, list[float]] = {name: [] for name in paths}
            for i in range(len(picks)):
                shift = (i + r) % len(order)
                for name in order[shift:] + order[:shift]:
                    started = time.perf_counter()
                    response = await pipelines[name][0].recall(bundle, query(i, name))
                    timings[name].append(time.perf_counter() - started)
                    if response.source != "model" or len(response.items) != k or response.degraded:
                        incomplete[name] += 1
            for name in paths:
                per_round[name].append(timings[name])
                log.info("round %d %s: %s", r + 1, name, latency_summary(timings[name]))
    finally:
        executor.shutdown(wait=True)

    results: dict[str, Any] = {}
    for name, (_, metrics) in pipelines.items():
        answers = rounds * len(picks)
        results[name] = {
            "label": PATH_LABELS[name],
            "rounds": [latency_summary(t) for t in per_round[name]],
            "pooled": latency_summary([x for t in per_round[name] for x in t]),
            "channels_mean": histogram_means_ms(metrics.registry, "nsp_channel_duration_seconds", "channel"),
            "stages_mean": histogram_means_ms(metrics.registry, "nsp_recall_stage_duration_seconds", "stage"),
            # of the k items of an answer, how many each channel proposed (an item may count twice)
            "items_per_answer": {
                channel: value / answers
                for channel, value in counter_values(metrics.registry, "nsp_channel_items", "channel").items()
                if value
            },
            "incomplete_answers": incomplete[name],
        }
    # the machine's 1-minute load average around the comparison: above the core count, something
    # else was running too
    load = {"before": load_before[0], "after": os.getloadavg()[0], "cpus": os.cpu_count()}
    return {"paths": results, "loadavg_1m": load}


def p50_ratios(results: dict[str, Any], pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """p50 of the first variant of each pair over the second's, per round and pooled."""
    ratios = {}
    for merged, base in pairs:
        ratios[f"{merged}/{base}"] = {
            "rounds": [
                m["p50_ms"] / b["p50_ms"]
                for m, b in zip(results[merged]["rounds"], results[base]["rounds"], strict=True)
            ],
            "pooled": results[merged]["pooled"]["p50_ms"] / results[base]["pooled"]["p50_ms"],
        }
    return ratios


def search_queries(
    users: dict[str, list[Event]], picks: list[str], titles: list[str], vocab: Vocabulary, seed: int = 6
) -> list[str]:
    """One query per request: 1-4 words (as many of each), in title order, stopwords apart, of
    the title of an item from the user's own history (the item itself is seen, so excluded from
    the answer; items sharing its words are not), normalised as the API does. Seeded."""
    from model_export.search_vocab import STOPWORDS
    from model_export.search_world import tokens

    rng = np.random.default_rng(seed)
    queries = []
    for user in picks:
        events = users[user]
        label = vocab.item_index(events[int(rng.integers(0, len(events)))].item_id)
        assert label is not None  # the users' items are drawn from the catalog
        title = titles[label]
        words = [w for w in tokens(title) if w not in STOPWORDS] or [title]
        keep = np.sort(rng.choice(len(words), min(len(words), int(rng.integers(1, 5))), replace=False))
        queries.append(normalize_text(" ".join(words[j] for j in keep)))
    return queries


def measure_i2i(
    root: Path, bundle: LoadedBundle, users: dict[str, list[Event]], k: int, repeats: int, sweep: list[int]
) -> dict[str, Any]:
    """The i2i table at each N of ``sweep`` at this catalog size: memory (measured on the
    realistic table, and for a full table, every row N long) and the channel's scoring time per
    request (``i2i_candidates`` on the benchmark users, seen items excluded, as served)."""
    spec = bundle.manifest.channels
    assert spec is not None and spec.i2i is not None
    n_items = bundle.vocab.n_items
    full = ItemToItem.load(sweep_table_path(root, max(sweep)), n_items)
    picks = pick_users(users, repeats)
    requests = []
    for user in picks:
        sessions = group_sessions(users[user])
        seen = {bundle.vocab.item_index(item) for s in sessions for item, _ in s.items}
        requests.append((sessions, np.asarray(sorted(x for x in seen if x is not None), dtype=np.int64)))
    engaged = [
        sum(1 for s in sessions[-spec.i2i.recent_sessions :] for _, action in s.items if action >= CLICK)
        for sessions, _ in requests
    ]
    rows = []
    for n in sorted(sweep):
        table = truncate_neighbours(full, n)
        params = spec.i2i.model_copy(update={"neighbours": n})
        lengths = np.diff(table.indptr)
        timings, found = [], []
        for sessions, excluded in requests[:20]:  # warm-up
            i2i_candidates(sessions, bundle.vocab, table, params, k, excluded)
        for sessions, excluded in requests:
            started = time.perf_counter()
            labels, _ = i2i_candidates(sessions, bundle.vocab, table, params, k, excluded)
            timings.append(time.perf_counter() - started)
            found.append(len(labels))
        rows.append(
            {
                "neighbours": n,
                "full_bytes_per_item": 8 + 8 * n,  # indptr int64 + (int32 label, float32 weight) each
                "full_bytes": (8 + 8 * n) * n_items + 8,
                "nnz": table.nnz,
                "mean_neighbours": table.nnz / n_items,
                "items_without_neighbours": int((lengths == 0).sum()),
                "items_with_full_rows": int((lengths == n).sum()),
                "bytes": table.nbytes,
                "bytes_per_item": table.nbytes / n_items,
                "candidates_mean": float(np.mean(found)),
                "candidates_at_k": int(sum(1 for f in found if f == k)),
                **{f"score_{q}": v for q, v in latency_summary(timings).items()},
            }
        )
        log.info("i2i N=%d: %s", n, rows[-1])
    facts = json.loads((root / I2I_BUILD).read_text())
    return {
        "build": facts,
        "served_neighbours": spec.i2i.neighbours,
        "recent_sessions": spec.i2i.recent_sessions,
        "query_items_mean": float(np.mean(engaged)),
        "sweep": rows,
    }


def measure_bundle(directory: Path, repeats: int) -> dict[str, Any]:
    """Bytes per file and ``LoadedBundle.load`` wall time, and of that the checksums
    (``verify_files``) and the i2i table's own load. The files are in the page cache (just
    published or read): a cold disk adds its read time."""
    files = {path.name: path.stat().st_size for path in sorted(directory.iterdir()) if path.is_file()}
    manifest = read_manifest(directory)
    load, verify, i2i = [], [], []
    for _ in range(repeats):
        started = time.perf_counter()
        bundle = LoadedBundle.load(directory)
        load.append(time.perf_counter() - started)
        del bundle
        started = time.perf_counter()
        verify_files(directory, manifest)
        verify.append(time.perf_counter() - started)
        started = time.perf_counter()
        table = ItemToItem.load(directory / I2I_FILE, manifest.item_count)
        i2i.append(time.perf_counter() - started)
    return {
        "files": files,
        "total_bytes": sum(files.values()),
        "item_count": manifest.item_count,
        "i2i_file_bytes_per_item": files.get(I2I_FILE, 0) / manifest.item_count,
        "i2i_memory_bytes": table.nbytes,
        "i2i_nnz": table.nnz,
        "load_s": load,
        "verify_files_s": verify,
        "i2i_load_s": i2i,
    }


# --- HTTP under load --------------------------------------------------------------------------


def start_server(bundles: Path, port: int, env_extra: dict[str, str]) -> subprocess.Popen[bytes]:
    env = {
        "NSP_REDIS_URL": REDIS_URL,
        "NSP_STORE_KEY_PREFIX": KEY_PREFIX,
        "NSP_LOG_LEVEL": "warning",
        **env_extra,
    }
    server = start_serve(bundles, port, env, subprocess.DEVNULL)
    ready = f"http://127.0.0.1:{port}/readyz"
    try:
        wait_for(lambda: httpx.get(ready, timeout=1).status_code == 200, 300, "readiness", 0.5, server)
    except RuntimeError:
        server.kill()
        raise
    return server


def run_locust(port: int, rate: float, seconds: int, k: int, users: int, out: Path) -> dict[str, float]:
    per_user = 5.0  # requests/s each simulated client sends
    clients = max(1, round(rate / per_user))
    env = {
        **os.environ,
        "BENCH_USER_RPS": str(rate / clients),
        "BENCH_K": str(k),
        "BENCH_USERS": str(users),
    }
    prefix = out / f"rate{int(rate)}"
    command = [
        str(Path(sys.executable).with_name("locust")),
        "-f",
        str(ROOT / "bench" / "locust_recall.py"),
        "--headless",
        "--users",
        str(clients),
        # Spread the clients' start over ~2 s: constant-throughput clients started together
        # would fire in lockstep, a burst of `clients` requests every 1/per_user seconds.
        "--spawn-rate",
        str(max(1.0, clients / 2)),
        "--run-time",
        f"{seconds}s",
        "--host",
        f"http://127.0.0.1:{port}",
        "--csv",
        str(prefix),
        "--only-summary",
        "--loglevel",
        "WARNING",
    ]
    subprocess.run(command, env=env, check=False, capture_output=True, timeout=seconds + 60)
    with open(f"{prefix}_stats.csv") as f:
        row = next(r for r in csv.DictReader(f) if r["Name"] == "Aggregated")
    return {
        "target_rps": rate,
        "clients": clients,
        "achieved_rps": float(row["Requests/s"]),
        "requests": int(row["Request Count"]),
        "failures": int(row["Failure Count"]),
        "p50_ms": float(row["50%"]),
        "p90_ms": float(row["90%"]),
        "p99_ms": float(row["99%"]),
    }


def run_open_loop(port: int, rate: float, seconds: int, k: int, users: int) -> dict[str, float]:
    """Open-loop load from this process: requests start at Poisson times at ``rate`` whatever
    the earlier ones are doing (locust's clients wait for their own previous request)."""
    import random

    async def drive() -> dict[str, float]:
        latencies: list[float] = []
        failures = 0
        limits = httpx.Limits(max_connections=500, max_keepalive_connections=500)
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=base, limits=limits, timeout=10) as client:

            async def one() -> None:
                nonlocal failures
                body = {"user_id": f"u{random.randrange(users)}", "k": k}
                started = time.perf_counter()
                try:
                    response = await client.post("/v1/recall", json=body)
                    ok = response.status_code == 200
                except httpx.HTTPError:
                    ok = False
                latencies.append(time.perf_counter() - started)
                failures += not ok

            tasks = []
            started = time.perf_counter()
            while time.perf_counter() - started < seconds:
                tasks.append(asyncio.create_task(one()))
                await asyncio.sleep(random.expovariate(rate))
            await asyncio.gather(*tasks)
            elapsed = time.perf_counter() - started
        stats = latency_summary(latencies)
        return {
            "target_rps": rate,
            "achieved_rps": len(latencies) / elapsed,
            "requests": len(latencies),
            "failures": failures,
            **{q: stats[q] for q in ("p50_ms", "p90_ms", "p99_ms")},
        }

    return asyncio.run(drive())


def run_wrk(port: int, connections: int, seconds: int, k: int, users: int) -> dict[str, float]:
    """Closed-loop load from wrk (C, one thread): ``connections`` clients, each sending its
    next request as soon as the previous answer arrives; the cheapest generator on these cores."""
    command = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{seconds}s",
        "-s",
        str(ROOT / "bench" / "wrk_recall.lua"),
        f"http://127.0.0.1:{port}/v1/recall",
    ]
    env = {**os.environ, "BENCH_USERS": str(users), "BENCH_K": str(k)}
    done = subprocess.run(command, env=env, check=True, capture_output=True, text=True, timeout=seconds + 60)
    r = json.loads(done.stdout.strip().splitlines()[-1])
    return {
        "connections": connections,
        "achieved_rps": r["requests"] / r["duration_us"] * 1e6,
        "requests": r["requests"],
        "failures": r["errors"] + r["non_2xx"],
        "p50_ms": r["p50_us"] / 1000,
        "p90_ms": r["p90_us"] / 1000,
        "p99_ms": r["p99_us"] / 1000,
    }


def measure_http(
    bundles: Path, args: argparse.Namespace, n_users: int, env: dict[str, str]
) -> list[dict[str, float]]:
    port = free_port()
    out = WORK / "locust"
    out.mkdir(parents=True, exist_ok=True)
    server = start_server(bundles, port, env)
    ladder = []
    try:
        run_locust(port, 20, 5, args.k, n_users, out)  # warm-up
        saturated = {"locust": False, "open-loop": False}
        for rate in args.rates:
            for driver in ("locust", "open-loop"):
                if saturated[driver]:
                    continue
                if driver == "locust":
                    result = run_locust(port, rate, args.duration, args.k, n_users, out)
                else:
                    result = run_open_loop(port, rate, args.duration, args.k, n_users)
                result = {"driver": driver, **result}
                log.info("HTTP %s", result)
                ladder.append(result)
                if result["p99_ms"] > 1000 or result["achieved_rps"] < 0.7 * rate:
                    saturated[driver] = True
            if all(saturated.values()):
                break
        if shutil.which("wrk") is None:
            log.warning("wrk is not installed (apt-get install wrk): no closed-loop ladder")
        for connections in [] if shutil.which("wrk") is None else args.connections:
            result = {"driver": "wrk", **run_wrk(port, connections, args.duration, args.k, n_users)}
            log.info("HTTP %s", result)
            ladder.append(result)
    finally:
        server.terminate()
        server.wait(30)
    return ladder


# --- report -----------------------------------------------------------------------------------


def _ms(row: dict[str, float], *quantiles: str) -> str:
    return " | ".join(f"{row[q]:.3f}" for q in quantiles)


def _mib(n: float) -> str:
    return f"{n / 2**20:,.1f}"


def write_report(results: dict[str, Any]) -> str:
    c = results["config"]
    ip = results["in_process"]
    f = ip["floors"]
    run = results["provenance"]
    lines = [
        "# Serving speed",
        "",
        "Generated by `bench/serving.py`; do not edit by hand. "
        f"Run of {run['generated_at']} at commit {run['commit']}"
        f"{' with uncommitted changes' if run['dirty'] else ''}. "
        f"{c['items']:,} items ({c['embeddings']} embeddings, see `build_bundle`), dim {c['dim']}, "
        f"k = {c['k']}, HNSW M={c['hnsw']['M']} "
        f"ef_construction={c['hnsw']['ef_construction']} ef_search={c['hnsw']['ef_search']}; "
        f"{c['users']} users with {c['sessions']} sessions each in a real Redis, items drawn from a "
        f"power law (popularity ∝ rank^-{ZIPF_EXPONENT}); "
        f"machine: {os.cpu_count()} CPUs, shared by server and load generator.",
        "",
        "## Stage floors and the in-process pipeline (NSP only)",
        "",
        "| stage | p50 ms | p90 ms | p99 ms |",
        "|---|---|---|---|",
    ]
    labels = {
        "redis_fetch": "Redis history read (LRANGE)",
        "encode": "ONNX Runtime encode, batch 1",
        "hnsw": f"HNSW query, k={c['k']}",
        "exact_search": "exact search, all items (reference)",
    }
    for key, label in labels.items():
        lines.append(f"| {label} | {_ms(f[key], 'p50_ms', 'p90_ms', 'p99_ms')} |")
    p = ip["pipeline"]
    lines += [
        f"| **sum of floors** (fetch + encode + HNSW) | {ip['floor_sum_p50_ms']:.3f} | | |",
        f"| **in-process pipeline, NSP only** | {_ms(p, 'p50_ms', 'p90_ms', 'p99_ms')} |",
        "",
        f"Pipeline p50 / sum of floor p50s = **{ip['pipeline_over_floors']:.2f}x** (target ≤ 1.3x). "
        f"ANN recall@{c['k']} against exact search: **{ip['ann_recall_at_k']:.3f}** (target ≥ 0.95).",
        "",
        *_merged_section(results),
        *_search_section(results),
        *_bundle_section(results),
        *_i2i_section(results),
        f"## ef_search: recall@{c['k']} against exact search and HNSW query time",
        "",
        f"Served ef_search = {c['hnsw']['ef_search']} (chosen at publish time for recall "
        f"{c['hnsw'].get('recall_target')} on random-history probe queries; measured there "
        f"{c['hnsw'].get('measured_recall')}). Here: 200 of the benchmark users' vectors.",
        "",
        "| ef | recall | p50 ms | p99 ms |",
        "|---|---|---|---|",
        *(
            f"| {r['ef']} | {r['recall']:.4f} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} |"
            for r in ip["ef_ladder"]
        ),
        "",
        *_http_section(results),
    ]
    return "\n".join(lines)


def _merged_section(results: dict[str, Any]) -> list[str]:
    c, ip = results["config"], results["in_process"]
    paths, ratios = ip["paths"], ip["p50_ratios"]
    rounds = len(paths["nsp_unseen"]["rounds"])
    lines = [
        "## Merged path against NSP only (in-process, same run, same users)",
        "",
        f"`RecallPipeline` with the service's channels (`standard_channels`, {c['cpu_workers']} CPU-pool "
        f"threads, channel deadline {c['channel_timeout_s']} s, as the service's defaults; the loaded bundle "
        "frozen out of the cyclic GC by `settle_memory`, as the service does after a load), no HTTP. "
        f"{c['repeats']} requests per variant and round, {rounds} rounds; within a round each user's "
        "request runs in all four variants back to back, in an order that rotates from one request "
        "to the next, so noise from the shared machine falls on all variants alike. "
        'NSP only is `channels=["nsp"]`: the retrieval every request ran before the channel merge, '
        "but through today's pipeline (its merge stage and per-item provenance included; the code from "
        "before the merge is not measured here). Merged is `channels=None`: nsp, history, i2i and "
        "popular (the text channels run on search requests only, see below), fused by RRF with the "
        "bundle's (default, equal) weights.",
        "",
        *_variant_table(paths, list(PATHS)),
    ]
    load = ip["loadavg_1m"]
    lines += [
        "",
        "Incomplete: not `source=model` with k items and no missing channel (none expected). "
        f"1-minute load average {load['before']:.2f} before the comparison, {load['after']:.2f} after "
        f"({load['cpus']} CPUs; the benchmark itself keeps about one busy).",
        "",
        f"| p50 ratio (target ≤ {TARGET_RATIO}x) | "
        + " | ".join(f"round {r + 1}" for r in range(rounds))
        + " | pooled | |",
        "|---|" + "---|" * rounds + "---|---|",
    ]
    names = {
        "merged_unseen/nsp_unseen": "merged / NSP only, both exclude_seen=true",
        "merged_seen/nsp_unseen": "merged exclude_seen=false / NSP only exclude_seen=true",
        "merged_seen/nsp_seen": "merged / NSP only, both exclude_seen=false",
    }
    for key, label in names.items():
        r = ratios[key]
        verdict = (
            "meets"
            if max(r["rounds"]) <= TARGET_RATIO
            else "misses"
            if min(r["rounds"]) > TARGET_RATIO
            else "mixed"
        )
        per = " | ".join(f"{x:.2f}x" for x in r["rounds"])
        lines.append(f"| {label} | {per} | **{r['pooled']:.2f}x** | {verdict} |")
    lines += [
        "",
        "### Where the time goes",
        "",
        "Mean ms per request from the pipeline's own metrics (`nsp_channel_duration_seconds`, "
        "`nsp_recall_stage_duration_seconds`: sum / count over every measured request of the "
        "variant). The channels run concurrently, so their times overlap; `encode` and `ann` are "
        "inside the nsp channel (`encode` includes building the tokens). history and popular run on "
        "the event loop, so their time includes waiting for it (and for the GIL) while the pool threads "
        "run nsp and i2i; their own work, timed alone, is about 0.1 ms. Items per answer: of the k "
        "items, how many each channel proposed.",
        "",
        *_time_table(paths, list(PATHS), ("nsp", "history", "i2i", "popular")),
    ]
    return [*lines, ""]


def _search_section(results: dict[str, Any]) -> list[str]:
    c, ip, build = results["config"], results["in_process"], results.get("text_build")
    if "search" not in ip or build is None:
        return ["## Search requests", "", "Not measured in this run (`--no-search`).", ""]
    search, text = ip["search"], c["text"]
    paths, queries, dense = search["paths"], search["queries"], text["dense"]["hnsw"]
    n = build["items"]
    lines = [
        "## Search requests (in-process, same users)",
        "",
        f"The same pipeline, users and rounds as above, every request with a query (seen items "
        f"excluded, the API's default): {queries['count']} queries ({queries['distinct']} distinct), "
        f"each {queries['words_mean']:.1f} words on average: 1-4 words, in title order, of the title of "
        "an item from the user's own history (`search_queries`), e.g. "
        + ", ".join(f"`{q}`" for q in queries["examples"][:5])
        + ". Four variants, rotated as above: bm25 alone, dense alone, NSP alone and every channel "
        "(nsp, history, i2i, popular, bm25, dense), merged by the search fusion, which falls back to "
        "the recommendation fusion (default, equal weights) because this bundle has no fitted one. "
        "**The NSP encoder does not read the query** (`query_pieces = 0`, the encoder of the rows "
        "above): the nsp channel's query pieces are not measured here. **The dense two-tower is "
        "untrained** (random initial weights, `DenseConfig()` shapes: its speed depends on the shapes, "
        f"not on what was learned); titles are synthetic (`item_titles`, {build['title_words_mean']:.1f} "
        "words on average), so BM25's posting lists are as long as these titles make them. Each channel "
        f"hands the merge max(k, min_depth) = {c['k']} candidates.",
        "",
        *_variant_table(paths, list(SEARCH_PATHS)),
        "",
        f"1-minute load average {search['loadavg_1m']['before']:.2f} before, "
        f"{search['loadavg_1m']['after']:.2f} after. p50 ratios: "
        + ", ".join(
            f"{key.replace('_search', '')} **{r['pooled']:.2f}x** pooled "
            f"({', '.join(f'{x:.2f}x' for x in r['rounds'])} per round)"
            for key, r in search["p50_ratios"].items()
        )
        + ".",
        "",
        "Where the time goes (mean ms per request from the pipeline's metrics, as above):",
        "",
        *_time_table(paths, list(SEARCH_PATHS), ("nsp", "history", "i2i", "popular", "bm25", "dense")),
        "",
        f"### The search side of the bundle at {n:,} items",
        "",
        f"Built once into the run directory (`build_text_side`, cached with the bundle) and shipped by "
        f"`publish`. Tokenizer: {build['tokenizer_vocab_size']:,} word pieces; "
        f"BM25 (`{text['bm25']['method']}`, k1 {text['bm25']['k1']}, b {text['bm25']['b']}): "
        f"{build['bm25_terms']:,} terms, "
        f"{build['bm25_postings']:,} (piece, item) scores; dense: dim {text['dense']['dim']}, "
        f"HNSW M={dense['M']} ef_construction={dense['ef_construction']}, ef_search={dense['ef_search']} "
        f"tuned by `write_dense` as training does (recall@{dense.get('tuned_k')} target "
        f"{dense.get('recall_target')} on 1,000 item titles as queries; measured "
        f"{dense.get('measured_recall')}), {build['build_threads']} build threads.",
        "",
        "| build step | seconds |",
        "|---|---|",
        f"| titles (`item_titles`) | {build['titles_s']:.1f} |",
        f"| tokenizer (`train_tokenizer`) | {build['tokenizer_s']:.1f} |",
        f"| BM25 index (`build_bm25`) | {build['bm25_build_s']:.1f} |",
        f"| BM25 files written | {build['bm25_save_s']:.1f} |",
        f"| dense item vectors alone (`item_vectors`, timed apart) | {build['dense_item_vectors_s']:.1f} |",
        f"| `write_dense`: ONNX export and check, item vectors, HNSW build, ef tuning | "
        f"{build['dense_write_s']:.1f} |",
        "",
        "| file | bytes | MiB | bytes per item |",
        "|---|---|---|---|",
    ]
    files = {name: size for name, size in results["bundle"]["files"].items() if name in TEXT_FILES}
    lines += [
        f"| `{name}` | {size:,} | {_mib(size)} | {size / n:.1f} |"
        for name, size in sorted(files.items(), key=lambda kv: -kv[1])
    ]
    total = sum(files.values())
    lines += [f"| **search side** | {total:,} | {_mib(total)} | {total / n:.1f} |", ""]
    return lines


def _variant_table(paths: dict[str, Any], names: list[str]) -> list[str]:
    """p50 / p99 per round and pooled quantiles of each variant."""
    rounds = len(paths[names[0]]["rounds"])
    lines = [
        "| variant | "
        + " | ".join(f"round {r + 1} p50 / p99 ms" for r in range(rounds))
        + " | pooled p50 | p90 | p99 ms | incomplete answers |",
        "|---|" + "---|" * rounds + "---|---|---|---|",
    ]
    for name in names:
        row = paths[name]
        per = " | ".join(f"{x['p50_ms']:.3f} / {x['p99_ms']:.3f}" for x in row["rounds"])
        pooled = _ms(row["pooled"], "p50_ms", "p90_ms", "p99_ms")
        lines.append(f"| {row['label']} | {per} | {pooled} | {row['incomplete_answers']} |")
    return lines


def _time_table(paths: dict[str, Any], names: list[str], channels: tuple[str, ...]) -> list[str]:
    """Mean ms per channel and stage, and items per answer by channel, of each variant."""
    stages = ("session_fetch", "encode", "ann", "merge", "postprocess")
    lines = [
        f"| variant | {' | '.join(channels + stages)} | items per answer by channel |",
        "|---|" + "---|" * (len(channels) + len(stages)) + "---|",
    ]
    for name in names:
        row = paths[name]
        channel_cells = [
            f"{row['channels_mean'][ch]['mean_ms']:.3f}" if ch in row["channels_mean"] else "—"
            for ch in channels
        ]
        stage_cells = [
            f"{row['stages_mean'][st]['mean_ms']:.3f}" if st in row["stages_mean"] else "—" for st in stages
        ]
        items = ", ".join(f"{ch} {v:.0f}" for ch, v in row["items_per_answer"].items())
        lines.append(f"| {row['label']} | {' | '.join(channel_cells + stage_cells)} | {items} |")
    return lines


def _bundle_section(results: dict[str, Any]) -> list[str]:
    b = results["bundle"]
    n = b["item_count"]
    lines = [
        "## The bundle: files and load time",
        "",
        "| file | bytes | MiB | bytes per item |",
        "|---|---|---|---|",
        *(
            f"| `{name}` | {size:,} | {_mib(size)} | {size / n:.1f} |"
            for name, size in sorted(b["files"].items(), key=lambda kv: -kv[1])
        ),
        f"| **total** | {b['total_bytes']:,} | {_mib(b['total_bytes'])} | {b['total_bytes'] / n:.1f} |",
        "",
        f"`{I2I_FILE}` holds {b['i2i_nnz']:,} neighbours: **{b['i2i_file_bytes_per_item']:.1f} bytes per "
        f"item** on disk, {b['i2i_memory_bytes'] / n:.1f} in memory ({_mib(b['i2i_memory_bytes'])} MiB).",
        "",
        f"`LoadedBundle.load` wall time over {len(b['load_s'])} loads (files in the page cache; a cold "
        "disk adds its read time), and two parts of it measured alone:",
        "",
        "| | min s | median s | max s |",
        "|---|---|---|---|",
    ]
    for key, label in (
        ("load_s", "`LoadedBundle.load`, whole"),
        ("verify_files_s", "of which checksums of every file (`verify_files`)"),
        ("i2i_load_s", f"of which `ItemToItem.load` ({I2I_FILE})"),
    ):
        x = b[key]
        lines.append(f"| {label} | {min(x):.2f} | {float(np.median(x)):.2f} | {max(x):.2f} |")
    return [*lines, ""]


def _i2i_section(results: dict[str, Any]) -> list[str]:
    i = results["i2i"]
    build = i["build"]
    n_items = results["config"]["items"]
    lines = [
        f"## The i2i table at {n_items:,} items: neighbours per item (N) and memory",
        "",
        f"Built by `ItemToItem.build` (window and alpha at their defaults) from {build['rows']:,} "
        f"synthetic engaged rows ({build['owners']:,} users, {build['sessions']:,} engaged sessions, "
        f"{build['distinct_items']:,} distinct items; each item drawn independently from the power "
        f"law, see `engaged_rows`) in {build['build_s']:.0f} s at N = {build['neighbours']}; the smaller "
        "N are that table with each row cut to its N strongest entries (what a build at that N "
        "gives). A full table has every row N long: 8 bytes of row pointer plus 8 per neighbour "
        "(int32 label, float32 weight). The realistic table is smaller because the power law's "
        "tail co-occurs with few items or none. Scoring: `i2i_candidates` alone, per benchmark "
        f"user (their last {i['recent_sessions']} engaged sessions, "
        f"{i['query_items_mean']:.1f} engaged items on average, seen items excluded, depth k).",
        "",
        "| N | full table: bytes per item | full table MiB | measured nnz | mean neighbours "
        "| items without / with N neighbours | measured bytes per item | measured MiB "
        "| scoring p50 / p99 ms | candidates (mean) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in i["sweep"]:
        served = " (served)" if r["neighbours"] == i["served_neighbours"] else ""
        lines.append(
            f"| {r['neighbours']}{served} | {r['full_bytes_per_item']:,} | {_mib(r['full_bytes'])} | "
            f"{r['nnz']:,} | {r['mean_neighbours']:.1f} | "
            f"{r['items_without_neighbours']:,} / {r['items_with_full_rows']:,} | "
            f"{r['bytes_per_item']:.1f} | {_mib(r['bytes'])} | "
            f"{r['score_p50_ms']:.3f} / {r['score_p99_ms']:.3f} | {r['candidates_mean']:.0f} |"
        )
    return [*lines, ""]


def _http_section(results: dict[str, Any]) -> list[str]:
    source = results["http_source"]
    if not results["http"]:
        return ["## HTTP end to end", "", "Not measured in this run, and no earlier result to show."]
    if results["http_measured_in_this_run"]:
        heading = "## HTTP end to end (uvicorn; locust `FastHttpUser`, asyncio, wrk)"
        note = [
            "Requests name no channels, so they run every channel the bundle carries (the merged path).",
        ]
    else:
        heading = (
            f"## HTTP end to end — not re-measured: from the run of {source['generated_at']} "
            f"(commit {source['commit']}{', uncommitted changes' if source.get('dirty') else ''})"
        )
        note = [
            "**This run skipped HTTP (`--skip-http`).** The tables below are the HTTP results of "
            "the earlier run named in the heading, with that run's code, bundle and users; they are "
            "not comparable with the in-process numbers above. Re-run without `--skip-http` to "
            "measure the current code over HTTP (requests naming no channels now run every channel "
            "the bundle carries).",
        ]
    lines = [
        heading,
        "",
        *note,
        "",
        "Three load generators, one after the other, against the same server process(es):",
        "locust at fixed rates (each client waits for its previous answer, then keeps its",
        "schedule), an open-loop asyncio client in the benchmark process at fixed rates (Poisson",
        "arrivals, whatever earlier requests are doing), and wrk at a ladder of connection counts",
        "(closed loop, as fast as answers come). All of them share the two cores with the server;",
        "the Python generators run out of CPU first (achieved < target), wrk costs least.",
        "",
        "### Against the targets",
        "",
        "p99 at 200 req/s (target ≤ 20 ms) and the highest achieved rate whose p99 stayed within",
        "50 ms (target ≥ 400 req/s), per server and driver.",
        "",
        "| server | driver | p99 ms at 200 req/s | most req/s with p99 ≤ 50 ms |",
        "|---|---|---|---|",
    ]
    for label, ladder in results["http"].items():
        for driver in DRIVERS:
            rows = [r for r in ladder if r.get("driver", "locust") == driver]
            if not rows:
                continue
            at_200 = next((f"{r['p99_ms']:.1f}" for r in rows if r.get("target_rps") == 200), "—")
            within = [r["achieved_rps"] for r in rows if r["p99_ms"] <= 50 and not r["failures"]]
            best = f"{max(within):.0f}" if within else "none"
            lines.append(f"| {label} | {driver} | {at_200} | {best} |")
    lines += [
        "",
        "### Every step",
        "",
        "| server | driver | load | achieved req/s | p50 ms | p90 ms | p99 ms | failures |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, ladder in results["http"].items():
        for r in ladder:
            load = f"{r['target_rps']:.0f} req/s" if "target_rps" in r else f"{r['connections']} connections"
            lines.append(
                f"| {label} | {r.get('driver', 'locust')} | {load} | "
                f"{r['achieved_rps']:.1f} | "
                f"{r['p50_ms']:.1f} | {r['p90_ms']:.1f} | {r['p99_ms']:.1f} | {r['failures']} |"
            )
    return lines


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8))
    ip = results["in_process"]
    f = ip["floors"]
    names = ["redis_fetch", "encode", "hnsw"]
    bars = {n: f[n]["p50_ms"] for n in names}
    short = {"nsp_unseen": "NSP only\nexcl. seen", "merged_unseen": "merged\nexcl. seen",
             "nsp_seen": "NSP only\nincl. seen", "merged_seen": "merged\nincl. seen"}  # fmt: skip
    for name, label in short.items():
        bars[label] = ip["paths"][name]["pooled"]["p50_ms"]
    colours = ["#999999"] * len(names) + ["#1f77b4", "#ff7f0e", "#1f77b4", "#ff7f0e"]
    left.bar(list(bars), list(bars.values()), color=colours)
    nsp = ip["paths"]["nsp_unseen"]["pooled"]["p50_ms"]
    left.axhline(nsp * TARGET_RATIO, color="red", linestyle="--", label=f"{TARGET_RATIO} x NSP-only p50")
    left.set_ylabel("p50 ms")
    left.set_title("in-process: stage floors, NSP only and merged")
    left.tick_params(axis="x", labelsize=8)
    left.legend()
    source = results["http_source"]
    for label, ladder in results["http"].items():
        for driver in DRIVERS:
            rows = [r for r in ladder if r.get("driver", "locust") == driver]
            if rows:
                achieved = [r["achieved_rps"] for r in rows]
                right.plot(achieved, [r["p99_ms"] for r in rows], marker="o", label=f"{label}, {driver}: p99")
    right.set_xlabel("achieved requests/s")
    right.set_ylabel("latency ms (log)")
    right.set_yscale("log")
    if results["http_measured_in_this_run"]:
        right.set_title("HTTP latency vs load")
    elif source is None:
        right.set_title("HTTP latency vs load: not measured")
    else:
        right.set_title(
            f"HTTP latency vs load: NOT this run (from {source['generated_at'][:10]}, {source['commit']})"
        )
    if results["http"]:
        right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def previous_http(path: Path) -> tuple[dict[str, list[dict[str, float]]], dict[str, Any] | None]:
    """The HTTP results of the report at ``path`` and when they were measured, for a run that
    skips HTTP: results from before reports carried their date get the file's last commit."""
    if not path.is_file():
        return {}, None
    previous = json.loads(path.read_text())
    http = previous.get("http") or {}
    if not http:
        return {}, None
    return http, previous.get("http_source") or committed_at(path)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--k", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=500, help="requests per in-process measurement")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the NSP-only vs merged comparison")
    parser.add_argument(
        "--i2i-neighbours", type=int, default=I2IParams().neighbours, help="N the bundle serves"
    )
    parser.add_argument("--i2i-sweep", nargs="*", type=int, default=[20, 50, 100, 200], help="N to measure")
    parser.add_argument(
        "--i2i-rows", type=int, default=4_000_000, help="synthetic engaged rows for the table"
    )
    parser.add_argument("--load-repeats", type=int, default=3, help="LoadedBundle.load timings")
    parser.add_argument("--rates", nargs="*", type=float, default=[50, 100, 200, 300, 400, 500, 600])
    parser.add_argument("--duration", type=int, default=15, help="seconds per load step")
    parser.add_argument("--connections", nargs="*", type=int, default=[1, 2, 4, 8, 16, 32], help="wrk ladder")
    parser.add_argument(
        "--skip-http",
        action="store_true",
        help="in-process parts only; the report repeats the previous report's HTTP numbers, labelled "
        "with their date and commit",
    )
    parser.add_argument("--embeddings", choices=["clustered", "isotropic"], default="clustered")
    parser.add_argument(
        "--search",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="give the bundle a search side (titles, tokenizer, BM25, untrained dense) and measure "
        "search requests",
    )
    parser.add_argument("--out-name", default="serving", help="<out-dir>/<name>.{json,md,png}")
    parser.add_argument("--out-dir", type=Path, default=OUT, help="where the report goes (docs/benchmarks)")
    parser.add_argument(
        "--variants",
        nargs="*",
        default=[
            "one-by-one:NSP_ENCODE_BATCH_MAX=1",
            "micro-batched:NSP_ENCODE_BATCH_MAX=16",
            "2-workers:NSP_WORKERS=2,NSP_ENCODE_BATCH_MAX=16",
        ],
        help="label:ENV=VALUE,ENV=VALUE server settings, one HTTP ladder each",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request would load the driver
    run = provenance()
    sweep = sorted({*args.i2i_sweep, args.i2i_neighbours})
    popularity = Popularity(args.items)
    bundles = bundle_root(args.items, args.dim, args.embeddings, args.i2i_neighbours, args.search)
    directory = build_bundle(
        bundles,
        args.items,
        args.dim,
        args.embeddings,
        popularity,
        args.i2i_neighbours,
        max(sweep),
        args.i2i_rows,
        args.search,
    )
    bundle_facts = measure_bundle(directory, args.load_repeats)
    log.info("bundle: %s", json.dumps(bundle_facts))
    bundle = LoadedBundle.load(directory)
    hnsw = bundle.manifest.hnsw.model_dump()
    users = make_events(args.users, args.sessions, popularity)
    items = np.load(bundles / "item_vectors.npy")
    titles = (bundles / TITLES_FILE).read_text().splitlines() if args.search else None
    settle_memory()  # as the service does after loading a bundle: gc.freeze the long-lived objects
    in_process = asyncio.run(
        measure_in_process(bundle, items, users, args.k, args.repeats, args.rounds, titles)
    )
    del titles
    log.info("in-process: %s", json.dumps(in_process))
    del items
    i2i = measure_i2i(bundles, bundle, users, args.k, args.repeats, sweep)
    del bundle
    http: dict[str, list[dict[str, float]]] = {}
    for variant in [] if args.skip_http else args.variants:
        label, _, assignments = variant.partition(":")
        env = dict(pair.split("=", 1) for pair in assignments.split(",") if pair)
        http[label] = measure_http(bundles, args, args.users, env)
    http_source: dict[str, Any] | None = run
    if args.skip_http:
        http, http_source = previous_http(args.out_dir / f"{args.out_name}.json")
    defaults = Settings.model_fields
    results = {
        "provenance": run,
        "config": {
            **vars(args),
            "hnsw": hnsw,
            "cpu_workers": defaults["cpu_workers"].default,
            "channel_timeout_s": defaults["channel_timeout_s"].default,
            "channels": bundle_manifest_channels(directory),
            "text": bundle_manifest_text(directory),
        },
        "in_process": in_process,
        "bundle": bundle_facts,
        "i2i": i2i,
        "text_build": json.loads((bundles / TEXT_BUILD).read_text()) if args.search else None,
        "http": http,
        "http_measured_in_this_run": not args.skip_http,
        "http_source": http_source,
    }
    out = args.out_dir
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.out_name}.json").write_text(json.dumps(results, indent=2, default=str))
    report = write_report(results)
    (out / f"{args.out_name}.md").write_text(report + "\n")
    plot(results, out / f"{args.out_name}.png")
    print(report)


def bundle_manifest_channels(directory: Path) -> dict[str, Any] | None:
    spec = read_manifest(directory).channels
    return None if spec is None else spec.model_dump()


def bundle_manifest_text(directory: Path) -> dict[str, Any] | None:
    spec = read_manifest(directory).text
    return None if spec is None else spec.model_dump()


if __name__ == "__main__":
    main()
