"""Build a run's ``sid`` channel: CQ-SID codes for every catalog item, the staged generator, its
EG-GRPO alignment, and the bundle files the service reads (``index.sid_search.SID_FILES``).

1. *Item representation*: the dense text channel's item-tower vector of title + attributes
   (the shared text encoder); queries are the query tower's vectors, in the same space.
2. *CQ-SID*: the RQ-VAE trains on the items of the training log; every catalog item (new ones
   included) is then coded by it, and the 3-level clusters are split by a group suffix
   (``clusters``): training items deterministically, the rest placed without moving them.
3. *Generator*, from scratch, in stages: item text → SID, query → SIDs of engaged items, user
   (recent engaged SIDs) + query → SIDs; then EG-GRPO on the training search sessions.
4. *Files*: the SID → items table (items by training-period engagements), the trie, the
   generator's two ONNX graphs and probe, and the manifest's ``text.sid`` section.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from index.bundle import SidSpec
from index.sid_layout import SidLayout
from index.sid_search import context_tokens
from index.sid_table import SidTable
from index.sid_trie import SidTrie
from index.tokenizer import TextTokenizer
from index.vocab import Vocabulary
from model_export.data import Dataset
from model_export.sid.clusters import place_new_items, split_clusters
from model_export.sid.data import SearchEvent, engagement_counts, search_events, trained_items
from model_export.sid.export import export_generator
from model_export.sid.generator import GeneratorConfig, SidExamples, SidGenerator, StageConfig, train_stage
from model_export.sid.grpo import GrpoConfig, Prompt, Sid, train_grpo
from model_export.sid.rqvae import RQVAE, RqvaeConfig, assign_codes, codebook_stats, train_rqvae
from model_export.text.corpus import query_pairs
from model_export.text.dense import TwoTower, item_vectors, query_vectors

log = logging.getLogger(__name__)

STAGES = ("item", "query", "user")


@dataclass
class SidConfig:
    """Plain values only: it is saved in the checkpoint inside the text config."""

    enabled: bool = True
    # K2, K3; K1 = the catalog's categories + free_codes. Small on purpose: SIDs are clusters,
    # and the ladder's top rung (100 SIDs) should hold the channel's depth (300 items), so about
    # 3 items per SID; 16x16, 8x8 and 4x4 measured worse (docs/model.md, CQ-SID).
    codes: tuple[int, int] = (4, 8)
    free_codes: int = 4  # level-1 codes for items without a category (and none reserved otherwise)
    use_category: bool = True  # level 1 forced to the category (False: the w/o-category ablation)
    use_query: bool = True  # the query-item InfoNCE term (False: the w/o-query-item ablation)
    gamma: float = RqvaeConfig.gamma  # weight of that term
    rqvae_epochs: int = RqvaeConfig.epochs
    # Items per SID the split aims at. The paper's 50 is for beams of 20-100 SIDs over 21M
    # items truncated to 1K; here the ladder's first rung (20 SIDs) should hold about the
    # merge's default depth (100-300 items), so 10.
    t_max: int = 10
    g_max: int = 100  # groups a cluster may split into (the paper's; it also bounds the vocabulary)
    max_item_tokens: int = 48  # pieces of an item's text the item → SID stage reads
    max_query_tokens: int = 16  # pieces of a query the generator reads
    user_sids: int = 5  # recent engaged items' SIDs in the personalised context
    dim: int = 128
    layers: int = 2  # encoder and decoder layers each
    stage_epochs: tuple[int, int, int] = (4, 6, 4)  # item → SID, query → SID, user + query → SID
    batch_size: int = 128
    lr: float = 1e-3
    grpo_steps: int = 50  # 0: no EG-GRPO (the SFT model ships); nsprecall train --sid-grpo-steps
    grpo_inject: int = 2  # K ground-truth SIDs added to each sampled group
    beams: tuple[int, ...] = (20, 50, 100)
    seed: int = 0
    progress: bool = True


@dataclass
class SidModels:
    """What ``train_sid`` made, for publishing and for the benchmark's comparisons."""

    layout: SidLayout
    n_categories: int
    item_sids: np.ndarray  # (N, 4) every catalog item's SID
    table: SidTable
    generator: SidGenerator
    stats: dict[str, float] = field(default_factory=dict)


def category_codes(vocab: Vocabulary, use_category: bool) -> tuple[np.ndarray, int]:
    """(N,) level-1 code per item (-1: no category, or none forced) and the codes reserved."""
    if not use_category:
        return np.full(vocab.n_items, -1, dtype=np.int64), 0
    # Category tokens are 1.. (0: unknown); codes are 0-based.
    return vocab.item_category.astype(np.int64) - 1, int(vocab.n_category_tokens) - 1


@dataclass(frozen=True)
class ItemContent:
    """The RQ-VAE's inputs: item content vectors and the training queries' vectors, one space."""

    items: np.ndarray  # (N, D) float32 by vocabulary label
    queries: Sequence[str]  # the training period's distinct queries
    query_vecs: np.ndarray  # (Q, D) float32, row per query


def dense_content(
    dataset: Dataset, texts: Sequence[str], tokenizer: TextTokenizer, dense: TwoTower
) -> ItemContent:
    """The dense two-tower's item-tower vectors of title + attributes and query-tower vectors."""
    queries = sorted({q for q, _ in query_pairs(dataset.train, dataset.vocab)})
    return ItemContent(
        item_vectors(dense, texts, tokenizer), queries, query_vectors(dense, queries, tokenizer)
    )


class Coding(NamedTuple):
    item_sids: np.ndarray  # (N, 4) every catalog item's SID
    n_categories: int  # level-1 codes reserved for categories
    stats: dict[str, float]  # codebook health over the training items (``codebook_stats``)
    rqvae: RQVAE  # the trained tokenizer, for coding items that arrive later


def code_items(dataset: Dataset, content: ItemContent, config: SidConfig) -> Coding:
    """Train the RQ-VAE on the training log's items and code every catalog item with it."""
    vocab = dataset.vocab
    row = {q: n for n, q in enumerate(content.queries)}
    categories, n_categories = category_codes(vocab, config.use_category)
    trained = trained_items(dataset.train, vocab)
    labels = np.flatnonzero(trained)
    position = np.full(vocab.n_items, -1, dtype=np.int64)
    position[labels] = np.arange(len(labels))
    # (query row, position among the trained items) for engaged training items
    pairs = np.asarray(
        [(row[q], position[label]) for q, label in query_pairs(dataset.train, vocab) if q in row],
        dtype=np.int64,
    ).reshape(-1, 2)
    rq_config = RqvaeConfig(
        level_sizes=(n_categories + config.free_codes, *config.codes),
        use_category=config.use_category,
        use_query=config.use_query,
        gamma=config.gamma,
        epochs=config.rqvae_epochs,
        seed=config.seed,
    )
    model = train_rqvae(content.items[labels], categories[labels], pairs, content.query_vecs, rq_config)
    codes = assign_codes(model, content.items, categories)  # (N, 3): new items coded by the trained model
    sids = np.full((vocab.n_items, 4), -1, dtype=np.int64)
    keys = _stable_keys(vocab)
    sids[labels, :3] = codes[labels]
    sids[labels, 3] = split_clusters(codes[labels], keys[labels], config.t_max, config.g_max)
    fresh = np.flatnonzero(~trained)
    if len(fresh):
        sids[fresh, :3] = codes[fresh]
        sids[fresh, 3] = place_new_items(sids[labels], codes[fresh], keys[fresh], config.t_max, config.g_max)
    return Coding(sids, n_categories, codebook_stats(codes[labels], rq_config.level_sizes), model)


def _stable_keys(vocab: Vocabulary) -> np.ndarray:
    """(N,) int64 order key per item that does not depend on the vocabulary's order: a hash of
    the item id, so an item's group is the same in every run over the same catalog."""
    return np.asarray(
        [
            int.from_bytes(hashlib.blake2b(str(i).encode(), digest_size=7).digest(), "big")
            for i in vocab.item_ids
        ],
        dtype=np.int64,
    )


def generator_config(config: SidConfig, tokenizer: TextTokenizer, layout: SidLayout) -> GeneratorConfig:
    return GeneratorConfig(
        text_vocab=tokenizer.vocab_size,
        sid_sizes=layout.sizes,
        dim=config.dim,
        encoder_layers=config.layers,
        decoder_layers=config.layers,
        max_text_tokens=max(config.max_item_tokens, config.max_query_tokens),  # item texts too
        user_sids=config.user_sids,
    )


def stage_examples(
    stage: str,
    dataset: Dataset,
    texts: Sequence[str],
    tokenizer: TextTokenizer,
    item_sids: np.ndarray,
    layout: SidLayout,
    config: SidConfig,
) -> SidExamples:
    """One SFT stage's rows: ``item`` — each training item's text → its SID; ``query`` — each
    training search session's query → the SID of each engaged item, no user context; ``user`` —
    the same rows with the user's recent engaged SIDs in the context."""
    width = config.user_sids * 4
    if stage == "item":
        labels = np.flatnonzero(trained_items(dataset.train, dataset.vocab))
        ids = tokenizer.ids([texts[int(i)] for i in labels], config.max_item_tokens)
        return SidExamples(ids, np.zeros((len(labels), width), np.int64), item_sids[labels])
    queries, recent, targets = [], [], []
    for event in search_events(dataset.train, dataset.vocab, config.user_sids):
        for label in event.clicked:
            queries.append(event.query)
            recent.append(event.recent if stage == "user" else [])
            targets.append(label)
    ids = tokenizer.ids(queries, config.max_query_tokens)
    users = context_tokens(item_sids, layout, recent, config.user_sids)
    return SidExamples(ids, users, item_sids[np.asarray(targets, dtype=np.int64)].reshape(-1, 4))


def grpo_prompts(
    events: Sequence[SearchEvent],
    tokenizer: TextTokenizer,
    item_sids: np.ndarray,
    layout: SidLayout,
    config: SidConfig,
) -> list[Prompt]:
    """EG-GRPO prompts: search sessions with an engaged item, with their reward sets as SIDs."""
    events = [e for e in events if e.clicked]
    if not events:
        return []
    ids = tokenizer.ids([e.query for e in events], config.max_query_tokens)
    users = context_tokens(item_sids, layout, [e.recent for e in events], config.user_sids)

    def sids(labels: Sequence[int]) -> frozenset[Sid]:
        return frozenset((int(a), int(b), int(c), int(g)) for a, b, c, g in item_sids[list(labels)])

    return [
        Prompt(ids[n], users[n], paid=sids(e.paid), clicked=sids(e.clicked), exposed=sids(e.exposed))
        for n, e in enumerate(events)
    ]


def train_sid(
    dataset: Dataset, texts: Sequence[str], tokenizer: TextTokenizer, content: ItemContent, config: SidConfig
) -> SidModels:
    """Code the catalog, train the generator stage by stage and align it (``config.grpo_steps``)."""
    torch.manual_seed(config.seed)
    item_sids, n_categories, stats, _ = code_items(dataset, content, config)
    layout = SidLayout((n_categories + config.free_codes, *config.codes, config.g_max))
    table = SidTable.build(layout, item_sids, engagement_counts(dataset.train, dataset.vocab))
    model = SidGenerator(generator_config(config, tokenizer, layout))
    for stage, epochs in zip(STAGES, config.stage_epochs, strict=True):
        examples = stage_examples(stage, dataset, texts, tokenizer, item_sids, layout, config)
        if epochs > 0 and len(examples.targets):
            stage_config = StageConfig(
                epochs=epochs,
                batch_size=config.batch_size,
                lr=config.lr,
                seed=config.seed,
                progress=config.progress,
            )
            metrics = train_stage(model, examples, stage_config)
            log.info("sid stage %s: %d rows, %s", stage, len(examples.targets), metrics)
    if config.grpo_steps > 0:  # anchored to the supervised model: a frozen copy of it
        align_generator(
            model, frozen_copy(model), dataset, tokenizer, item_sids, table, config, config.grpo_inject
        )
    stats.update(sids=float(len(table.codes)), items_per_sid=float(_items_per_sid(table)))
    return SidModels(layout, n_categories, item_sids, table, model.eval(), stats)


def align_generator(
    model: SidGenerator,
    reference: SidGenerator,
    dataset: Dataset,
    tokenizer: TextTokenizer,
    item_sids: np.ndarray,
    table: SidTable,
    config: SidConfig,
    inject: int,
) -> list[dict[str, float]]:
    """EG-GRPO on ``model`` in place (``inject`` = K ground truths per group; 0 is plain GRPO),
    on the training search sessions with an engaged item, anchored to ``reference``."""
    events = list(search_events(dataset.train, dataset.vocab, config.user_sids))
    prompts = grpo_prompts(events, tokenizer, item_sids, table.layout, config)
    if not prompts:
        return []

    def valid(sids: np.ndarray) -> np.ndarray:
        return table.rows_of(sids) >= 0

    grpo = GrpoConfig(inject=inject, steps=config.grpo_steps, seed=config.seed, progress=config.progress)
    history = train_grpo(model, reference, prompts, valid, grpo)
    if history:
        first, last = history[0], history[-1]
        log.info(
            "EG-GRPO K=%d: sampled reward %.3f → %.3f, kl %.4f, zero-spread groups %.2f",
            inject, first["reward_sampled"], last["reward_sampled"], last["kl"], last["zero_spread"],
        )  # fmt: skip
    return history


def frozen_copy(model: SidGenerator) -> SidGenerator:
    copy = SidGenerator(model.config)
    copy.load_state_dict(model.state_dict())
    return copy.eval()


def _items_per_sid(table: SidTable) -> float:
    return float(np.diff(table.offsets).mean()) if len(table.codes) else 1.0


def write_sid(directory: Path, models: SidModels, config: SidConfig) -> SidSpec:
    """Write ``index.sid_search.SID_FILES`` into ``directory`` and return the manifest section."""
    models.table.save(directory)
    SidTrie.build(models.table).save(directory)
    export_generator(models.generator, directory)
    return SidSpec(
        sizes=models.layout.sizes,
        categories=models.n_categories,
        t_max=config.t_max,
        max_text_tokens=config.max_query_tokens,
        user_sids=config.user_sids,
        dim=config.dim,
        beams=list(config.beams),
        items_per_sid=_items_per_sid(models.table),
    )


def build_sid_channel(
    dataset: Dataset,
    texts: Sequence[str],
    tokenizer: TextTokenizer,
    dense: TwoTower,
    out_dir: Path,
    config: SidConfig,
) -> SidSpec:
    """Train and write the sid channel for a run (``model_export.text.build`` calls it after the
    dense two-tower it reads item and query vectors from)."""
    models = train_sid(dataset, texts, tokenizer, dense_content(dataset, texts, tokenizer, dense), config)
    log.info("sid codebooks: %s", {k: round(v, 3) for k, v in models.stats.items()})
    return write_sid(out_dir, models, config)
