"""The NSP session encoder (TBGRecall-style Next Session Prediction).

Input: ``tokens`` (B, T, F) int64 rows as built by ``index.features.build_tokens``: per session
a context token and its item tokens, left-padded, the query context token last; with
``query_pieces`` > 0, F = N_FEATURES + query_pieces and a context token's search query (its
WordPiece ids) is part of its embedding.
Output: hidden states (B, T, D); the hidden state of a context token is the prediction of
*that* session (and, with MSP, the next ones), made from earlier sessions only.

Every part of the design is a switch in ``NSPConfig`` so it can be ablated: context features,
item side info, session mask, session-wise RoPE, TSN, HSTU blocks, MoE FFN and MSP heads.
Attention is written out by hand (no ``nn.MultiheadAttention``) so the ONNX graph keeps a
dynamic sequence length; the mask is computed from the tokens inside the graph; the MoE
computes every expert densely so the exported graph does not depend on routing.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from index.features import COL, CONTEXT, ITEM, N_GAP_BUCKETS, PAD, QUERY_START
from index.vocab import ITEM_OFFSET, N_PRICE_BUCKETS


@dataclass
class NSPConfig:
    n_items: int  # catalog size; the item table has ITEM_OFFSET extra rows (pad, unknown)
    n_category_tokens: int
    n_scene_tokens: int
    dim: int = 64  # embedding and hidden size; also the item-vector size in the index
    n_layers: int = 2
    n_heads: int = 2
    ffn_mult: int = 2  # FFN (and each expert's) hidden size = ffn_mult * dim
    dropout: float = 0.1
    rope_base: float = 100.0  # positions are session indices (≤ ~20), so a small base suffices
    temperature: float = 0.05  # softmax temperature on cosine scores in the loss
    # --- switches (ablations) ---
    # Defaults are the plain variant: the full TBGRecall structure (block="hstu", tsn=True,
    # moe_experts=4, msp_horizons=3) costs ~3x the training time and has not measured better
    # (docs/benchmarks/quality.md has every variant).
    context_features: bool = True  # hour/weekday/gap on context tokens (scene always)
    item_side_info: bool = True  # category/price/scene on item tokens (id + action always)
    session_mask: bool = True  # False: plain causal mask over token order
    session_rope: bool = True  # True: position = session index; False: token index
    tsn: bool = False  # token-specific input projections (embedding layer and first block)
    block: Literal["hstu", "transformer"] = "transformer"
    moe_experts: int = 0  # routed experts (0 = plain FFN); plus one always-on shared expert
    moe_top_k: int = 2
    msp_horizons: int = 1  # heads predicting the next 1..H sessions; serving uses the first
    # Search: query piece columns per token row (0 = the encoder reads no query text; its input
    # is then N_FEATURES wide, as before search) and the tokenizer's vocabulary size. A context
    # token adds the mean embedding of its query's pieces (nothing for a session without one).
    query_pieces: int = 0
    query_vocab: int = 0

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def rope(x: torch.Tensor, positions: torch.Tensor, base: float) -> torch.Tensor:
    """Rotate channel pairs by angle position * freq.  x: (B, H, T, hd), positions: (B, T)."""
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


def causal_mask(token_type: torch.Tensor) -> torch.Tensor:
    """(B, T, T) bool: plain left-to-right causal attention over real tokens (the ablation)."""
    length = token_type.shape[1]
    lower = torch.ones(length, length, dtype=torch.bool, device=token_type.device).tril()[None]
    itself = torch.eye(length, dtype=torch.bool, device=token_type.device)[None]
    return (lower & (token_type != PAD)[:, None, :]) | itself


class TokenSpecific(nn.Module):
    """Linear map with separate weights for context and item tokens (TSN), or one shared."""

    def __init__(self, d_in: int, d_out: int, specific: bool) -> None:
        super().__init__()
        self.item = nn.Linear(d_in, d_out)
        self.context = nn.Linear(d_in, d_out) if specific else None

    def start_as_identity(self) -> None:
        """For the embedding layer: start as a no-op, so a default-initialised bias does not
        swamp the small (std 0.02) embeddings and slow early training."""
        for layer in (self.item, self.context):
            if layer is not None:
                nn.init.eye_(layer.weight)
                nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor, is_context: torch.Tensor) -> torch.Tensor:
        if self.context is None:
            return self.item(x)
        return torch.where(is_context[..., None], self.context(x), self.item(x))


class Attention(nn.Module):
    """Multi-head attention over the session mask.

    ``hstu``: pointwise SiLU attention normalised by the number of visible tokens, with the
    output gated by a learned U projection (HSTU). ``transformer``: softmax attention.
    """

    def __init__(self, config: NSPConfig, specific: bool) -> None:
        super().__init__()
        self.hstu = config.block == "hstu"
        self.n_heads = config.n_heads
        self.rope_base = config.rope_base
        n_proj = 4 if self.hstu else 3  # (U,) Q, K, V
        self.proj = TokenSpecific(config.dim, n_proj * config.dim, specific)
        self.out_norm = nn.LayerNorm(config.dim) if self.hstu else None
        self.out = nn.Linear(config.dim, config.dim)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, is_context: torch.Tensor
    ) -> torch.Tensor:
        B, T, D = x.shape
        H, hd = self.n_heads, D // self.n_heads
        projected = self.proj(x, is_context)
        if self.hstu:
            projected = F.silu(projected)
            u, projected = projected[..., :D], projected[..., D:]
        q, k, v = projected.view(B, T, 3, H, hd).permute(2, 0, 3, 1, 4)  # each (B, H, T, hd)
        q, k = rope(q, positions, self.rope_base), rope(k, positions, self.rope_base)
        if self.hstu:
            scores = q @ k.transpose(-1, -2) / math.sqrt(hd)  # (B, H, T, T)
            visible = mask.sum(-1, keepdim=True).clamp(min=1).to(x.dtype)[:, None]  # (B, 1, T, 1)
            y = (F.silu(scores) * mask[:, None] / visible) @ v
        else:
            # The fused kernel is several times faster on CPU than softmax written out, and
            # exports to plain ONNX ops with the dynamic length kept.
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None])  # (B, H, T, hd)
        y = y.transpose(1, 2).reshape(B, T, D)  # (B, T, D)
        if self.out_norm is not None:
            y = self.out_norm(y) * u
        return self.out(y)


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim), nn.Dropout(dropout)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class MoE(nn.Module):
    """DeepSeekMoE-style FFN: one shared expert plus routed experts, top-k gating.

    Every routed expert runs on every token and is weighted by its (mostly zero) gate, so the
    exported graph has no data-dependent control flow and does not depend on which experts a
    dummy input happened to route to. At this size dense is cheap; a sparse dispatch would
    only pay off with many large experts.
    """

    def __init__(self, config: NSPConfig) -> None:
        super().__init__()
        hidden = config.ffn_mult * config.dim
        self.top_k = min(config.moe_top_k, config.moe_experts)
        self.shared = FeedForward(config.dim, hidden, config.dropout)
        self.experts = nn.ModuleList(
            [FeedForward(config.dim, hidden, config.dropout) for _ in range(config.moe_experts)]
        )
        self.router = nn.Linear(config.dim, config.moe_experts, bias=False)
        self.aux_loss = torch.zeros(())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.router(x)  # (B, T, E)
        kth = logits.topk(self.top_k, dim=-1).values[..., -1:]  # (B, T, 1)
        gates = logits.masked_fill(logits < kth, float("-inf")).softmax(dim=-1)  # zero off the top-k
        routed = torch.stack([expert(x) for expert in self.experts], dim=-1)  # (B, T, D, E)
        if self.training:
            # Switch-style balance loss: fraction routed times mean router probability per expert.
            load = (gates > 0).float().mean(dim=(0, 1))
            importance = logits.softmax(dim=-1).mean(dim=(0, 1))
            self.aux_loss = len(self.experts) * (load * importance).sum()
        return self.shared(x) + (routed * gates[..., None, :]).sum(-1)


class Block(nn.Module):
    """Pre-norm block: attention (HSTU or softmax) then FFN (MoE or dense)."""

    def __init__(self, config: NSPConfig, first: bool) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(config.dim)
        self.attn = Attention(config, specific=config.tsn and first)
        self.norm2 = nn.LayerNorm(config.dim)
        self.ffn: nn.Module = (
            MoE(config)
            if config.moe_experts > 0
            else FeedForward(config.dim, config.ffn_mult * config.dim, config.dropout)
        )

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, is_context: torch.Tensor
    ) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), mask, positions, is_context)
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
        reads_queries = config.query_pieces > 0
        self.query = nn.Embedding(config.query_vocab, D, padding_idx=0) if reads_queries else None
        self.input_proj = TokenSpecific(D, D, config.tsn)
        self.dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList([Block(config, first=i == 0) for i in range(config.n_layers)])
        self.norm = nn.LayerNorm(D)
        self.user_heads = nn.ModuleList([nn.Linear(D, D) for _ in range(max(1, config.msp_horizons))])
        self.item_head = nn.Linear(D, D)
        for module in self.modules():
            if isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=0.02)
        self.input_proj.start_as_identity()
        if self.query is not None:
            with torch.no_grad():
                self.query.weight[0].zero_()  # the init above overwrote the padding row

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, T, F) → (B, T, D): item tokens sum item-side embeddings, context tokens context ones."""
        c = self.config
        t = tokens.unbind(-1)
        token_type = t[COL["token_type"]]
        item_part = self.item(t[COL["item"]]) + self.action(t[COL["action"]])
        if c.item_side_info:
            item_part = (
                item_part
                + self.category(t[COL["category"]])
                + self.price(t[COL["price"]])
                + self.item_scene(t[COL["scene"]])
            )
        context_part = self.context_scene(t[COL["scene"]])
        if c.context_features:
            context_part = (
                context_part
                + self.hour(t[COL["hour"]])
                + self.weekday(t[COL["weekday"]])
                + self.gap(t[COL["gap"]])
            )
        if self.query is not None:
            pieces = tokens[..., QUERY_START : QUERY_START + c.query_pieces]  # (B, T, P)
            present = (pieces > 0).unsqueeze(-1).to(context_part.dtype)  # (B, T, P, 1)
            summed = (self.query(pieces) * present).sum(dim=-2)  # (B, T, D)
            # Masked mean over the pieces; a token without a query gets 0 / 1 = 0.
            context_part = context_part + summed / present.sum(dim=-2).clamp(min=1.0)
        kind = token_type[..., None]
        x = torch.where(kind == ITEM, item_part, torch.where(kind == CONTEXT, context_part, 0.0))
        return self.dropout(self.input_proj(x, token_type == CONTEXT))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, T, F) int64 → (B, T, D) hidden states."""
        token_type = tokens[..., COL["token_type"]]
        sessions = tokens[..., COL["session"]]
        mask = session_mask(token_type, sessions) if self.config.session_mask else causal_mask(token_type)
        # Without session-wise RoPE the position is the token's order, padding excluded.
        positions = sessions if self.config.session_rope else (token_type != PAD).long().cumsum(dim=1)
        is_context = token_type == CONTEXT
        x = self.embed(tokens)
        for block in self.blocks:
            x = block(x, mask, positions, is_context)
        return self.norm(x)

    def user_vectors(self, hidden: torch.Tensor, horizon: int = 0) -> torch.Tensor:
        """(..., D) hidden states at context tokens → L2-normalised vectors for session +horizon."""
        return F.normalize(self.user_heads[horizon](hidden), dim=-1)

    def item_vectors(
        self, item_index: torch.Tensor, category: torch.Tensor, price: torch.Tensor
    ) -> torch.Tensor:
        """Item indices (0..N-1) with their side-info tokens → L2-normalised item vectors (..., D)."""
        x = self.item(item_index + ITEM_OFFSET)
        if self.config.item_side_info:
            x = x + self.category(category) + self.price(price)
        return F.normalize(self.item_head(x), dim=-1)

    def aux_loss(self) -> torch.Tensor:
        losses = [m.aux_loss for m in self.modules() if isinstance(m, MoE)]
        return torch.stack(losses).sum() if losses else torch.zeros(())


class Encoder(nn.Module):
    """What ships in the bundle: tokens → user vector read at the last (query) position."""

    def __init__(self, model: NSPModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        hidden = self.model(tokens)  # (B, T, D)
        return self.model.user_vectors(hidden[:, -1])  # (B, D)
