"""Events → request sessions → the encoder's token sequence.

This is the one place that turns a user's history into encoder input, used by training
(``model_export``) and by serving (``service``) alike, so the two can never drift apart.

A sequence is ``[c1, i1_1, …, c2, i2_1, …, cK, iK_1, …, cQ]``: per history session a context
token followed by its item tokens, then the *query* context token ``cQ`` built from the
request's scene and time. Sequences are left-padded so that ``cQ`` is always the last
position, which is where the encoder reads the user vector.

Every token is a row of int64 columns; the encoder's single ONNX input ``tokens`` has shape
(batch, length, width)::

    columns 0 .. N_FEATURES-1                 FEATURES (token type, session, item, …, gap)
    columns N_FEATURES .. N_FEATURES+pieces-1  query piece ids (only with ``QueryText``)

Without a ``QueryText`` the width is ``N_FEATURES``, as for every encoder before search. With
one, each row gets ``pieces`` more columns: a context row carries the WordPiece ids of its
session's query (the request's ``query`` on the last row), right-padded with 0; item and pad
rows, and the context row of a session without a query, are all zeros there. The width is
fixed per encoder (the manifest's ``encoder.query_pieces``).
"""

from __future__ import annotations

import bisect
import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from index.vocab import Vocabulary

if TYPE_CHECKING:
    from index.tokenizer import TextTokenizer

ACTIONS: tuple[str, ...] = ("exposure", "click", "cart", "pay")
ACTION_CODE: dict[str, int] = {name: i + 1 for i, name in enumerate(ACTIONS)}  # 0 = none
CLICK = ACTION_CODE["click"]

# Column order of a token row; the encoder's embedding layer indexes by these positions.
FEATURES: tuple[str, ...] = (
    "token_type",  # 0 pad, 1 context, 2 item
    "session",  # session-wise position (0 = oldest session in the window)
    "item",  # item token (vocab.item_token), 0 on context/pad tokens
    "action",  # deepest action on the item in this session, 0 on context/pad tokens
    "category",  # item category token
    "price",  # item price-bucket token
    "scene",  # scene token of the session
    "hour",  # hour of day of the session start (UTC)
    "weekday",  # weekday of the session start (UTC)
    "gap",  # bucket of the time since the previous session
)
N_FEATURES = len(FEATURES)
COL = {name: i for i, name in enumerate(FEATURES)}
PAD, CONTEXT, ITEM = 0, 1, 2

# Gap buckets (seconds since previous session); bucket 0 means "no previous session".
GAP_EDGES: tuple[int, ...] = (60, 600, 3600, 6 * 3600, 86400, 3 * 86400, 7 * 86400)
N_GAP_BUCKETS = len(GAP_EDGES) + 2

QUERY_START = N_FEATURES  # first query piece column, when the encoder reads queries

MAX_SESSIONS = 20  # history sessions kept in the window; older ones are dropped
# Sessions a recall reads (the service's ``history_sessions`` default; offline evaluation reads
# as many): the encoder's window, i2i's last 10 engaged sessions and the history channel's
# repeat items come from them, so a recall's work stops growing with the user's history here.
# Exclusions (exclude_seen) still cover every stored item.
RECALL_SESSIONS = 32
MAX_ITEMS_PER_SESSION = 12  # deepest-action items first, so clicks/pays survive the cap


class Event(NamedTuple):
    # A tuple, not a frozen dataclass: a recall builds hundreds of these, and a frozen
    # dataclass's __init__ (object.__setattr__ per field) costs several times a tuple's.
    user_id: str
    item_id: str
    ts: int
    action: str
    scene: str
    request_id: str
    query: str = ""  # the request's search text (normalised, ``index.text``); "" outside search


class Session(NamedTuple):
    """One request session: items deduplicated, each with its deepest action code."""

    request_id: str
    ts: int
    scene: str
    items: tuple[tuple[str, int], ...]
    query: str = ""  # the search text of the request; "" for a recommendation request

    def engaged_items(self, min_action: int = CLICK) -> list[str]:
        return [item for item, action in self.items if action >= min_action]


def group_sessions(events: Iterable[Event]) -> list[Session]:
    """Group a user's events by request_id, oldest session first.

    A session starts at its earliest event and takes that event's scene, and the first
    non-empty query among its events (one request has one query); an item seen
    several times in a session keeps its deepest action (pay > cart > click > exposure).
    Items are ordered deepest action first, then by first appearance.
    """
    groups: dict[str, list[Event]] = {}
    for event in events:
        groups.setdefault(event.request_id, []).append(event)
    sessions = []
    for request_id, group in groups.items():
        group.sort(key=lambda e: e.ts)
        deepest: dict[str, int] = {}
        for event in group:
            code = ACTION_CODE.get(event.action, 0)
            deepest[event.item_id] = max(code, deepest.get(event.item_id, 0))
        order = sorted(deepest.items(), key=lambda kv: -kv[1])  # stable: keeps first appearance
        query = next((event.query for event in group if event.query), "")
        sessions.append(Session(request_id, group[0].ts, group[0].scene, tuple(order), query))
    sessions.sort(key=lambda s: (s.ts, s.request_id))
    return sessions


@dataclass(frozen=True, slots=True)
class QueryText:
    """How query text enters the token rows: the bundle's tokenizer and the piece columns per row
    (queries longer than ``pieces`` pieces are truncated)."""

    tokenizer: TextTokenizer
    pieces: int


def gap_bucket(seconds: int | None) -> int:
    if seconds is None:
        return 0
    return bisect.bisect_right(GAP_EDGES, max(seconds, 0)) + 1


def _context_row(position: int, scene: int, ts: int, previous_ts: int | None) -> list[int]:
    moment = dt.datetime.fromtimestamp(ts, tz=dt.UTC)
    gap = gap_bucket(None if previous_ts is None else ts - previous_ts)
    return [CONTEXT, position, 0, 0, 0, 0, scene, moment.hour, moment.weekday(), gap]


def build_tokens(
    history: Sequence[Session],
    query_scene: str,
    query_ts: int,
    vocab: Vocabulary,
    max_sessions: int = MAX_SESSIONS,
    max_items: int = MAX_ITEMS_PER_SESSION,
    *,
    query: str = "",
    query_text: QueryText | None = None,
) -> np.ndarray:
    """(T, width) int64 for the last ``max_sessions`` sessions plus the query context.

    Sessions must be oldest first (as ``group_sessions`` returns them). ``query``: the request's
    search text ("" outside search), read only with ``query_text``; width is ``N_FEATURES``
    without ``query_text``, ``N_FEATURES + query_text.pieces`` with it (module docstring).
    """
    window = list(history[-max_sessions:])
    context: list[list[int]] = []  # one row per session, then the query's
    context_rows: list[int] = []  # where each lands in the sequence
    item_ids: list[str] = []
    item_columns: list[tuple[int, int, int]] = []  # (position, action, scene) of each item row
    previous_ts: int | None = history[-len(window) - 1].ts if len(history) > len(window) else None
    for position, session in enumerate(window):
        scene = vocab.scene_token(session.scene)
        context_rows.append(len(context_rows) + len(item_ids))
        context.append(_context_row(position, scene, session.ts, previous_ts))
        for item_id, action in session.items[:max_items]:
            item_ids.append(item_id)
            item_columns.append((position, action, scene))
        previous_ts = session.ts
    context_rows.append(len(context_rows) + len(item_ids))
    context.append(_context_row(len(window), vocab.scene_token(query_scene), query_ts, previous_ts))
    # Item rows filled column-wise: one catalog lookup for all of them, not a call per item.
    tokens = np.zeros((len(context) + len(item_ids), N_FEATURES), dtype=np.int64)
    tokens[context_rows] = context
    if item_ids:
        item_rows = np.setdiff1d(np.arange(len(tokens)), context_rows, assume_unique=True)
        position, action, scene = np.asarray(item_columns, dtype=np.int64).T
        token, category, price = vocab.item_feature_columns(item_ids)
        for name, values in (
            ("session", position), ("item", token), ("action", action),
            ("category", category), ("price", price), ("scene", scene),
        ):  # fmt: skip
            tokens[item_rows, COL[name]] = values
        tokens[item_rows, COL["token_type"]] = ITEM
    if query_text is None:
        return tokens
    pieces = np.zeros((len(tokens), query_text.pieces), dtype=np.int64)
    texts = [session.query for session in window] + [query]
    if any(texts):  # a recommendation request with no search in its window skips the tokenizer
        pieces[context_rows] = query_text.tokenizer.ids(texts, query_text.pieces)
    return np.concatenate([tokens, pieces], axis=1)


def stack_left_padded(sequences: Sequence[np.ndarray]) -> np.ndarray:
    """(B, T_max, width): pad rows (all zeros) on the left so the query is last.

    The sequences must share one width (``build_tokens`` of one encoder)."""
    length = max(len(s) for s in sequences)
    batch = np.zeros((len(sequences), length, sequences[0].shape[1]), dtype=np.int64)
    for row, sequence in enumerate(sequences):
        batch[row, length - len(sequence) :] = sequence
    return batch
