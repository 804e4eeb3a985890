"""Pre-norm transformer blocks shared by the encoder-decoder generators (``model_export.sid``,
``model_export.gram``).

Attention is written out (no ``nn.MultiheadAttention``) so the dynamo ONNX exporter sees plain
matmul / masked_fill / softmax; masks are bool, True = blocked. A block reads its sizes from any
config with ``dim``, ``heads``, ``ffn`` and ``dropout`` (``BlockConfig``), so each generator keeps
its own config dataclass.
"""

from __future__ import annotations

import math
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn


class BlockConfig(Protocol):
    @property
    def dim(self) -> int: ...
    @property
    def heads(self) -> int: ...
    @property
    def ffn(self) -> int: ...  # hidden width of each block's MLP
    @property
    def dropout(self) -> float: ...  # on attention weights and block outputs (training only)


class Attention(nn.Module):
    """Multi-head attention of ``x`` over ``context``; ``blocked`` (bool, True = not attended)
    broadcasts to (B, T, S) and must leave every row at least one key."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not a multiple of heads {heads}")
        self.heads = heads
        self.query = nn.Linear(dim, dim)
        self.key_value = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, context: torch.Tensor, blocked: torch.Tensor) -> torch.Tensor:
        batch, length, dim = x.shape  # (B, T, D)
        context_batch, size = context.shape[:2]  # B or 1 (one context for all rows), S
        head = dim // self.heads
        q = self.query(x).reshape(batch, length, self.heads, head).transpose(1, 2)  # (B, H, T, d)
        k, v = self.key_value(context).split(dim, dim=-1)  # (Bc, S, D) each
        k = k.reshape(context_batch, size, self.heads, head).transpose(1, 2)  # (Bc, H, S, d)
        v = v.reshape(context_batch, size, self.heads, head).transpose(1, 2)  # (Bc, H, S, d)
        scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(head))  # (B, H, T, S)
        scores = scores.masked_fill(blocked.unsqueeze(1), float("-inf"))
        weights = self.dropout(torch.softmax(scores, dim=-1))
        y = (weights @ v).transpose(1, 2).reshape(batch, length, dim)  # (B, T, D)
        return self.out(y)


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.up = nn.Linear(dim, hidden)
        self.down = nn.Linear(hidden, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.down(F.gelu(self.up(x))))


class EncoderBlock(nn.Module):
    """Pre-norm: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, config: BlockConfig) -> None:
        super().__init__()
        self.ln_attn = nn.LayerNorm(config.dim)
        self.attn = Attention(config.dim, config.heads, config.dropout)
        self.ln_mlp = nn.LayerNorm(config.dim)
        self.mlp = MLP(config.dim, config.ffn, config.dropout)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, blocked: torch.Tensor) -> torch.Tensor:
        h = self.ln_attn(x)
        x = x + self.dropout(self.attn(h, h, blocked))
        return x + self.mlp(self.ln_mlp(x))


class DecoderBlock(nn.Module):
    """Pre-norm: causal self-attention, cross-attention over the encoder memory, MLP."""

    def __init__(self, config: BlockConfig) -> None:
        super().__init__()
        self.ln_self = nn.LayerNorm(config.dim)
        self.self_attn = Attention(config.dim, config.heads, config.dropout)
        self.ln_cross = nn.LayerNorm(config.dim)
        self.cross_attn = Attention(config.dim, config.heads, config.dropout)
        self.ln_mlp = nn.LayerNorm(config.dim)
        self.mlp = MLP(config.dim, config.ffn, config.dropout)
        self.dropout = nn.Dropout(config.dropout)

    def forward(
        self, x: torch.Tensor, memory: torch.Tensor, causal: torch.Tensor, memory_blocked: torch.Tensor
    ) -> torch.Tensor:
        h = self.ln_self(x)
        x = x + self.dropout(self.self_attn(h, h, causal))
        x = x + self.dropout(self.cross_attn(self.ln_cross(x), memory, memory_blocked))
        return x + self.mlp(self.ln_mlp(x))


def causal_mask(length: int, device: torch.device) -> torch.Tensor:
    """(1, t, t) bool: position i may not attend to any j > i."""
    return torch.ones(length, length, dtype=torch.bool, device=device).triu(1)[None]


def init_weights(module: nn.Module) -> None:
    """GPT-2's init for a model built from scratch: N(0, 0.02) linear and embedding weights, zero
    biases (``model.apply(init_weights)``)."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, std=0.02)
