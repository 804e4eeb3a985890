"""GRAM's code generator: ONE small encoder-decoder transformer, trained from scratch, that maps a
query or a product text to shared text codes (``index.gram_vocab``), and its SFT loss
``L_q + λ·L_t`` (arXiv 2504.01403 fine-tunes an LLM per side; this project's CPU budget takes a
small model, and one model for both sides).

Encoder input, one sequence per row: ``[TASK] text pieces (L)``. Text pieces are the shared
tokenizer's ids (``index.tokenizer``, 0 = pad). ``TASK`` is one row of a learned two-row table
(``QUERY_TASK`` = 0, ``PRODUCT_TASK`` = 1) at position 0, never masked, so an all-padding text
still gives finite outputs. One task token and one set of weights, not two generators: the
shared weights carry what one side learns about the attribute vocabulary (which words name which
brand, colour, product type) to the other, and a query's codes and its clicked products' codes
land in the same value embeddings; the task row lets the two sides keep different code
distributions (queries name 1-3 attributes, titles many). The decoder reads ``[BOS, t1 .. tn]``
(code tokens, the table tied to the output head) and predicts ``t1 .. tn EOS``; the softmax runs
over the whole code vocabulary, which is the probability the scorer compares across sides.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from index.gram_generator import PRODUCT_TASK, QUERY_TASK, TASKS
from index.gram_vocab import BOS, EOS, MAX_CODE_TOKENS, PAD, RESERVED
from model_export.progress import progress_bar
from model_export.transformer import DecoderBlock, EncoderBlock, causal_mask, init_weights

log = logging.getLogger(__name__)

TEXT_PAD = 0  # index.tokenizer.PAD_ID: the shared tokenizer's padding id

__all__ = [
    "PRODUCT_TASK",
    "QUERY_TASK",
    "TEXT_PAD",
    "CodeExamples",
    "GramGenerator",
    "GramGeneratorConfig",
    "SftConfig",
    "check_code_rows",
    "train_sft",
]


@dataclass
class GramGeneratorConfig:
    text_vocab: int  # the shared tokenizer's vocabulary size (text piece table rows)
    code_vocab: int  # index.gram_vocab.CodeVocab.size: PAD, BOS, EOS and one token per value
    dim: int = 128
    heads: int = 4
    layers: int = 2  # encoder and decoder layers each
    ffn: int = 256  # hidden width of each block's MLP
    dropout: float = 0.1  # on embeddings, attention weights and block outputs (training only)
    max_text_tokens: int = 48  # text position table size: a product text's pieces (queries are shorter)
    value_pieces: int = 0  # text pieces kept per value token (0: value tokens have no text part)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


class GramGenerator(nn.Module):
    """Text pieces + a task → code tokens. ``forward`` is not used: call ``encode`` / ``decode``
    (what the ONNX files compute) or ``token_logprobs`` / ``sequence_logprob``.

    A value token's embedding (input and tied output head alike) is its own learned row plus the
    mean of the shared text embeddings of its value's pieces (``value_pieces``: (V, P) piece
    ids, 0-padded; rows of reserved tokens all 0). Codes are text in the paper (an LLM writes
    them with its word pieces); here a rare value ("fire pit", seen on a dozen items) starts
    next to the words that name it, so the model can copy it from a title or a query it has
    not been trained on, instead of learning 2,000 atomic tokens from scratch."""

    value_pieces: torch.Tensor  # (V, P) int64 text pieces of each value token (a buffer)

    def __init__(self, config: GramGeneratorConfig, value_pieces: np.ndarray | None = None) -> None:
        super().__init__()
        if config.code_vocab <= RESERVED:
            raise ValueError(f"code vocabulary of {config.code_vocab} tokens has no values")
        self.config = config
        dim = config.dim
        self.text_embedding = nn.Embedding(config.text_vocab, dim, padding_idx=TEXT_PAD)
        self.code_embedding = nn.Embedding(config.code_vocab, dim, padding_idx=PAD)
        pieces = torch.zeros(config.code_vocab, max(1, config.value_pieces), dtype=torch.int64)
        if value_pieces is not None:
            if value_pieces.shape != (config.code_vocab, config.value_pieces):
                raise ValueError(
                    f"value pieces of shape {value_pieces.shape}, the config says "
                    f"{(config.code_vocab, config.value_pieces)}"
                )
            pieces[:, : config.value_pieces] = torch.from_numpy(value_pieces.astype(np.int64))
        self.register_buffer("value_pieces", pieces)
        self.task_embedding = nn.Embedding(len(TASKS), dim)  # position 0 of every encoder row
        self.text_position = nn.Embedding(config.max_text_tokens, dim)
        self.decoder_position = nn.Embedding(MAX_CODE_TOKENS, dim)  # BOS + 6 values read; 7 predicted
        self.dropout = nn.Dropout(config.dropout)
        self.encoder = nn.ModuleList(EncoderBlock(config) for _ in range(config.layers))
        self.ln_memory = nn.LayerNorm(dim)
        self.decoder = nn.ModuleList(DecoderBlock(config) for _ in range(config.layers))
        self.ln_out = nn.LayerNorm(dim)
        self.apply(init_weights)
        with torch.no_grad():
            self.text_embedding.weight[TEXT_PAD].zero_()
            self.code_embedding.weight[PAD].zero_()

    def encode(self, text_ids: torch.Tensor, task: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """text_ids (B, L) int64, task (B,) int64 → memory (B, 1+L, D) float32 and memory_pad
        (B, 1+L) bool (True = padding; position 0, the task token, is never padding). Raises
        ``ValueError`` for more than ``max_text_tokens`` pieces."""
        if text_ids.shape[1] > self.config.max_text_tokens:
            raise ValueError(f"{text_ids.shape[1]} text pieces, at most {self.config.max_text_tokens}")
        positions = torch.arange(text_ids.shape[1], device=text_ids.device)
        text = self.text_embedding(text_ids) + self.text_position(positions)  # (B, L, D)
        x = self.dropout(torch.cat([self.task_embedding(task).unsqueeze(1), text], dim=1))  # (B, 1+L, D)
        pad = torch.cat([torch.zeros_like(text_ids[:, :1], dtype=torch.bool), text_ids == TEXT_PAD], dim=1)
        blocked = pad.unsqueeze(1)  # (B, 1, 1+L): no query attends to a padded key
        for block in self.encoder:
            x = block(x, blocked)
        return self.ln_memory(x), pad

    def code_table(self) -> torch.Tensor:
        """(V, D) each code token's embedding: its own row + the mean of its value's pieces."""
        mask = (self.value_pieces != TEXT_PAD).unsqueeze(-1).to(self.code_embedding.weight.dtype)  # (V, P, 1)
        text = (self.text_embedding(self.value_pieces) * mask).sum(1) / mask.sum(1).clamp(min=1.0)  # (V, D)
        return self.code_embedding.weight + text

    def decode(self, memory: torch.Tensor, memory_pad: torch.Tensor, prefix: torch.Tensor) -> torch.Tensor:
        """memory (B, L, D), memory_pad (B, L) bool (or batch 1: one prompt's memory shared by all
        B rows), prefix (B, t) int64 code tokens starting with BOS, t <= 7 → logits (B, t, V)
        over the whole code vocabulary (position i predicts token i+1 of the code)."""
        length = prefix.shape[1]
        positions = torch.arange(length, device=prefix.device)
        table = self.code_table()  # (V, D)
        x = self.dropout(F.embedding(prefix, table) + self.decoder_position(positions))  # (B, t, D)
        causal = causal_mask(length, prefix.device)  # (1, t, t)
        memory_blocked = memory_pad.unsqueeze(1)  # (B, 1, L)
        for block in self.decoder:
            x = block(x, memory, causal, memory_blocked)
        return self.ln_out(x) @ table.T  # (B, t, V), head tied to the code table

    def teacher_forced_logits(
        self, text_ids: torch.Tensor, task: torch.Tensor, codes: torch.Tensor
    ) -> torch.Tensor:
        """(B, 7, V) logits at each target position of ``codes`` (B, 7) (values, EOS, PAD),
        the decoder reading BOS and the true tokens before it."""
        # Each distinct (task, text) row is encoded once: a batch may hold many codes of one text.
        keys, inverse = torch.unique(torch.cat([task[:, None], text_ids], dim=1), dim=0, return_inverse=True)
        memory, pad = self.encode(trim_padding(keys[:, 1:]), keys[:, 0])
        memory, pad = memory[inverse], pad[inverse]
        bos = torch.full_like(codes[:, :1], BOS)
        return self.decode(memory, pad, torch.cat([bos, codes[:, :-1]], dim=1))

    def token_logprobs(self, text_ids: torch.Tensor, task: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """(B, 7) full-vocabulary log-probability of each target token of ``codes`` (B, 7) given
        the tokens before it; 0 at PAD positions, so a row sums to the code's log-probability."""
        logp = F.log_softmax(self.teacher_forced_logits(text_ids, task, codes), dim=-1)  # (B, 7, V)
        picked = logp.gather(2, codes.unsqueeze(2)).squeeze(2)  # (B, 7)
        return picked.masked_fill(codes == PAD, 0.0)

    def sequence_logprob(
        self, text_ids: torch.Tensor, task: torch.Tensor, codes: torch.Tensor
    ) -> torch.Tensor:
        """(B,) log-probability of each whole code: ``token_logprobs(...).sum(-1)``."""
        return self.token_logprobs(text_ids, task, codes).sum(-1)


def check_code_rows(codes: np.ndarray, what: str) -> None:
    """Raise ``ValueError`` naming ``what`` unless ``codes`` is (E, 7) int64 code rows: 1..6
    value tokens, one EOS, PAD after it (``index.gram_vocab.CodeVocab.encode``'s layout)."""
    if codes.ndim != 2 or codes.shape[1] != MAX_CODE_TOKENS or not np.issubdtype(codes.dtype, np.integer):
        raise ValueError(f"{what} need integer shape (E, {MAX_CODE_TOKENS}), got {codes.dtype} {codes.shape}")
    eos = codes == EOS
    end = eos.argmax(axis=1)  # (E,) position of the first EOS
    column = np.arange(MAX_CODE_TOKENS)[None]
    values_ok = np.where(column < end[:, None], codes >= RESERVED, codes == PAD)  # EOS position passes below
    values_ok |= column == end[:, None]
    bad = ~(eos.sum(axis=1) == 1) | (end < 1) | ~values_ok.all(axis=1)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{what} row {row} is not values, EOS, PAD: {codes[row].tolist()}")


@dataclass
class CodeExamples:
    """One side's SFT rows: int64 arrays, text right-padded with ``TEXT_PAD``, each row one
    (text, code) target (a text with several codes has several rows)."""

    text_ids: np.ndarray  # (E, L)
    task: np.ndarray  # (E,) QUERY_TASK or PRODUCT_TASK
    codes: np.ndarray  # (E, 7) code token rows

    def __post_init__(self) -> None:
        if self.text_ids.ndim != 2 or self.task.ndim != 1:
            raise ValueError(
                f"text_ids (E, L) and task (E,), got {self.text_ids.shape} and {self.task.shape}"
            )
        if len({len(self.text_ids), len(self.task), len(self.codes)}) != 1:
            raise ValueError("text_ids, task and codes need the same number of rows")
        if not np.isin(self.task, TASKS).all():
            raise ValueError(f"task values must be in {TASKS}")
        check_code_rows(self.codes, "codes")

    def __len__(self) -> int:
        return len(self.codes)

    @staticmethod
    def concat(*parts: CodeExamples) -> CodeExamples:
        """The rows of ``parts`` in order, texts right-padded to the widest."""
        width = max(p.text_ids.shape[1] for p in parts)
        text = [
            np.pad(p.text_ids, ((0, 0), (0, width - p.text_ids.shape[1])), constant_values=TEXT_PAD)
            for p in parts
        ]
        return CodeExamples(
            np.concatenate(text).astype(np.int64),
            np.concatenate([p.task for p in parts]).astype(np.int64),
            np.concatenate([p.codes for p in parts]).astype(np.int64),
        )


@dataclass
class SftConfig:
    epochs: int = 5
    batch_size: int = 128  # rows per side per step
    lr: float = 1e-3  # Adam from scratch
    grad_clip: float = 1.0  # max global grad norm; transformers from scratch spike early without it
    lam: float = 1.0  # λ of L_q + λ·L_t
    seed: int = 0  # dropout and batch order; the same seed and model give the same result
    progress: bool = True  # a progress bar per epoch (drawn only when stderr is a terminal)
    # Batches of consecutive rows, in shuffled order, for the side that sets the epoch's
    # length: rows of one text sit together (a product's codes), so a batch encodes a few
    # texts once each instead of one per row (the encoder is most of a step's work).
    grouped: bool = False


def train_sft(
    model: GramGenerator, query: CodeExamples, product: CodeExamples, config: SftConfig
) -> dict[str, float]:
    """Teacher-forced SFT with Adam, continuing from ``model``'s weights. Each step takes one
    query batch and one product batch and minimises ``L_q + lam * L_t``, each the token
    cross-entropy mean over its batch's non-PAD targets; an epoch is as many steps as the larger
    side needs, the smaller side seen once in as many smaller batches; an empty side contributes 0.
    Returns the last epoch's ``loss``, ``query_loss``, ``product_loss``, ``query_accuracy`` and
    ``product_accuracy`` (teacher-forced argmax == target over non-PAD targets; NaN for an empty
    side) and the first epoch's ``first_loss``. Raises ``ValueError`` when both sides are empty
    or a side's rows carry the other side's task. Leaves the model in eval mode."""
    if len(query) == 0 and len(product) == 0:
        raise ValueError("no SFT rows on either side")
    if (query.task != QUERY_TASK).any() or (product.task != PRODUCT_TASK).any():
        raise ValueError(f"query rows need task {QUERY_TASK}, product rows task {PRODUCT_TASK}")
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    sides = [_tensors(query), _tensors(product)]
    weights = (1.0, config.lam)
    steps = math.ceil(max(len(query), len(product)) / config.batch_size)
    metrics: dict[str, float] = {}
    first_loss = float("nan")
    for epoch in range(config.epochs):
        model.train()
        orders = [
            _batches(len(side[0]), config.batch_size, steps, generator, config.grouped) for side in sides
        ]
        total = 0.0
        side_loss, side_hits, side_tokens = [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]
        bar = progress_bar(
            range(steps), config.progress, desc=f"gram sft {epoch + 1}/{config.epochs}", leave=False
        )
        for step in bar:
            loss = torch.zeros(())
            for n, (side, order, weight) in enumerate(zip(sides, orders, weights, strict=True)):
                if order is None or not len(order[step]):
                    continue
                batch = order[step]
                text, task, codes = (t[batch] for t in side)
                logits = model.teacher_forced_logits(text, task, codes)  # (b, 7, V)
                real = codes != PAD  # (b, 7)
                side_ce = F.cross_entropy(logits[real], codes[real])
                loss = loss + weight * side_ce
                tokens = float(real.sum())
                side_loss[n] += side_ce.item() * tokens
                side_tokens[n] += tokens
                side_hits[n] += float((logits.argmax(-1) == codes)[real].sum())
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            total += loss.item()
        mean = [side_loss[n] / side_tokens[n] if side_tokens[n] else float("nan") for n in range(2)]
        accuracy = [side_hits[n] / side_tokens[n] if side_tokens[n] else float("nan") for n in range(2)]
        if epoch == 0:
            first_loss = total / steps
        metrics = {
            "loss": total / steps,
            "query_loss": mean[0],
            "product_loss": mean[1],
            "query_accuracy": accuracy[0],
            "product_accuracy": accuracy[1],
            "first_loss": first_loss,
        }
        log.info(
            "gram sft epoch %d/%d: loss %.4f (query %.4f, product %.4f), token accuracy %.3f / %.3f",
            epoch + 1,
            config.epochs,
            metrics["loss"],
            mean[0],
            mean[1],
            accuracy[0],
            accuracy[1],
        )
    model.eval()
    return metrics


def _tensors(examples: CodeExamples) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return (
        torch.from_numpy(np.ascontiguousarray(examples.text_ids, dtype=np.int64)),
        torch.from_numpy(np.ascontiguousarray(examples.task, dtype=np.int64)),
        torch.from_numpy(np.ascontiguousarray(examples.codes, dtype=np.int64)),
    )


def _batches(
    rows: int, batch_size: int, steps: int, generator: torch.Generator, grouped: bool = False
) -> list[torch.Tensor] | None:
    """``steps`` index batches of up to ``batch_size`` over ``rows`` rows: one permutation for
    the side that sets the epoch's length (its last batch may be short; ``grouped``: its
    consecutive blocks in a random order), one permutation cut into ``steps`` parts for a smaller
    side; None for no rows."""
    if rows == 0:
        return None
    size = min(batch_size, rows)
    if math.ceil(rows / size) >= steps:
        if grouped:
            blocks = torch.arange(rows).split(size)
            return [blocks[int(i)] for i in torch.randperm(len(blocks), generator=generator)]
        return list(torch.randperm(rows, generator=generator).split(size))
    # The smaller side: one pass per epoch too, in ``steps`` smaller batches (some empty when it
    # has fewer rows than steps), so neither side is trained many times over per epoch.
    return list(torch.randperm(rows, generator=generator).tensor_split(steps))


def trim_padding(text_ids: torch.Tensor) -> torch.Tensor:
    """``text_ids`` (B, L) right-padded without the columns every row pads (at least one kept):
    the same outputs, since padded keys are masked, for less work on short texts."""
    width = max(1, int((text_ids != TEXT_PAD).sum(1).max())) if len(text_ids) else 1
    return text_ids[:, :width]
