"""The NSP model in the ranking harness: its user and item vectors as a ``VectorRanker``.

``model_ranker`` ranks with the trained model exactly or through a real HNSW index built from
its item vectors (``model_export.retrieval``); the harness itself is ``model_export.ranking``.
This is the only evaluation module that needs torch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from index.ann import ItemIndex
from index.bundle import HnswParams
from index.features import QueryText, build_tokens, stack_left_padded
from index.vocab import Vocabulary
from model_export.batches import engaged_sequence
from model_export.data import EvalCase
from model_export.model import Encoder, NSPModel
from model_export.retrieval import VectorRanker


@torch.no_grad()
def item_matrix(model: NSPModel, vocab: Vocabulary) -> np.ndarray:
    """(N, D) float32 item vectors for the whole catalog, row = item index."""
    model.eval()
    index = torch.arange(vocab.n_items)
    vectors = model.item_vectors(
        index, torch.from_numpy(vocab.item_category), torch.from_numpy(vocab.item_price)
    )
    return vectors.numpy().astype(np.float32)


def case_sequence(
    case: EvalCase,
    vocab: Vocabulary,
    objective: str,
    max_sessions: int,
    max_items: int,
    ar_max_len: int,
    query_text: QueryText | None = None,
) -> np.ndarray:
    """The encoder input for a case: NSP tokens with the target session's context as the
    query (with its search text: known at request time), or (autoregressive baseline) the
    history's engaged items."""
    if objective == "autoregressive":
        return engaged_sequence(case.history, vocab, ar_max_len)
    target = case.target
    return build_tokens(
        case.history,
        target.scene,
        target.ts,
        vocab,
        max_sessions,
        max_items,
        query=target.query,
        query_text=query_text,
    )


@torch.no_grad()
def user_matrix(
    model: NSPModel,
    cases: Sequence[EvalCase],
    vocab: Vocabulary,
    max_sessions: int,
    max_items: int,
    objective: str = "nsp",
    ar_max_len: int = 100,
    batch_size: int = 256,
    query_text: QueryText | None = None,
) -> np.ndarray:
    """(N, D) user vectors, read at each case's last position (the query token, or last item);
    ``query_text`` for a model that reads queries (``model.config.query_pieces`` > 0)."""
    encoder = Encoder(model).eval()
    out = [np.zeros((0, model.config.dim), dtype=np.float32)]
    for start in range(0, len(cases), batch_size):
        sequences = [
            case_sequence(c, vocab, objective, max_sessions, max_items, ar_max_len, query_text)
            for c in cases[start : start + batch_size]
        ]
        out.append(encoder(torch.from_numpy(stack_left_padded(sequences))).numpy().astype(np.float32))
    return np.concatenate(out)


def model_ranker(
    model: NSPModel,
    vocab: Vocabulary,
    max_sessions: int,
    max_items: int,
    hnsw: HnswParams | None = None,
    objective: str = "nsp",
    ar_max_len: int = 100,
    query_text: QueryText | None = None,
) -> VectorRanker:
    """The trained model as a ranker: exact search, or an HNSW index built with ``hnsw``."""
    items = item_matrix(model, vocab)
    index = None if hnsw is None else ItemIndex.build(items, hnsw)

    def user_vectors(cases: Sequence[EvalCase]) -> np.ndarray:
        return user_matrix(
            model, cases, vocab, max_sessions, max_items, objective, ar_max_len, query_text=query_text
        )

    return VectorRanker(user_vectors, items, vocab, index)
