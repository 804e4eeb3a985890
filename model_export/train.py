"""Train the encoder on the training period; keep the epoch with the best validation HR@100.

Objectives (``TrainConfig.objective``): ``nsp`` — every context token with history predicts
its session and, with MSP, the next ones (see ``batches`` and ``losses``); ``autoregressive``
— the SASRec-style next-item baseline on the same backbone and budget. The run directory holds
everything ``publish`` needs: the checkpoint (with its own config), the vocabulary, the items'
metadata, popularity lists and metrics, and (for a log with search queries) the tokenizer.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from index.features import MAX_ITEMS_PER_SESSION, MAX_SESSIONS, QueryText, Session
from index.i2i import I2I_FILE
from index.item_meta import ITEM_META_FILE, ItemMeta
from index.tokenizer import TOKENIZER_FILE, TextTokenizer
from index.vocab import Vocabulary
from model_export.baselines import engaged_counts, fit_baselines, training_arrays
from model_export.batches import Batch, TargetSet, make_ar_batch, make_nsp_batch
from model_export.catalog_meta import catalog_meta
from model_export.channel_fit import DEFAULT_NEIGHBOURS, channel_rankers, fit_channels
from model_export.data import DAY, Dataset, EvalCase, load_training_dataset, read_catalog
from model_export.evaluate import item_matrix, model_ranker, user_matrix
from model_export.gram.config import GramConfig
from model_export.gram.targets import ProductAttributes, product_attributes
from model_export.losses import CountReduce, LogExpectedCount, LossKind, target_loss
from model_export.model import NSPConfig, NSPModel
from model_export.negatives import NegativeSampler, SamplerKind
from model_export.progress import progress_bar
from model_export.ranking import evaluate
from model_export.retrieval import VectorRanker
from model_export.sid.build import SidConfig
from model_export.text.build import TextConfig, build_text_channels, offline_text_searches
from model_export.text.corpus import fit_tokenizer, item_texts, training_queries
from model_export.text.dense import DenseConfig

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
POPULARITY = "popularity.json"
METRICS = "metrics.json"
UNSEEN_SUFFIX = "_unseen"  # metrics.json: the same evaluation with seen items excluded
CHANNELS = "channels.json"  # the fitted index.bundle.ChannelsSpec; beside it index.i2i.I2I_FILE
SELECT_METRIC = "hr@100"
LR_FLOOR = 0.1  # cosine decay ends at this share of the base lr
EVAL_KS = (20, 100)
# metrics.json key of each baseline, by its display name in model_export.baselines
BASELINE_KEYS = {
    "popularity (global)": "test_popularity",
    "popularity (per scene)": "test_scene_popularity",
    "user history": "test_user_history",
    "co-occurrence": "test_cooccurrence",
}


@dataclass
class TrainConfig:
    objective: Literal["nsp", "autoregressive"] = "nsp"
    loss: LossKind = "engaged"  # "cascade" measured worse on validation (docs/benchmarks/quality.md)
    # Per-scene loss normalisation: off since it measured worse (docs/model.md#quality).
    scene_norm: bool = False
    msp_weight: float = 0.5  # weight of horizons ≥ 2 relative to the next session
    moe_aux_weight: float = 0.01  # router balance loss
    epochs: int = 5  # validation HR@100 flattens after ~3-5 epochs on the demo world
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.01
    n_negatives: int = 1024  # catalog negatives drawn per step, shared by the batch
    # "popularity": drawn ∝ (training engagements + 1)^0.75 (model_export.negatives)
    negative_sampler: SamplerKind = "uniform"
    in_batch_negatives: bool = False  # the batch's other engaged target items are negatives too
    # Subtract log Q (expected count among the negatives) from every candidate's logit; a
    # no-op with uniform draws alone, so it matters only for popularity or in-batch negatives.
    logq_correction: bool = True
    drop_seen_targets: bool = False  # no targets the user had in an earlier session (exclude_seen)
    # Linear warm-up from lr / warmup_steps, then cosine decay to 10 % of lr at the last planned
    # step: measured better than a constant lr (docs/model.md#quality).
    warmup_steps: int = 50
    lr_decay: Literal["none", "cosine"] = "cosine"
    # Stop after this many epochs without a better validation HR@100 (with seen items excluded
    # when ``drop_seen_targets``: the metric of the deployment such a model is trained for).
    patience: int | None = None
    windows_per_user: int = 2  # random history windows drawn per user per epoch
    max_sessions: int = MAX_SESSIONS
    max_items: int = MAX_ITEMS_PER_SESSION
    ar_max_len: int = 100  # engaged items in an autoregressive sequence
    seed: int = 0
    threads: int = 2
    # Target sessions only from the last ``window_days`` before validation (older sessions
    # remain context): pretraining on a limited recent window, and every PIT round.
    window_days: int | None = None
    baselines: bool = True  # also judge the classic baselines on the test split
    # Fit the classic channels and the merge on validation and write them for the bundle (nsp
    # objective only). ``i2i_neighbours``: co-occurrence neighbours kept per item.
    channels: bool = True
    i2i_neighbours: int = DEFAULT_NEIGHBOURS
    model: dict[str, Any] = field(default_factory=dict)  # overrides of NSPConfig defaults
    # The text channels (BM25, dense two-tower) built beside the model for a log with queries.
    text: TextConfig = field(default_factory=TextConfig)
    # Query pieces a context token reads (NSPConfig.query_pieces); 0 disables, and so does
    # training without a tokenizer (``run`` sets 0 for a log without queries).
    query_pieces: int = 8

    @classmethod
    def from_dict(cls, fields: dict[str, Any]) -> TrainConfig:
        """The config ``asdict`` saved in a checkpoint (its nested text config rebuilt; a
        checkpoint from before the text channels gets the default one)."""
        text = dict(fields.get("text") or {})
        dense = DenseConfig(**text.pop("dense_config", {}))
        sid = SidConfig(**sid_fields) if (sid_fields := text.pop("sid_config", None)) else SidConfig()
        gram = GramConfig(**gram_fields) if (gram_fields := text.pop("gram_config", None)) else GramConfig()
        text_config = TextConfig(**text, dense_config=dense, sid_config=sid, gram_config=gram)
        return cls(**{**fields, "text": text_config})

    @property
    def uniform_negatives_alone(self) -> bool:
        """Uniform draws and no in-batch negatives: log Q is a constant, the correction a no-op."""
        return self.negative_sampler == "uniform" and not self.in_batch_negatives


def _subset(targets: TargetSet, keep: torch.Tensor) -> TargetSet:
    return TargetSet(
        targets.query[keep],
        targets.horizon[keep],
        targets.items[keep],
        targets.actions[keep],
        targets.scene[keep],
    )


@dataclass(frozen=True)
class Parallel:
    """This process's place under ``torchrun`` (data parallel over gloo); rank 0 of 1 alone.

    Every process draws the same batches and negatives (same seed) and trains on its shard
    (every ``world``-th history) of each batch; loss denominators are summed over processes
    and each process's loss is scaled by ``world``, so DDP's gradient average is exactly the
    single-process gradient (up to float summation order). Exceptions: dropout masks and the
    MoE balance loss are per shard.
    """

    rank: int = 0
    world: int = 1

    @classmethod
    def from_env(cls) -> Parallel:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world == 1:
            return cls()
        if not dist.is_initialized():
            dist.init_process_group("gloo")
        return cls(dist.get_rank(), world)

    def count_reduce(self) -> CountReduce | None:
        if self.world == 1:
            return None

        def reduce(counts: torch.Tensor) -> torch.Tensor:
            counts = counts.clone()
            dist.all_reduce(counts)
            return counts

        return reduce

    def total(self, value: int) -> int:
        """``value`` summed over processes."""
        reduce = self.count_reduce()
        return value if reduce is None else int(reduce(torch.tensor([value]))[0])

    def rank_zero_says(self, flag: bool) -> bool:
        """Rank 0's ``flag`` on every process (a decision only rank 0 can make, e.g. to stop)."""
        if self.world == 1:
            return flag
        shared = torch.tensor([int(flag)])
        dist.broadcast(shared, src=0)
        return bool(shared[0])


SINGLE = Parallel()


def batch_loss(
    model: NSPModel,
    batch: Batch,
    config: TrainConfig,
    vocab_tensors: tuple[torch.Tensor, torch.Tensor],
    negatives: torch.Tensor,
    parallel: Parallel = SINGLE,
    log_q: LogExpectedCount | None = None,
) -> torch.Tensor:
    """The step's loss; ``log_q``: the sampling correction (``negative_correction``)."""
    category, price = vocab_tensors
    count_reduce = parallel.count_reduce()
    hidden = model(batch.tokens)  # (B, T, D)
    queries = hidden.reshape(-1, hidden.shape[-1])[batch.query_rows]  # (P, D)
    negative_vecs = model.item_vectors(negatives, category[negatives], price[negatives])  # (N, D)
    kind: LossKind = "engaged" if config.objective == "autoregressive" else config.loss
    total = model.aux_loss() * config.moe_aux_weight
    heads = torch.stack([model.user_vectors(queries, h) for h in range(len(model.user_heads))])  # (H, P, D)
    for horizon_group, weight in (
        (batch.targets.horizon == 0, 1.0),
        (batch.targets.horizon > 0, config.msp_weight),
    ):
        # Computed even when empty (a zero term): every process must make the same reductions.
        targets = _subset(batch.targets, horizon_group)
        users = heads[targets.horizon, targets.query]  # (S, D)
        items = targets.items.clamp(min=0)
        item_vecs = model.item_vectors(items, category[items], price[items])  # (S, L, D)
        term = target_loss(
            users,
            item_vecs,
            negative_vecs,
            negatives,
            targets,
            model.config.temperature,
            kind,
            config.scene_norm,
            model.config.n_scene_tokens,
            count_reduce,
            config.in_batch_negatives,
            log_q,
        )
        total = total + weight * parallel.world * term
    return total


class _BatchLoss(nn.Module):
    """``batch_loss`` as a module's forward, so ``DistributedDataParallel`` can wrap it."""

    def __init__(
        self,
        model: NSPModel,
        config: TrainConfig,
        vocab_tensors: tuple[torch.Tensor, torch.Tensor],
        parallel: Parallel,
        log_q: LogExpectedCount | None,
    ) -> None:
        super().__init__()
        self.model = model
        self.config = config
        self.vocab_tensors = vocab_tensors
        self.parallel = parallel
        self.log_q = log_q

    def forward(self, batch: Batch, negatives: torch.Tensor) -> torch.Tensor:
        return batch_loss(
            self.model, batch, self.config, self.vocab_tensors, negatives, self.parallel, self.log_q
        )


def negative_sampler(dataset: Dataset, config: TrainConfig) -> NegativeSampler:
    """The step's negative sampler; engagement counts (one pass over the training sessions)
    only where the sampler or the correction needs them."""
    corrected = config.logq_correction and not config.uniform_negatives_alone
    if config.negative_sampler == "uniform" and not corrected:
        return NegativeSampler.uniform(dataset.vocab.n_items)
    counts = engaged_counts(training_arrays(dataset.train, dataset.vocab), dataset.vocab.n_items)
    return NegativeSampler.fit(config.negative_sampler, counts)


def negative_correction(sampler: NegativeSampler, config: TrainConfig) -> LogExpectedCount | None:
    """log Q for the loss, or None where it would be a constant (uniform draws alone)."""
    applies = config.logq_correction and not config.uniform_negatives_alone
    return sampler.log_expected_count if applies else None


def lr_factor(step: int, warmup_steps: int, decay: Literal["none", "cosine"], total_steps: int) -> float:
    """Multiplier of the base lr at optimizer step ``step`` (0-based): linear warm-up to 1 over
    ``warmup_steps``, then constant or a cosine to ``LR_FLOOR`` at ``total_steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if decay == "none":
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return LR_FLOOR + (1.0 - LR_FLOOR) * 0.5 * (1.0 + math.cos(math.pi * progress))


def model_ranker_for(
    model: NSPModel, config: TrainConfig, vocab: Vocabulary, query_text: QueryText | None = None
) -> VectorRanker:
    return model_ranker(
        model,
        vocab,
        config.max_sessions,
        config.max_items,
        objective=config.objective,
        ar_max_len=config.ar_max_len,
        query_text=query_text,
    )


def evaluate_cases(
    model: NSPModel,
    cases: Sequence[EvalCase],
    vocab: Vocabulary,
    config: TrainConfig,
    ks: Sequence[int] = EVAL_KS,
    query_text: QueryText | None = None,
) -> dict[str, float]:
    return evaluate(model_ranker_for(model, config, vocab, query_text), cases, vocab, ks)


def build_model(vocab: Vocabulary, config: TrainConfig, tokenizer: TextTokenizer | None = None) -> NSPModel:
    """A fresh model; it reads ``config.query_pieces`` query pieces when given a ``tokenizer``
    (the NSP objective only)."""
    overrides = dict(config.model)
    if config.objective == "autoregressive":
        overrides.setdefault("msp_horizons", 1)
    elif tokenizer is not None and config.query_pieces > 0:
        overrides.update(query_pieces=config.query_pieces, query_vocab=tokenizer.vocab_size)
    return NSPModel(
        NSPConfig(
            n_items=vocab.n_items,
            n_category_tokens=vocab.n_category_tokens,
            n_scene_tokens=vocab.n_scene_tokens,
            **overrides,
        )
    )


def query_text_for(model: NSPModel, tokenizer: TextTokenizer | None) -> QueryText | None:
    """How ``model``'s sequences carry queries; None for a model that reads none. A model that
    reads them needs the tokenizer it was trained with (``ValueError`` without one)."""
    if model.config.query_pieces == 0:
        return None
    if tokenizer is None:
        raise ValueError("the model reads query pieces: pass the tokenizer it was trained with")
    return QueryText(tokenizer, model.config.query_pieces)


class NoTrainingData(ValueError):
    """No training user has a target session in the window."""


def training_examples(
    dataset: Dataset, window_days: int | None
) -> tuple[list[list[Session]], list[int], int]:
    """(histories, lowest target position per history, window start ts): every training user
    with a target session inside the window; earlier sessions stay as context."""
    start = dataset.data_start if window_days is None else dataset.val_start - window_days * DAY
    histories, lowest = [], []
    for sessions in dataset.train.values():
        first = next((p for p, s in enumerate(sessions) if s.ts >= start), len(sessions))
        if max(first, 1) < len(sessions):
            histories.append(sessions)
            lowest.append(max(first, 1))
    return histories, lowest, start


def train(
    dataset: Dataset,
    config: TrainConfig,
    out_dir: Path,
    progress: bool = True,
    start: NSPModel | None = None,
    round_info: dict[str, Any] | None = None,
    channel_data: Dataset | None = None,
    tokenizer: TextTokenizer | None = None,
    texts: Sequence[str] | None = None,
    products: ProductAttributes | None = None,
    item_meta: ItemMeta | None = None,
) -> dict[str, dict[str, float]]:
    """Train (from ``start`` when given: an incremental round) and write the run directory.

    ``round_info`` (``kind``, ``bucket``) goes into the checkpoint for the bundle manifest.
    ``channel_data``: the data the channels and merge are fitted on (default ``dataset``; a
    PIT round trains on one bucket but fits the channels on every user). ``tokenizer``: the
    text tokenizer (``run`` fits it on a log with queries; a round passes its start's); it is
    written to the run, and a fresh model reads ``config.query_pieces`` pieces with it.
    ``texts``: each item's text by label; with a tokenizer, the text channels are built too.
    ``item_meta``: each item's metadata by label (``model_export.catalog_meta``), written to the
    run for the bundle.
    """
    parallel = Parallel.from_env()
    torch.manual_seed(config.seed)
    torch.set_num_threads(max(1, config.threads // parallel.world))
    rng = np.random.default_rng(config.seed)
    vocab = dataset.vocab
    model = start if start is not None else build_model(vocab, config, tokenizer)
    query_text = query_text_for(model, tokenizer)
    histories, lowest, window_start = training_examples(dataset, config.window_days)
    if not histories:
        raise NoTrainingData("no training user has a target session in the window")
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    planned_steps = config.epochs * math.ceil(len(histories) * config.windows_per_user / config.batch_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, config.warmup_steps, config.lr_decay, planned_steps)
    )
    sampler = negative_sampler(dataset, config)
    vocab_tensors = (torch.from_numpy(vocab.item_category), torch.from_numpy(vocab.item_price))
    step: nn.Module = _BatchLoss(model, config, vocab_tensors, parallel, negative_correction(sampler, config))
    if parallel.world > 1:
        step = DistributedDataParallel(step, find_unused_parameters=True)
    progress = progress and parallel.rank == 0
    horizons = model.config.msp_horizons
    out_dir.mkdir(parents=True, exist_ok=True)

    best: dict[str, Any] = {"score": -1.0}
    epochs_run = 0
    started = time.monotonic()
    for epoch in range(config.epochs):
        model.train()
        order = np.repeat(np.arange(len(histories)), config.windows_per_user)
        rng.shuffle(order)
        steps = range(0, len(order), config.batch_size)
        bar = progress_bar(steps, progress, desc=f"epoch {epoch + 1}/{config.epochs}", leave=False)
        losses = []
        for offset in bar:
            picked = order[offset : offset + config.batch_size]
            ends = [int(rng.integers(lowest[i], len(histories[i]))) for i in picked]
            if len(picked) < parallel.world:
                continue  # a last batch too small to give every process a shard (never alone)
            shard = slice(parallel.rank, None, parallel.world)
            chosen, ends = [histories[i] for i in picked[shard]], ends[shard]
            drop_seen = config.drop_seen_targets
            if config.objective == "autoregressive":
                batch = make_ar_batch(chosen, ends, vocab, config.ar_max_len, drop_seen)
            else:
                batch = make_nsp_batch(
                    chosen,
                    ends,
                    vocab,
                    config.max_sessions,
                    config.max_items,
                    horizons,
                    drop_seen,
                    query_text,
                )
            if parallel.total(len(batch.targets.query)) == 0:
                continue
            negatives = sampler.draw(rng, config.n_negatives)
            loss = step(batch, negatives)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.3f}")
        epochs_run = epoch + 1
        stop = False
        if parallel.rank == 0:  # rank 0 alone selects, evaluates and writes the run
            # Without validation cases there is nothing to select on: the last epoch is kept.
            val = (
                evaluate_cases(model, dataset.val, vocab, config, query_text=query_text)
                if dataset.val
                else {}
            )
            log.info("epoch %d: loss %.4f  val %s", epoch + 1, float(np.mean(losses or [0.0])), _fmt(val))
            score = val[SELECT_METRIC] if val else float(epoch)
            if val and config.drop_seen_targets:
                # Trained for a deployment that excludes seen items: selected as it will be judged.
                nsp = model_ranker_for(model, config, vocab, query_text)
                unseen = evaluate(nsp, dataset.val, vocab, EVAL_KS, True)
                score = unseen[SELECT_METRIC]
            if score > best["score"]:
                best = {"score": score, "epoch": epoch + 1, "state": _copy_state(model)}
            stop = config.patience is not None and epoch + 1 - best["epoch"] >= config.patience
        if parallel.rank_zero_says(stop):
            break

    if parallel.rank != 0:
        return {}
    model.load_state_dict(best["state"])
    train_seconds = time.monotonic() - started
    val = evaluate_cases(model, dataset.val, vocab, config, query_text=query_text) if dataset.val else {}
    results = {"val": val}
    if dataset.test:
        results["test"] = evaluate_cases(model, dataset.test, vocab, config, query_text=query_text)
    if config.channels and config.objective == "nsp":
        fit_on = channel_data or dataset
        text = TextInputs(tokenizer, texts, products) if tokenizer is not None and texts is not None else None
        results.update(fit_and_write_channels(model, fit_on, dataset, config, out_dir, query_text, text))
    if dataset.test and config.baselines:
        # The same harness and split for the baselines a user would otherwise pick.
        for name, ranker in fit_baselines(dataset.train, vocab).items():
            results[BASELINE_KEYS[name]] = evaluate(ranker, dataset.test, vocab, EVAL_KS)
            results[BASELINE_KEYS[name] + UNSEEN_SUFFIX] = evaluate(
                ranker, dataset.test, vocab, EVAL_KS, exclude_seen=True
            )
    torch.save(
        {
            "model_config": model.config.to_dict(),
            "train_config": asdict(config),
            "state_dict": model.state_dict(),
            "best_epoch": best["epoch"],
            "data": {
                "kind": "pretrain",
                **(round_info or {}),
                "window_start_ts": window_start,
                "data_start_ts": dataset.data_start,
                "val_start_ts": dataset.val_start,
                "test_start_ts": dataset.test_start,
                "data_end_ts": dataset.data_end,
            },
        },
        out_dir / CHECKPOINT,
    )
    vocab.save(out_dir)
    if item_meta is not None:
        item_meta.save(out_dir / ITEM_META_FILE, vocab.item_ids.tolist())
    if tokenizer is not None:
        tokenizer.save(out_dir / TOKENIZER_FILE)
    (out_dir / POPULARITY).write_text(json.dumps(dataset.popularity))
    summary = {
        **results,
        "train": {"seconds": train_seconds, "best_epoch": float(best["epoch"]), "epochs": float(epochs_run)},
    }
    (out_dir / METRICS).write_text(json.dumps(summary, indent=2))
    return summary


@dataclass(frozen=True)
class TextInputs:
    """What the text channels are built from: the shared tokenizer and each item's text."""

    tokenizer: TextTokenizer
    texts: Sequence[str]  # by vocabulary label
    products: ProductAttributes | None = None  # titles and attributes: the gram channel's input


def fit_and_write_channels(
    model: NSPModel,
    fit_on: Dataset,
    dataset: Dataset,
    config: TrainConfig,
    out_dir: Path,
    query_text: QueryText | None = None,
    text: TextInputs | None = None,
) -> dict[str, dict[str, float]]:
    """Build the text channels (given ``text``), fit the channels and merges on ``fit_on``'s
    validation cases, write them to the run, and return the merged list's validation and test
    metrics for both exclusion policies (and for the search cases, with the search merge)."""
    vocab = dataset.vocab

    def user_vectors(cases: Sequence[EvalCase]) -> np.ndarray:
        return user_matrix(model, cases, vocab, config.max_sessions, config.max_items, query_text=query_text)

    searches = {}
    if text is not None:
        text_spec = build_text_channels(
            fit_on, text.texts, text.tokenizer, out_dir, config.text, text.products
        )
        searches = offline_text_searches(out_dir, text_spec, text.tokenizer, vocab)
    spec, table, source = fit_channels(
        fit_on, user_vectors, item_matrix(model, vocab), config.i2i_neighbours, text=searches
    )
    table.save(out_dir / I2I_FILE)
    (out_dir / CHANNELS).write_text(spec.model_dump_json(indent=2))
    results: dict[str, dict[str, float]] = {}
    for search, val_cases, test_cases in (
        (False, fit_on.val, dataset.test),
        (True, fit_on.search_val, dataset.search_test),
    ):
        merged = channel_rankers(source, spec, search)["merged"]
        prefix = "search_merged" if search else "merged"
        for split, cases in (("val", val_cases), ("test", test_cases)):
            for suffix, exclude_seen in (("", False), (UNSEEN_SUFFIX, True)):
                if cases:
                    metrics = evaluate(merged, cases, vocab, EVAL_KS, exclude_seen, per_k=True)
                    results[f"{split}_{prefix}{suffix}"] = metrics
    return results


def _copy_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _fmt(metrics: dict[str, float]) -> str:
    return "  ".join(f"{k} {v:.4f}" for k, v in metrics.items())


def run(
    events: Path,
    catalog: Path,
    out_dir: Path,
    config: TrainConfig,
    progress: bool = True,
    val_days: int = 1,
    test_days: int = 1,
) -> dict[str, Any]:
    """``train`` on the log; a log ``load_training_dataset`` refuses raises its ``DataError``
    before anything is written. A log with search queries first gets its text tokenizer, fitted
    on the catalog's item texts and the training queries."""
    dataset = load_training_dataset(events, catalog, val_days, test_days)
    tokenizer, texts, products = None, None, None
    frame = read_catalog(catalog)
    meta = catalog_meta(frame, dataset.vocab)
    queries = training_queries(dataset.train)
    if queries:
        texts = item_texts(frame, dataset.vocab)
        tokenizer = fit_tokenizer(texts, queries)
        products = product_attributes(frame, catalog.parent, dataset.vocab)
    else:
        config = replace(config, query_pieces=0)  # no queries to read: recorded as such
    return train(
        dataset,
        config,
        out_dir,
        progress,
        tokenizer=tokenizer,
        texts=texts,
        products=products,
        item_meta=meta,
    )
