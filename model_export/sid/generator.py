"""The CQ-SID generator: a small encoder-decoder transformer from a query (and the user's recent
SIDs) to a SID, trained from scratch in stages (item title → SID, query → SID, user + query →
SID; arXiv 2605.14434 §3.4 uses Qwen2.5-0.5B, far beyond this project's CPU budget).

Encoder input, one sequence per row: ``[TASK] text pieces (Lt) user SID tokens (Lu)``. Text
pieces are the shared tokenizer's ids (``index.tokenizer``, 0 = pad); user tokens are
``index.sid_layout`` tokens (``PAD_TOKEN`` = pad), four per recent SID. ``TASK`` is a learned
vector at position 0 that is never masked, so every attention row has at least one key: a row
whose text and user parts are all padding (or whose user part has length 0) still gives finite
outputs. Text and user parts have their own learned position tables, so a user token's position
does not move with the text length. The decoder reads ``[BOS, t1, t2, t3]`` (SID tokens, the
same embedding table as the encoder's user part, also tied to the output head) and predicts the
four level tokens; at position ``l`` the softmax runs over level ``l``'s token range only.

The blocks (``model_export.transformer``) are shared with the GRAM generator.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from index.sid_layout import BOS_TOKEN, LEVELS, PAD_TOKEN, SidLayout
from model_export.progress import progress_bar
from model_export.transformer import DecoderBlock, EncoderBlock, causal_mask, init_weights

log = logging.getLogger(__name__)

TEXT_PAD = 0  # index.tokenizer.PAD_ID: the shared tokenizer's padding id


@dataclass
class GeneratorConfig:
    text_vocab: int  # the shared tokenizer's vocabulary size (text piece table rows)
    sid_sizes: tuple[int, int, int, int]  # (K1, K2, K3, G_max): index.sid_layout.SidLayout sizes
    dim: int = 128
    heads: int = 4
    encoder_layers: int = 2
    decoder_layers: int = 2
    ffn: int = 256  # hidden width of each block's MLP
    dropout: float = 0.1  # on embeddings, attention weights and block outputs (training only)
    max_text_tokens: int = 16  # text position table size: a query's pieces; stage 1 (item titles) needs more
    user_sids: int = 5  # recent SIDs in the context: the user position table holds 4 * user_sids tokens

    @property
    def max_user_tokens(self) -> int:
        return LEVELS * self.user_sids

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


class SidGenerator(nn.Module):
    """Text pieces + recent SID tokens → SID level values. ``forward`` is not used: call
    ``encode`` / ``decode`` (what the ONNX files compute) or the policy methods."""

    offsets: torch.Tensor  # (4,) int64 token id of value 0 per level (a buffer)

    def __init__(self, config: GeneratorConfig) -> None:
        super().__init__()
        self.config = config
        self.layout = SidLayout(tuple(config.sid_sizes))  # type: ignore[arg-type]
        self.register_buffer("offsets", torch.from_numpy(self.layout.offsets), persistent=False)
        dim = config.dim
        self.text_embedding = nn.Embedding(config.text_vocab, dim, padding_idx=TEXT_PAD)
        self.sid_embedding = nn.Embedding(self.layout.vocab_size, dim, padding_idx=PAD_TOKEN)
        self.task = nn.Parameter(torch.zeros(1, 1, dim))  # position 0 of every encoder row, never masked
        self.text_position = nn.Embedding(config.max_text_tokens, dim)
        self.user_position = nn.Embedding(config.max_user_tokens, dim)
        self.decoder_position = nn.Embedding(LEVELS, dim)  # BOS + 3 levels read; 4 levels predicted
        self.dropout = nn.Dropout(config.dropout)
        self.encoder = nn.ModuleList(EncoderBlock(config) for _ in range(config.encoder_layers))
        self.ln_memory = nn.LayerNorm(dim)
        self.decoder = nn.ModuleList(DecoderBlock(config) for _ in range(config.decoder_layers))
        self.ln_out = nn.LayerNorm(dim)
        self.apply(init_weights)
        nn.init.normal_(self.task, std=0.02)
        with torch.no_grad():
            self.text_embedding.weight[TEXT_PAD].zero_()
            self.sid_embedding.weight[PAD_TOKEN].zero_()

    def encode(self, text_ids: torch.Tensor, user_tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """text_ids (B, Lt) int64, user_tokens (B, Lu) int64 (Lu may be 0) → memory (B, 1+Lt+Lu, D)
        float32 and memory_pad (B, 1+Lt+Lu) bool (True = padding; position 0, the task token,
        is never padding)."""
        if text_ids.shape[1] > self.config.max_text_tokens:
            raise ValueError(f"{text_ids.shape[1]} text pieces, at most {self.config.max_text_tokens}")
        if user_tokens.shape[1] > self.config.max_user_tokens:
            raise ValueError(f"{user_tokens.shape[1]} user tokens, at most {self.config.max_user_tokens}")
        batch = text_ids.shape[0]
        text_positions = torch.arange(text_ids.shape[1], device=text_ids.device)
        user_positions = torch.arange(user_tokens.shape[1], device=user_tokens.device)
        text = self.text_embedding(text_ids) + self.text_position(text_positions)  # (B, Lt, D)
        user = self.sid_embedding(user_tokens) + self.user_position(user_positions)  # (B, Lu, D)
        task = self.task.expand(batch, 1, self.config.dim)  # (B, 1, D)
        x = self.dropout(torch.cat([task, text, user], dim=1))  # (B, L, D)
        pad = torch.cat(
            [
                torch.zeros_like(text_ids[:, :1], dtype=torch.bool),
                text_ids == TEXT_PAD,
                user_tokens == PAD_TOKEN,
            ],
            dim=1,
        )  # (B, L)
        blocked = pad.unsqueeze(1)  # (B, 1, L): no query attends to a padded key
        for block in self.encoder:
            x = block(x, blocked)
        return self.ln_memory(x), pad

    def decode(self, memory: torch.Tensor, memory_pad: torch.Tensor, prefix: torch.Tensor) -> torch.Tensor:
        """memory (B, L, D), memory_pad (B, L) bool (or batch 1: one prompt's memory shared by all
        B rows), prefix (B, t) int64 SID tokens starting with BOS, t <= 4 → logits (B, t, V) over
        the whole SID vocabulary (position l predicts level l)."""
        length = prefix.shape[1]
        positions = torch.arange(length, device=prefix.device)
        x = self.dropout(self.sid_embedding(prefix) + self.decoder_position(positions))  # (B, t, D)
        causal = causal_mask(length, prefix.device)  # (1, t, t)
        memory_blocked = memory_pad.unsqueeze(1)  # (B, 1, L)
        for block in self.decoder:
            x = block(x, memory, causal, memory_blocked)
        return self.ln_out(x) @ self.sid_embedding.weight.T  # (B, t, V), head tied to the SID table

    def level_log_softmax(
        self, text_ids: torch.Tensor, user_tokens: torch.Tensor, sids: torch.Tensor
    ) -> list[torch.Tensor]:
        """Teacher-forced: one (B, K_l) log-softmax over level l's values per level, given the
        true levels before it (sids (B, 4) int64 level values)."""
        memory, pad = self.encode(text_ids, user_tokens)
        tokens = sids + self.offsets  # (B, 4)
        bos = torch.full_like(tokens[:, :1], BOS_TOKEN)
        logits = self.decode(memory, pad, torch.cat([bos, tokens[:, :-1]], dim=1))  # (B, 4, V)
        out = []
        for level in range(LEVELS):
            start, stop = self.layout.level_range(level)
            out.append(F.log_softmax(logits[:, level, start:stop], dim=-1))
        return out

    def level_logprobs(
        self, text_ids: torch.Tensor, user_tokens: torch.Tensor, sids: torch.Tensor
    ) -> torch.Tensor:
        """(B, 4) log-probabilities of each level value of ``sids`` (B, 4) given the levels
        before it; the softmax at level l is over level l's range only."""
        per_level = self.level_log_softmax(text_ids, user_tokens, sids)
        return _pick(per_level, sids)

    def sequence_logprob(
        self, text_ids: torch.Tensor, user_tokens: torch.Tensor, sids: torch.Tensor
    ) -> torch.Tensor:
        """(B,) log-probability of the whole SID: ``level_logprobs(...).sum(-1)``."""
        return self.level_logprobs(text_ids, user_tokens, sids).sum(-1)

    @torch.no_grad()
    def sample(
        self,
        text_ids: torch.Tensor,
        user_tokens: torch.Tensor,
        n: int,
        generator: torch.Generator,
        temperature: float = 1.0,
    ) -> torch.Tensor:
        """(B*n, 4) int64 level values, n per prompt (row b*n+j is prompt b), each level drawn
        from its own range at ``temperature``; not constrained to existing SIDs. Runs in the
        model's current mode (call ``eval()`` for sampling without dropout); no gradient."""
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        memory, pad = self.encode(text_ids, user_tokens)
        memory, pad = memory.repeat_interleave(n, dim=0), pad.repeat_interleave(n, dim=0)
        prefix = torch.full((memory.shape[0], 1), BOS_TOKEN, dtype=torch.int64, device=memory.device)
        values = []
        for level in range(LEVELS):
            start, stop = self.layout.level_range(level)
            logits = self.decode(memory, pad, prefix)[:, -1, start:stop] / temperature  # (B*n, K_l)
            value = torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator)  # (B*n, 1)
            values.append(value)
            prefix = torch.cat([prefix, value + start], dim=1)
        return torch.cat(values, dim=1)


def _pick(per_level: list[torch.Tensor], sids: torch.Tensor) -> torch.Tensor:
    """(B, 4): each level's log-probability of its value in ``sids`` (B, 4)."""
    return torch.stack([lp.gather(1, sids[:, i : i + 1])[:, 0] for i, lp in enumerate(per_level)], dim=1)


@dataclass
class SidExamples:
    """One training stage's rows: int64 arrays, text right-padded with 0, user part with
    ``PAD_TOKEN`` (its width may be 0)."""

    text_ids: np.ndarray  # (E, Lt)
    user_tokens: np.ndarray  # (E, Lu)
    targets: np.ndarray  # (E, 4) level values

    def __post_init__(self) -> None:
        rows = {len(self.text_ids), len(self.user_tokens), len(self.targets)}
        if len(rows) != 1 or self.text_ids.ndim != 2 or self.user_tokens.ndim != 2:
            raise ValueError("text_ids (E, Lt), user_tokens (E, Lu) and targets (E, 4) need the same E")
        if self.targets.shape[1:] != (LEVELS,):
            raise ValueError(f"targets need shape (E, {LEVELS}), got {self.targets.shape}")

    def __len__(self) -> int:
        return len(self.targets)


@dataclass
class StageConfig:
    epochs: int = 5
    batch_size: int = 128  # the paper's stage 1 (stages 2/3: 256/64)
    lr: float = 1e-3  # Adam; far above the paper's 1e-4 since this model starts from scratch
    grad_clip: float = 1.0  # max global grad norm; transformers from scratch spike early without it
    seed: int = 0  # dropout and batch order; the same seed and model give the same result
    progress: bool = True  # a progress bar per epoch (drawn only when stderr is a terminal)
    name: str = "sid"  # the stage's name in log lines and the bar


def train_stage(model: SidGenerator, examples: SidExamples, config: StageConfig) -> dict[str, float]:
    """Teacher-forced cross-entropy (mean over rows and levels, each level's softmax over its
    own range) with Adam, continuing from ``model``'s weights. Logs the loss per epoch; returns
    the last epoch's ``loss`` and ``level_accuracy`` (argmax within the level == target, teacher
    forced) and the first epoch's ``first_loss``. Leaves the model in eval mode."""
    if len(examples) == 0:
        raise ValueError(f"no examples for stage {config.name}")
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    text = torch.from_numpy(np.ascontiguousarray(examples.text_ids, dtype=np.int64))
    user = torch.from_numpy(np.ascontiguousarray(examples.user_tokens, dtype=np.int64))
    targets = torch.from_numpy(np.ascontiguousarray(examples.targets, dtype=np.int64))
    metrics: dict[str, float] = {}
    first_loss = float("nan")
    for epoch in range(config.epochs):
        model.train()
        total, correct = 0.0, 0.0
        batches = torch.randperm(len(examples), generator=generator).split(config.batch_size)
        bar = progress_bar(
            batches, config.progress, desc=f"{config.name} {epoch + 1}/{config.epochs}", leave=False
        )
        for batch in bar:
            per_level = model.level_log_softmax(text[batch], user[batch], targets[batch])
            loss = -_pick(per_level, targets[batch]).mean()
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            total += loss.item() * len(batch)
            hits = torch.stack([lp.argmax(1) for lp in per_level], 1) == targets[batch]  # (b, 4)
            correct += hits.float().mean(1).sum().item()
        if epoch == 0:
            first_loss = total / len(examples)
        metrics = {
            "loss": total / len(examples),
            "level_accuracy": correct / len(examples),
            "first_loss": first_loss,
        }
        log.info(
            "%s epoch %d/%d: loss %.4f, level accuracy %.4f",
            config.name,
            epoch + 1,
            config.epochs,
            metrics["loss"],
            metrics["level_accuracy"],
        )
    model.eval()
    return metrics
