"""The NSP model in the ranking harness: its user and item vectors as a ``VectorRanker``.

``model_ranker`` ranks with the trained model exactly or through a real HNSW index built from
its item vectors (``model_export.retrieval``). The harness (``evaluate``, ``case_targets``,
``model_export.ranking``), the metric math (``model_export.metrics``) and ``topk_exact`` are
re-exported here for the training loop. This is the only evaluation module that needs torch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from index.ann import ItemIndex
from index.bundle import HnswParams
from index.features import build_tokens, stack_left_padded
from index.vocab import Vocabulary
from model_export.baselines import PopularityRanker
from model_export.data import EvalCase
from model_export.metrics import DEFAULT_KS, hit_metrics
from model_export.model import Encoder, NSPModel
from model_export.ranking import case_targets, evaluate
from model_export.retrieval import VectorRanker, topk_exact

__all__ = [
    "DEFAULT_KS",
    "VectorRanker",
    "case_targets",
    "evaluate",
    "evaluate_model",
    "evaluate_popularity",
    "hit_metrics",
    "item_matrix",
    "model_ranker",
    "topk_exact",
    "user_matrix",
]


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


def model_ranker(
    model: NSPModel, vocab: Vocabulary, max_sessions: int, max_items: int, hnsw: HnswParams | None = None
) -> VectorRanker:
    """The trained model as a ranker: exact search, or an HNSW index built with ``hnsw``."""
    items = item_matrix(model, vocab)
    index = None if hnsw is None else ItemIndex.build(items, hnsw)

    def user_vectors(cases: Sequence[EvalCase]) -> np.ndarray:
        return user_matrix(model, cases, vocab, max_sessions, max_items)

    return VectorRanker(user_vectors, items, vocab, index)


def evaluate_model(
    model: NSPModel,
    cases: Sequence[EvalCase],
    vocab: Vocabulary,
    max_sessions: int,
    max_items: int,
    ks: Sequence[int] = DEFAULT_KS,
    exclude_seen: bool = False,
    hnsw: HnswParams | None = None,
) -> dict[str, float]:
    ranker = model_ranker(model, vocab, max_sessions, max_items, hnsw)
    return evaluate(ranker, cases, vocab, ks, exclude_seen)


def evaluate_popularity(
    popularity: dict[str, list[str]],
    cases: Sequence[EvalCase],
    vocab: Vocabulary,
    per_scene: bool,
    ks: Sequence[int] = DEFAULT_KS,
    exclude_seen: bool = False,
) -> dict[str, float]:
    """The baseline a service without a model would serve: most engaged items (per scene)."""
    ranker = PopularityRanker.from_lists(popularity, vocab, per_scene)
    return evaluate(ranker, cases, vocab, ks, exclude_seen)
