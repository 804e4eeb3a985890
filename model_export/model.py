"""The NSP session encoder (TBGRecall-style Next Session Prediction), first version.

Input: ``tokens`` (B, T, F) int64 rows as built by ``index.features.build_tokens``: per session
a context token and its item tokens, left-padded, the query context token last.
Output: hidden states (B, T, D); the hidden state of a context token is the prediction of
*that* session's items, made from earlier sessions only (the session mask guarantees it).

Attention is written out by hand (no ``nn.MultiheadAttention``) so the ONNX graph keeps a
dynamic sequence length, and the mask is computed from the tokens inside the graph.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from index.features import COL, CONTEXT, ITEM, N_GAP_BUCKETS, PAD
from index.vocab import ITEM_OFFSET, N_PRICE_BUCKETS


@dataclass
class NSPConfig:
    n_items: int  # catalog size; the item table has ITEM_OFFSET extra rows (pad, unknown)
    n_category_tokens: int
    n_scene_tokens: int
    dim: int = 64  # embedding and hidden size; also the item-vector size in the index
    n_layers: int = 2
    n_heads: int = 2
    ffn_mult: int = 4
    dropout: float = 0.1
    rope_base: float = 100.0  # positions are session indices (≤ ~20), so a small base suffices
    temperature: float = 0.05  # softmax temperature on cosine scores in the loss

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def rope(x: torch.Tensor, positions: torch.Tensor, base: float) -> torch.Tensor:
    """Rotate pairs of channels by angle position * freq.  x: (B, H, T, hd), positions: (B, T)."""
    half = x.shape[-1] // 2
    freqs = base ** (-torch.arange(half, dtype=torch.float32, device=x.device) / half)  # (hd/2,)
    angles = positions.to(torch.float32)[:, None, :, None] * freqs  # (B, 1, T, hd/2)
    cos, sin = angles.cos(), angles.sin()
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


def session_mask(token_type: torch.Tensor, session: torch.Tensor) -> torch.Tensor:
    """(B, T, T) bool, True where query i may attend to key j.

    Causal across sessions; items of one session do not see each other (a session is a set);
    a token sees its own session's context token; every token sees itself (so padding rows
    never produce an all-masked softmax).
    """
    s_i, s_j = session[:, :, None], session[:, None, :]
    real_j = (token_type != PAD)[:, None, :]
    earlier = (s_j < s_i) & real_j
    own_context = (s_j == s_i) & (token_type == CONTEXT)[:, None, :]
    length = token_type.shape[1]
    itself = torch.eye(length, dtype=torch.bool, device=token_type.device)[None]
    return earlier | own_context | itself


class Attention(nn.Module):
    def __init__(self, config: NSPConfig) -> None:
        super().__init__()
        self.n_heads = config.n_heads
        self.rope_base = config.rope_base
        self.qkv = nn.Linear(config.dim, 3 * config.dim)
        self.out = nn.Linear(config.dim, config.dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_heads, D // self.n_heads).permute(2, 0, 3, 1, 4)
        q, k = rope(q, positions, self.rope_base), rope(k, positions, self.rope_base)  # (B, H, T, hd)
        scores = q @ k.transpose(-1, -2) / math.sqrt(D // self.n_heads)  # (B, H, T, T)
        scores = scores.masked_fill(~mask[:, None], float("-inf"))
        # No dropout on the (B, H, T, T) weights: on CPU it cost more than the attention itself.
        weights = scores.softmax(dim=-1)
        y = (weights @ v).transpose(1, 2).reshape(B, T, D)
        return self.out(y)


class Block(nn.Module):
    """Pre-norm transformer block."""

    def __init__(self, config: NSPConfig) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(config.dim)
        self.attn = Attention(config)
        self.norm2 = nn.LayerNorm(config.dim)
        self.ffn = nn.Sequential(
            nn.Linear(config.dim, config.ffn_mult * config.dim),
            nn.GELU(),
            nn.Linear(config.ffn_mult * config.dim, config.dim),
            nn.Dropout(config.dropout),
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), mask, positions)
        return x + self.ffn(self.norm2(x))


class NSPModel(nn.Module):
    def __init__(self, config: NSPConfig) -> None:
        super().__init__()
        self.config = config
        D = config.dim
        self.item = nn.Embedding(config.n_items + ITEM_OFFSET, D, padding_idx=0)
        self.action = nn.Embedding(5, D)
        self.category = nn.Embedding(config.n_category_tokens, D)
        self.price = nn.Embedding(N_PRICE_BUCKETS + 1, D)
        self.item_scene = nn.Embedding(config.n_scene_tokens, D)
        self.context_scene = nn.Embedding(config.n_scene_tokens, D)
        self.hour = nn.Embedding(24, D)
        self.weekday = nn.Embedding(7, D)
        self.gap = nn.Embedding(N_GAP_BUCKETS, D)
        self.dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList([Block(config) for _ in range(config.n_layers)])
        self.norm = nn.LayerNorm(D)
        self.user_head = nn.Linear(D, D)
        self.item_head = nn.Linear(D, D)
        for module in self.modules():
            if isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=0.02)

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, T, F) → (B, T, D): item tokens sum item-side embeddings, context tokens context ones."""
        t = tokens.unbind(-1)
        token_type = t[COL["token_type"]]
        item_part = (
            self.item(t[COL["item"]])
            + self.action(t[COL["action"]])
            + self.category(t[COL["category"]])
            + self.price(t[COL["price"]])
            + self.item_scene(t[COL["scene"]])
        )
        context_part = (
            self.context_scene(t[COL["scene"]])
            + self.hour(t[COL["hour"]])
            + self.weekday(t[COL["weekday"]])
            + self.gap(t[COL["gap"]])
        )
        kind = token_type[..., None]
        x = torch.where(kind == ITEM, item_part, torch.where(kind == CONTEXT, context_part, 0.0))
        return self.dropout(x)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, T, F) int64 → (B, T, D) hidden states."""
        token_type = tokens[..., COL["token_type"]]
        positions = tokens[..., COL["session"]]
        mask = session_mask(token_type, positions)
        x = self.embed(tokens)
        for block in self.blocks:
            x = block(x, mask, positions)
        return self.norm(x)

    def user_vectors(self, hidden: torch.Tensor) -> torch.Tensor:
        """(..., D) hidden states at context tokens → L2-normalised user vectors."""
        return F.normalize(self.user_head(hidden), dim=-1)

    def item_vectors(
        self, item_index: torch.Tensor, category: torch.Tensor, price: torch.Tensor
    ) -> torch.Tensor:
        """Item indices (0..N-1) with their side-info tokens → L2-normalised item vectors (..., D)."""
        x = self.item(item_index + ITEM_OFFSET) + self.category(category) + self.price(price)
        return F.normalize(self.item_head(x), dim=-1)


class Encoder(nn.Module):
    """What ships in the bundle: tokens → user vector read at the last (query) position."""

    def __init__(self, model: NSPModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        hidden = self.model(tokens)  # (B, T, D)
        return self.model.user_vectors(hidden[:, -1])  # (B, D)
