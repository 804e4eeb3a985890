"""What the CQ-SID models learn from, cut from a dataset's training sessions: the items known at
training time, each item's engagement count (the SID table's order), query → item pairs, the
staged generator's examples and the EG-GRPO prompts.

A search session's *targets* are its engaged (click or deeper) items; its user context is the
user's recently engaged items before it (``index.sid_search.recent_engaged``), as a request
would see them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from index.features import ACTION_CODE, CLICK, Session
from index.sid_search import recent_engaged
from index.vocab import Vocabulary

PAY = ACTION_CODE["pay"]


@dataclass(frozen=True)
class SearchEvent:
    """One search session with its user context, by vocabulary label."""

    query: str
    recent: list[int]  # the user's recently engaged labels before it, newest first
    exposed: list[int]  # every item shown (engaged ones included)
    clicked: list[int]  # engaged: click or deeper
    paid: list[int]


def search_events(
    sessions: Mapping[str, Sequence[Session]], vocab: Vocabulary, user_sids: int
) -> Iterator[SearchEvent]:
    """Every session with a query, in log order per user."""
    for user_sessions in sessions.values():
        for n, session in enumerate(user_sessions):
            if not session.query:
                continue
            labelled = [
                (label, a) for item, a in session.items if (label := vocab.item_index(item)) is not None
            ]
            yield SearchEvent(
                query=session.query,
                recent=recent_engaged(user_sessions[:n], vocab, user_sids),
                exposed=[label for label, _ in labelled],
                clicked=[label for label, a in labelled if a >= CLICK],
                paid=[label for label, a in labelled if a >= PAY],
            )


def trained_items(sessions: Mapping[str, Sequence[Session]], vocab: Vocabulary) -> np.ndarray:
    """(N,) bool: items that appear in the training sessions (the RQ-VAE learns from these; the
    rest, new items included, are assigned by the trained model afterwards)."""
    seen = np.zeros(vocab.n_items, dtype=bool)
    for user_sessions in sessions.values():
        for session in user_sessions:
            for item, _ in session.items:
                if (label := vocab.item_index(item)) is not None:
                    seen[label] = True
    return seen


def engagement_counts(sessions: Mapping[str, Sequence[Session]], vocab: Vocabulary) -> np.ndarray:
    """(N,) float: engaged (click or deeper) sessions per item in the training period."""
    counts = np.zeros(vocab.n_items, dtype=np.float64)
    for user_sessions in sessions.values():
        for session in user_sessions:
            for item, action in session.items:
                if action >= CLICK and (label := vocab.item_index(item)) is not None:
                    counts[label] += 1
    return counts
