"""The dense text channel's model: a two-tower query/item encoder trained on query → click.

Both towers read WordPiece ids (``index.tokenizer``, 0 = padding) through one shared piece
table, mean-pool the real pieces, pass the pool through a tower-specific head and L2-normalise,
so a query and an item score by their inner product. Training is in-batch softmax (InfoNCE):
each query's clicked item against the other items of the batch. Only the query tower ships as
ONNX (``query_encoder.onnx``); the item tower runs once here and its vectors go into an HNSW
index (``text_items.hnsw``), with a probe (``text_probe.npz``) the service checks at load.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from index.ann import ItemIndex, choose_ef, exact_top_k
from index.bundle import DenseSpec, HnswParams
from index.dense import (
    DENSE_FILES,
    INPUT_NAME,
    OUTPUT_NAME,
    QUERY_ENCODER_FILE,
    TEXT_INDEX_FILE,
    TEXT_PROBE_FILE,
)
from index.tokenizer import PAD_ID, TextTokenizer
from model_export.export import ExportMismatch, export_module, onnx_session
from model_export.progress import progress_bar

log = logging.getLogger(__name__)

__all__ = [  # DENSE_FILES is index.dense's, re-exported for the offline side
    "DENSE_FILES",
    "DenseConfig",
    "TwoTower",
    "check_query_encoder",
    "in_batch_loss",
    "item_vectors",
    "probe_ids",
    "query_vectors",
    "recall_at",
    "train_dense",
    "write_dense",
]

PROBE_LENGTHS = (1, 4, 16)  # query pieces of the probe rows; max_query_tokens is added


@dataclass
class DenseConfig:
    dim: int = 64  # piece-embedding and vector size; the HNSW index holds vectors of this size
    max_query_tokens: int = 16  # pieces of a query read (the manifest's text.max_query_tokens)
    max_item_tokens: int = 48  # pieces of an item's title + attributes read (titles come first)
    mlp_hidden: int = 0  # hidden size of a residual MLP in each tower head; 0: a linear head
    epochs: int = 5  # not yet tuned on a real log: pass val_pairs and watch val recall@100
    batch_size: int = 256  # also the number of in-batch negatives (less duplicates) per query
    lr: float = 3e-3  # Adam; embeddings of rare pieces get few updates, so higher than usual
    temperature: float = 0.05  # softmax temperature on cosine scores; as the NSP loss uses
    seed: int = 0  # initialisation and batch order; the same seed trains the same model
    progress: bool = True  # a progress bar per epoch (drawn only when stderr is a terminal)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


class Tower(nn.Module):
    """Piece ids → one L2-normalised vector: masked mean of the (shared) piece embeddings, then
    this tower's head."""

    def __init__(self, pieces: nn.Embedding, dim: int, mlp_hidden: int) -> None:
        super().__init__()
        self.pieces = pieces
        self.head = nn.Linear(dim, dim)
        self.mlp = (
            nn.Sequential(nn.Linear(dim, mlp_hidden), nn.GELU(), nn.Linear(mlp_hidden, dim))
            if mlp_hidden > 0
            else None
        )

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, L) int64 → (B, D); a row without pieces gives the zero vector."""
        mask = (ids != PAD_ID).unsqueeze(-1).to(torch.float32)  # (B, L, 1)
        summed = (self.pieces(ids) * mask).sum(dim=1)  # (B, D)
        pooled = summed / mask.sum(dim=1).clamp(min=1.0)  # (B, D)
        if self.mlp is not None:
            pooled = pooled + self.mlp(pooled)
        return F.normalize(self.head(pooled), dim=-1)


class TwoTower(nn.Module):
    def __init__(self, vocab_size: int, config: DenseConfig) -> None:
        super().__init__()
        self.config = config
        pieces = nn.Embedding(vocab_size, config.dim, padding_idx=PAD_ID)
        # Larger than the usual 0.02: pieces found only in never-clicked items get no gradient and
        # keep these random directions, which should not vanish next to the trained pieces.
        nn.init.normal_(pieces.weight, std=0.1)
        with torch.no_grad():
            pieces.weight[PAD_ID].zero_()
        self.query = Tower(pieces, config.dim, config.mlp_hidden)
        self.item = Tower(pieces, config.dim, config.mlp_hidden)

    def forward(self, query_ids: torch.Tensor, item_ids: torch.Tensor) -> torch.Tensor:
        """(B, Lq), (N, Li) int64 → (B, N) cosine scores of every query against every item."""
        return self.query(query_ids) @ self.item(item_ids).T


def in_batch_loss(
    model: TwoTower, query_ids: torch.Tensor, item_ids: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """InfoNCE of each query (B, Lq) against its clicked item (B, Li) with the batch's other items
    as negatives; another row's copy of the clicked item (``labels`` (B,) equal) is no negative."""
    logits = model(query_ids, item_ids) / model.config.temperature  # (B, B)
    same = labels[:, None] == labels[None, :]  # (B, B)
    duplicate = same & ~torch.eye(len(labels), dtype=torch.bool)
    logits = logits.masked_fill(duplicate, float("-inf"))
    return F.cross_entropy(logits, torch.arange(len(labels)))


def train_dense(
    pairs: Sequence[tuple[str, int]],
    item_texts: Sequence[str],
    tokenizer: TextTokenizer,
    config: DenseConfig,
    val_pairs: Sequence[tuple[str, int]] | None = None,
) -> TwoTower:
    """Train on (query, clicked item label) pairs; labels index ``item_texts``. Deterministic for
    a seed (on the CPU). Logs the loss and, with ``val_pairs``, val recall@100 over the full
    catalog after each epoch."""
    if not pairs:
        raise ValueError("no query → item pairs to train the dense encoder on")
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    model = TwoTower(tokenizer.vocab_size, config)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    queries = torch.from_numpy(tokenizer.ids([q for q, _ in pairs], config.max_query_tokens))  # (P, Lq)
    labels = torch.tensor([label for _, label in pairs], dtype=torch.int64)  # (P,)
    items = torch.from_numpy(tokenizer.ids(item_texts, config.max_item_tokens))  # (N, Li)
    for epoch in range(config.epochs):
        model.train()
        order = torch.randperm(len(pairs), generator=generator)
        batches = order.split(config.batch_size)
        total = 0.0
        bar = progress_bar(batches, config.progress, desc=f"dense {epoch + 1}/{config.epochs}", leave=False)
        for batch in bar:
            loss = in_batch_loss(model, queries[batch], items[labels[batch]], labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
        message = f"dense epoch {epoch + 1}/{config.epochs}: loss {total / len(pairs):.4f}"
        if val_pairs:
            message += f", val recall@100 {recall_at(model, val_pairs, item_texts, tokenizer, 100):.4f}"
        log.info(message)
    return model.eval()


@torch.no_grad()
def item_vectors(
    model: TwoTower, item_texts: Sequence[str], tokenizer: TextTokenizer, chunk: int = 4096
) -> np.ndarray:
    """(N, D) float32 item-tower vectors in label order."""
    model.eval()
    ids = tokenizer.ids(item_texts, model.config.max_item_tokens)
    parts = [model.item(torch.from_numpy(ids[i : i + chunk])).numpy() for i in range(0, len(ids), chunk)]
    return np.concatenate(parts) if parts else np.zeros((0, model.config.dim), np.float32)


@torch.no_grad()
def query_vectors(model: TwoTower, queries: Sequence[str], tokenizer: TextTokenizer) -> np.ndarray:
    """(Q, D) float32 query-tower vectors."""
    model.eval()
    return model.query(torch.from_numpy(tokenizer.ids(queries, model.config.max_query_tokens))).numpy()


def recall_at(
    model: TwoTower,
    pairs: Sequence[tuple[str, int]],
    item_texts: Sequence[str],
    tokenizer: TextTokenizer,
    k: int,
) -> float:
    """Share of (query, label) pairs whose label is among the query's exact top-k items."""
    if not pairs:
        return 0.0
    top = exact_top_k(
        item_vectors(model, item_texts, tokenizer), query_vectors(model, [q for q, _ in pairs], tokenizer), k
    )
    labels = np.asarray([label for _, label in pairs])
    return float((top == labels[:, None]).any(axis=1).mean())


def write_dense(
    directory: Path,
    model: TwoTower,
    item_texts: Sequence[str],
    tokenizer: TextTokenizer,
    config: DenseConfig,
    *,
    hnsw: HnswParams | None = None,
    recall_target: float | None = 0.95,
    tune_k: int = 100,
    build_threads: int = 2,
) -> DenseSpec:
    """Write ``DENSE_FILES`` into ``directory`` (a bundle's staging directory) and return the
    manifest's ``text.dense`` section.

    The query tower is exported to ONNX and checked against torch at several query lengths
    (raises ``ExportMismatch`` above 1e-4); ``ef_search`` is tuned to ``recall_target`` at
    ``tune_k`` with the items' own texts as queries (a stand-in for real queries, which this
    function does not see), or left at ``hnsw``'s with ``recall_target`` None.
    """
    model.eval()
    encoder = directory / QUERY_ENCODER_FILE
    probes = probe_ids(item_texts, tokenizer, config.max_query_tokens)
    length = torch.export.Dim("length", min=1)
    export_module(
        model.query,
        encoder,
        probes[-1],
        INPUT_NAME,
        OUTPUT_NAME,
        {0: torch.export.Dim("batch", min=1), 1: length},
    )
    probe_vec = check_query_encoder(model, encoder, probes)
    with (directory / TEXT_PROBE_FILE).open("wb") as f:
        np.savez(f, query_tokens=probes[-1], query_vec=probe_vec)

    items = item_vectors(model, item_texts, tokenizer)
    hnsw = (hnsw or HnswParams()).model_copy(update={"space": "ip"})
    index = ItemIndex.build(items, hnsw, num_threads=build_threads)
    if recall_target is not None and len(items):
        sample = np.random.default_rng(config.seed).permutation(len(items))[:1000]
        queries = query_vectors(model, [item_texts[i] for i in sample], tokenizer)
        ef, recall = choose_ef(index, items, queries, tune_k, recall_target)
        k = min(tune_k, len(items))
        tuned = {"ef_search": ef, "tuned_k": k, "recall_target": recall_target, "measured_recall": recall}
        hnsw = hnsw.model_copy(update=tuned)
        log.info("dense ef_search %d: recall@%d %.4f vs exact (target %.2f)", ef, k, recall, recall_target)
    index.save(directory / TEXT_INDEX_FILE)
    return DenseSpec(dim=config.dim, inputs=[INPUT_NAME], outputs=[OUTPUT_NAME], hnsw=hnsw)


def probe_ids(item_texts: Sequence[str], tokenizer: TextTokenizer, max_len: int) -> list[np.ndarray]:
    """Query id matrices to check the export on: one query of each of ``PROBE_LENGTHS`` pieces
    (and ``max_len``) alone, then all of them as one right-padded (B, max_len) batch (last).
    The pieces are the catalog's own, in order, so they are real pieces whatever the vocabulary."""
    pieces = tokenizer.ids(item_texts, 64).ravel()
    pieces = pieces[pieces != PAD_ID]
    if len(pieces) == 0:  # a catalog without text: any ids in the vocabulary will do
        pieces = np.arange(1, tokenizer.vocab_size, dtype=np.int64)
    lengths = sorted({min(n, max_len) for n in (*PROBE_LENGTHS, max_len)})
    rows = [np.resize(np.roll(pieces, -n), n).astype(np.int64)[None] for n in lengths]  # (1, n) each
    batch = np.zeros((len(rows), max_len), dtype=np.int64)
    for i, row in enumerate(rows):
        batch[i, : row.shape[1]] = row[0]
    return [*rows, batch]


@torch.no_grad()
def check_query_encoder(
    model: TwoTower, path: Path, probes: Sequence[np.ndarray], atol: float = 1e-4
) -> np.ndarray:
    """Run torch and ONNX Runtime on every probe; raises ExportMismatch above ``atol``. Returns
    ONNX Runtime's output for the last probe (what the bundle's probe file records)."""
    session = onnx_session(path)
    worst, actual = 0.0, np.zeros(0, np.float32)
    for ids in probes:
        expected = model.query(torch.from_numpy(ids)).numpy()
        (actual,) = session.run([OUTPUT_NAME], {INPUT_NAME: ids})
        diff = float(np.abs(expected - actual).max())
        worst = max(worst, diff)
        if not diff <= atol:
            raise ExportMismatch(
                f"query encoder ONNX output differs from torch by {diff:.2e} at shape {ids.shape}"
            )
    log.info("dense query encoder ONNX agreement: max abs diff %.2e over %d shapes", worst, len(probes))
    return np.asarray(actual, dtype=np.float32)
