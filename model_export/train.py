"""Train the NSP encoder on the training period; select the epoch on validation HR@K.

Objective (first version): every context token with earlier history predicts the items the
user engaged with (click or deeper) in its session — a sampled softmax of each such item
against uniformly drawn catalog items. The run directory holds everything ``publish`` needs:
the checkpoint (with its own config), the vocabulary, popularity lists and metrics.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from index.features import (
    COL,
    CONTEXT,
    MAX_ITEMS_PER_SESSION,
    MAX_SESSIONS,
    Session,
    build_tokens,
    stack_left_padded,
)
from index.vocab import Vocabulary
from model_export.data import Dataset, load_dataset
from model_export.evaluate import evaluate_model, evaluate_popularity

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
POPULARITY = "popularity.json"
METRICS = "metrics.json"
SELECT_METRIC = "hr@100"


@dataclass
class TrainConfig:
    epochs: int = 5  # validation HR@100 flattens after ~4 epochs on the demo world
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.01
    n_negatives: int = 1024  # uniform catalog negatives shared by the batch
    windows_per_user: int = 2  # random history windows drawn per user per epoch
    max_sessions: int = MAX_SESSIONS
    max_items: int = MAX_ITEMS_PER_SESSION
    seed: int = 0
    threads: int = 2
    model: dict[str, Any] = field(default_factory=dict)  # overrides of NSPConfig defaults


@dataclass
class Batch:
    tokens: torch.Tensor  # (B, T, F)
    query_rows: torch.Tensor  # (P,) flat index b*T + t of context tokens that predict
    pair_query: torch.Tensor  # (Q,) which query each positive belongs to
    pair_item: torch.Tensor  # (Q,) positive item index


def make_batch(
    histories: list[list[Session]], ends: list[int], vocab: Vocabulary, max_sessions: int, max_items: int
) -> Batch:
    """One training sequence per (history, end): sessions before ``end`` plus the query of ``end``.

    Context token number p of a sequence stands for window session p, the last one for the
    session at ``end`` itself; each with history (p ≥ 1) and engaged catalog items is a query.
    """
    sequences, targets = [], []
    for sessions, end in zip(histories, ends, strict=True):
        sequence = build_tokens(
            sessions[:end], sessions[end].scene, sessions[end].ts, vocab, max_sessions, max_items
        )
        first = max(0, end - max_sessions)
        window = sessions[first : end + 1]
        context_rows = np.flatnonzero(sequence[:, COL["token_type"]] == CONTEXT)
        per_row = []
        for p, (row, session) in enumerate(zip(context_rows, window, strict=True)):
            if p == 0:
                continue
            items = [i for i in map(vocab.item_index, session.engaged_items()) if i is not None]
            if items:
                per_row.append((row - len(sequence), items))  # negative: offset from the end
        sequences.append(sequence)
        targets.append(per_row)
    tokens = stack_left_padded(sequences)
    length = tokens.shape[1]
    query_rows, pair_query, pair_item = [], [], []
    for b, per_row in enumerate(targets):
        for from_end, items in per_row:
            query_rows.append(b * length + length + from_end)
            pair_query.extend([len(query_rows) - 1] * len(items))
            pair_item.extend(items)
    return Batch(
        torch.from_numpy(tokens),
        torch.tensor(query_rows, dtype=torch.long),
        torch.tensor(pair_query, dtype=torch.long),
        torch.tensor(pair_item, dtype=torch.long),
    )


def sampled_softmax_loss(
    model: Any, batch: Batch, vocab_tensors: tuple[torch.Tensor, torch.Tensor], negatives: torch.Tensor
) -> torch.Tensor:
    category, price = vocab_tensors
    hidden = model(batch.tokens)  # (B, T, D)
    users = model.user_vectors(hidden.reshape(-1, hidden.shape[-1])[batch.query_rows])  # (P, D)
    users = users[batch.pair_query]  # (Q, D)
    positives = model.item_vectors(batch.pair_item, category[batch.pair_item], price[batch.pair_item])
    negative_vecs = model.item_vectors(negatives, category[negatives], price[negatives])  # (N, D)
    tau = model.config.temperature
    pos_logit = (users * positives).sum(-1, keepdim=True) / tau  # (Q, 1)
    neg_logit = users @ negative_vecs.T / tau  # (Q, N)
    neg_logit = neg_logit.masked_fill(negatives[None, :] == batch.pair_item[:, None], float("-inf"))
    logits = torch.cat([pos_logit, neg_logit], dim=1)
    return F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long))


def train(
    dataset: Dataset, config: TrainConfig, out_dir: Path, progress: bool = True
) -> dict[str, dict[str, float]]:
    from model_export.model import NSPConfig, NSPModel

    torch.manual_seed(config.seed)
    torch.set_num_threads(config.threads)
    rng = np.random.default_rng(config.seed)
    vocab = dataset.vocab
    model_config = NSPConfig(
        n_items=vocab.n_items,
        n_category_tokens=vocab.n_category_tokens,
        n_scene_tokens=vocab.n_scene_tokens,
        **config.model,
    )
    model = NSPModel(model_config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    vocab_tensors = (torch.from_numpy(vocab.item_category), torch.from_numpy(vocab.item_price))
    histories = [s for s in dataset.train.values() if len(s) >= 2]
    out_dir.mkdir(parents=True, exist_ok=True)

    best: dict[str, Any] = {"score": -1.0}
    started = time.monotonic()
    for epoch in range(config.epochs):
        model.train()
        order = np.repeat(np.arange(len(histories)), config.windows_per_user)
        rng.shuffle(order)
        steps = range(0, len(order), config.batch_size)
        bar = tqdm(steps, desc=f"epoch {epoch + 1}/{config.epochs}", disable=not progress, leave=False)
        losses = []
        for start in bar:
            chosen = [histories[i] for i in order[start : start + config.batch_size]]
            ends = [int(rng.integers(1, len(h))) for h in chosen]
            batch = make_batch(chosen, ends, vocab, config.max_sessions, config.max_items)
            if len(batch.pair_item) == 0:
                continue
            negatives = torch.from_numpy(rng.integers(0, vocab.n_items, config.n_negatives))
            loss = sampled_softmax_loss(model, batch, vocab_tensors, negatives)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            losses.append(loss.item())
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.3f}")
        val = evaluate_model(model, dataset.val, vocab, config.max_sessions, config.max_items)
        log.info("epoch %d: loss %.4f  val %s", epoch + 1, float(np.mean(losses or [0.0])), _fmt(val))
        if val[SELECT_METRIC] > best["score"]:
            best = {"score": val[SELECT_METRIC], "epoch": epoch + 1, "state": _copy_state(model)}

    model.load_state_dict(best["state"])
    train_seconds = time.monotonic() - started
    results = {
        "val": evaluate_model(model, dataset.val, vocab, config.max_sessions, config.max_items),
        "test": evaluate_model(model, dataset.test, vocab, config.max_sessions, config.max_items),
        "test_popularity": evaluate_popularity(dataset.popularity, dataset.test, vocab, per_scene=False),
        "test_scene_popularity": evaluate_popularity(dataset.popularity, dataset.test, vocab, per_scene=True),
    }
    torch.save(
        {
            "model_config": model_config.to_dict(),
            "train_config": asdict(config),
            "state_dict": model.state_dict(),
            "best_epoch": best["epoch"],
            "data": {
                "data_start_ts": dataset.data_start,
                "val_start_ts": dataset.val_start,
                "test_start_ts": dataset.test_start,
                "data_end_ts": dataset.data_end,
            },
        },
        out_dir / CHECKPOINT,
    )
    vocab.save(out_dir)
    (out_dir / POPULARITY).write_text(json.dumps(dataset.popularity))
    summary = {**results, "train": {"seconds": train_seconds, "best_epoch": float(best["epoch"])}}
    (out_dir / METRICS).write_text(json.dumps(summary, indent=2))
    return summary


def _copy_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _fmt(metrics: dict[str, float]) -> str:
    return "  ".join(f"{k} {v:.4f}" for k, v in metrics.items())


def run(
    events: Path, catalog: Path, out_dir: Path, config: TrainConfig, progress: bool = True
) -> dict[str, Any]:
    dataset = load_dataset(events, catalog)
    return train(dataset, config, out_dir, progress)
