"""Full-catalog retrieval metrics on held-out next sessions.

Every metric ranks the *whole* catalog (no sampled negatives): a case is a hit at K when any
item the user engaged with in the target session is among the top K; Recall@K is the share of
those items in the top K.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from index.features import build_tokens, stack_left_padded
from index.vocab import Vocabulary
from model_export.data import EvalCase
from model_export.model import Encoder, NSPModel

DEFAULT_KS = (20, 100)


def topk_exact(users: np.ndarray, items: np.ndarray, k: int, chunk: int = 1024) -> np.ndarray:
    """(N, k) item indices by descending inner product, exact over all items."""
    k = min(k, len(items))
    ranked = np.empty((len(users), k), dtype=np.int64)
    for start in range(0, len(users), chunk):
        scores = users[start : start + chunk] @ items.T  # (n, M)
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1)
        ranked[start : start + chunk] = np.take_along_axis(top, order, axis=1)
    return ranked


def hit_metrics(
    ranked: np.ndarray, targets: Sequence[set[int]], ks: Sequence[int] = DEFAULT_KS
) -> dict[str, float]:
    """HR@K and Recall@K averaged over cases; ranked rows are item indices, best first."""
    metrics: dict[str, float] = {}
    for k in ks:
        hits, recalls = [], []
        for row, target in zip(ranked[:, :k], targets, strict=True):
            found = len(target.intersection(row.tolist()))
            hits.append(found > 0)
            recalls.append(found / len(target))
        metrics[f"hr@{k}"] = float(np.mean(hits)) if hits else 0.0
        metrics[f"recall@{k}"] = float(np.mean(recalls)) if recalls else 0.0
    return metrics


def case_targets(cases: Sequence[EvalCase], vocab: Vocabulary) -> tuple[list[EvalCase], list[set[int]]]:
    """Cases with at least one target item in the catalog, and those targets as item indices."""
    kept, targets = [], []
    for case in cases:
        indices = {i for i in map(vocab.item_index, case.target_items()) if i is not None}
        if indices:
            kept.append(case)
            targets.append(indices)
    return kept, targets


@torch.no_grad()
def item_matrix(model: NSPModel, vocab: Vocabulary) -> np.ndarray:
    """(N, D) float32 item vectors for the whole catalog, row = item index."""
    model.eval()
    index = torch.arange(vocab.n_items)
    vectors = model.item_vectors(
        index, torch.from_numpy(vocab.item_category), torch.from_numpy(vocab.item_price)
    )
    return vectors.numpy().astype(np.float32)


def case_tokens(case: EvalCase, vocab: Vocabulary, max_sessions: int, max_items: int) -> np.ndarray:
    return build_tokens(case.history, case.target.scene, case.target.ts, vocab, max_sessions, max_items)


@torch.no_grad()
def user_matrix(
    model: NSPModel,
    cases: Sequence[EvalCase],
    vocab: Vocabulary,
    max_sessions: int,
    max_items: int,
    batch_size: int = 256,
) -> np.ndarray:
    """(N, D) user vectors: each case's history plus its target session's context as the query."""
    encoder = Encoder(model).eval()
    out = []
    for start in range(0, len(cases), batch_size):
        sequences = [
            case_tokens(c, vocab, max_sessions, max_items) for c in cases[start : start + batch_size]
        ]
        out.append(encoder(torch.from_numpy(stack_left_padded(sequences))).numpy())
    dim = model.config.dim
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, dim), dtype=np.float32)


def evaluate_model(
    model: NSPModel,
    cases: Sequence[EvalCase],
    vocab: Vocabulary,
    max_sessions: int,
    max_items: int,
    ks: Sequence[int] = DEFAULT_KS,
) -> dict[str, float]:
    kept, targets = case_targets(cases, vocab)
    users = user_matrix(model, kept, vocab, max_sessions, max_items)
    return hit_metrics(topk_exact(users, item_matrix(model, vocab), max(ks)), targets, ks)


def evaluate_popularity(
    popularity: dict[str, list[str]],
    cases: Sequence[EvalCase],
    vocab: Vocabulary,
    per_scene: bool,
    ks: Sequence[int] = DEFAULT_KS,
) -> dict[str, float]:
    """The baseline a service without a model would serve: most engaged items (per scene)."""
    kept, targets = case_targets(cases, vocab)
    width = max(ks)
    rows = []
    for case in kept:
        ranking = popularity.get(case.target.scene, []) if per_scene else []
        ranking = ranking or popularity["*"]
        indices = [i for i in map(vocab.item_index, ranking[:width]) if i is not None]
        rows.append(indices + [-1] * (width - len(indices)))
    ranked = np.asarray(rows, dtype=np.int64).reshape(len(kept), width)
    return hit_metrics(ranked, targets, ks)
