"""Training batches for the two objectives, built from users' training-period sessions.

``nsp``: the sequence of ``index.features.build_tokens`` (each session's search query in its
context token when the model reads queries); every context token with history
is a query, and its targets are the sessions at horizons 1..H (MSP) with every item and its
deepest action, so the loss can tell exposed, clicked and paid items apart.

``autoregressive`` (the SASRec-style baseline NSP replaces): the user's engaged items in time
order, one token each; every position predicts the next engaged item.

``drop_seen``: a target item that occurs (with any action) in one of the user's sessions before
the target session is not a target — training for a deployment that excludes seen items.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence, Set
from dataclasses import dataclass

import numpy as np
import torch

from index.features import (
    CLICK,
    COL,
    CONTEXT,
    ITEM,
    N_FEATURES,
    QueryText,
    Session,
    build_tokens,
    stack_left_padded,
)
from index.vocab import ITEM_OFFSET, Vocabulary

MAX_TARGET_ITEMS = 16  # items kept per target session (deepest actions first)

# (query index, horizon, item indices, action codes, scene token) of one target session
TargetRow = tuple[int, int, list[int], list[int], int]


@dataclass
class TargetSet:
    """Padded target sessions, one row per (query, horizon)."""

    query: torch.Tensor  # (S,) index into the batch's queries
    horizon: torch.Tensor  # (S,) 0-based horizon (0 = the session the query stands for)
    items: torch.Tensor  # (S, L) item index, -1 = padding
    actions: torch.Tensor  # (S, L) action code (1 exposure .. 4 pay), 0 = padding
    scene: torch.Tensor  # (S,) scene token of the target session


@dataclass
class Batch:
    tokens: torch.Tensor  # (B, T, F)
    query_rows: torch.Tensor  # (P,) flat index b*T + t of the tokens whose hidden state predicts
    targets: TargetSet


def _target_rows(
    session: Session, vocab: Vocabulary, max_items: int = MAX_TARGET_ITEMS, seen: Set[str] = frozenset()
) -> tuple[list[int], list[int]]:
    items, actions = [], []
    for item_id, action in session.items:
        if item_id in seen:
            continue
        index = vocab.item_index(item_id)
        if index is not None:
            items.append(index)
            actions.append(action)
        if len(items) == max_items:
            break
    return items, actions


def _pack(rows: Sequence[TargetRow]) -> TargetSet:
    width = max((len(r[2]) for r in rows), default=1)
    items = np.full((len(rows), width), -1, dtype=np.int64)
    actions = np.zeros((len(rows), width), dtype=np.int64)
    for i, (_, _, its, acts, _) in enumerate(rows):
        items[i, : len(its)] = its
        actions[i, : len(acts)] = acts
    return TargetSet(
        query=torch.tensor([r[0] for r in rows], dtype=torch.long),
        horizon=torch.tensor([r[1] for r in rows], dtype=torch.long),
        items=torch.from_numpy(items),
        actions=torch.from_numpy(actions),
        scene=torch.tensor([r[4] for r in rows], dtype=torch.long),
    )


def _seen_before(sessions: Sequence[Session], start: int, stop: int, drop_seen: bool) -> Iterator[Set[str]]:
    """For each position in start..stop-1, the item ids of the sessions before it (one running
    set; each yielded set is only valid until the next step), or an empty set throughout."""
    if not drop_seen:
        for _ in range(start, stop):
            yield frozenset()
        return
    seen = {item for session in sessions[:start] for item, _ in session.items}
    for position in range(start, stop):
        yield seen
        seen.update(item for item, _ in sessions[position].items)


def make_nsp_batch(
    histories: Sequence[list[Session]],
    ends: Sequence[int],
    vocab: Vocabulary,
    max_sessions: int,
    max_items: int,
    horizons: int,
    drop_seen: bool = False,
    query_text: QueryText | None = None,
) -> Batch:
    """One sequence per (history, end): sessions before ``end`` plus the query context of ``end``
    (with ``query_text``, carrying ``end``'s search query: a request knows its own query).

    Context token p of a sequence stands for window session p (the last one for ``end``); each
    with history in the window (p ≥ 1) is a query, with targets at horizons 0..H-1 wherever the
    user's training history has that session (and, with ``drop_seen``, an unseen item).
    """
    sequences: list[np.ndarray] = []
    per_sequence: list[list[TargetRow]] = []
    query_offsets: list[list[int]] = []
    for sessions, end in zip(histories, ends, strict=True):
        request = sessions[end]
        sequence = build_tokens(
            sessions[:end],
            request.scene,
            request.ts,
            vocab,
            max_sessions,
            max_items,
            query=request.query,
            query_text=query_text,
        )
        first = max(0, end - max_sessions)
        context_rows = np.flatnonzero(sequence[:, COL["token_type"]] == CONTEXT)
        # Each target session once (it serves up to H queries), in time order for ``seen``.
        stop = min(first + len(context_rows) - 1 + horizons, len(sessions))
        targets = {
            position: _target_rows(sessions[position], vocab, seen=seen)
            for position, seen in zip(
                range(first + 1, stop), _seen_before(sessions, first + 1, stop, drop_seen), strict=True
            )
        }
        rows, offsets = [], []
        for p, row in enumerate(context_rows):
            if p == 0:
                continue
            offsets.append(int(row) - len(sequence))  # from the end: survives left padding
            for h in range(horizons):
                position = first + p + h
                if position >= len(sessions):
                    break
                items, actions = targets[position]
                if items:
                    rows.append(
                        (len(offsets) - 1, h, items, actions, vocab.scene_token(sessions[position].scene))
                    )
        sequences.append(sequence)
        per_sequence.append(rows)
        query_offsets.append(offsets)
    return _assemble(sequences, per_sequence, query_offsets)


def _assemble(
    sequences: list[np.ndarray],
    per_sequence: list[list[TargetRow]],
    query_offsets: list[list[int]],
) -> Batch:
    tokens = stack_left_padded(sequences)
    length = tokens.shape[1]
    query_rows: list[int] = []
    rows: list[TargetRow] = []
    for b, (offsets, targets) in enumerate(zip(query_offsets, per_sequence, strict=True)):
        base = len(query_rows)
        query_rows.extend(b * length + length + offset for offset in offsets)
        rows.extend((base + q, h, items, actions, scene) for q, h, items, actions, scene in targets)
    return Batch(torch.from_numpy(tokens), torch.tensor(query_rows, dtype=torch.long), _pack(rows))


def engaged_sequence(history: Sequence[Session], vocab: Vocabulary, max_len: int) -> np.ndarray:
    """(L, N_FEATURES) item tokens of the last ``max_len`` engaged items, one position each.

    Each item is its own "session" in the session column, so the NSP mask becomes plain
    causal attention and the rotary position is the item's index: a SASRec-style sequence.
    An empty history gives one padding row (the model then answers from its biases alone).
    """
    rows = []
    for session in history:
        scene = vocab.scene_token(session.scene)
        for item_id, action in session.items:
            if action < CLICK:
                continue
            token, category, price = vocab.item_features(item_id)
            rows.append([ITEM, 0, token, action, category, price, scene, 0, 0, 0])
    rows = rows[-max_len:]
    if not rows:
        return np.zeros((1, N_FEATURES), dtype=np.int64)
    tokens = np.asarray(rows, dtype=np.int64)
    tokens[:, COL["session"]] = np.arange(len(tokens))
    return tokens


def _engaged_seen(history: Sequence[Session]) -> list[bool]:
    """For each row of ``engaged_sequence(history, ...)`` before its cut to the last items:
    whether the item occurs in an earlier session of ``history``."""
    flags: list[bool] = []
    for session, seen in zip(history, _seen_before(history, 0, len(history), True), strict=True):
        flags.extend(item_id in seen for item_id, action in session.items if action >= CLICK)
    return flags


def make_ar_batch(
    histories: Sequence[list[Session]],
    ends: Sequence[int],
    vocab: Vocabulary,
    max_len: int,
    drop_seen: bool = False,
) -> Batch:
    """Next-item targets: engaged items of sessions before ``end`` (plus ``end`` itself as the
    last target) — every position predicts the item after it, unless (``drop_seen``) that item
    occurs in an earlier session."""
    sequences, per_sequence, query_offsets = [], [], []
    for sessions, end in zip(histories, ends, strict=True):
        full = engaged_sequence(sessions[: end + 1], vocab, max_len + 1)
        sequence = full[:-1] if len(full) > 1 else full
        nexts = full[1:, COL["item"]] - ITEM_OFFSET if len(full) > 1 else np.zeros(0, dtype=np.int64)
        seen = _engaged_seen(sessions[: end + 1])[-len(nexts) :] if drop_seen and len(nexts) else []
        rows, offsets = [], []
        for position, item in enumerate(nexts.tolist()):
            if item < 0 or (seen and seen[position]):
                continue  # unknown item: nothing to score against; seen: not a target
            offsets.append(position - len(sequence))
            scene = int(full[position + 1, COL["scene"]])
            rows.append((len(offsets) - 1, 0, [item], [CLICK], scene))
        sequences.append(sequence)
        per_sequence.append(rows)
        query_offsets.append(offsets)
    return _assemble(sequences, per_sequence, query_offsets)
