"""Event log + catalog → per-user request sessions → time-based splits.

Split (by wall-clock time, never by user): the last ``test_days`` of the log are the test
period, the ``val_days`` before them the validation period, everything earlier is training.
An evaluation case is a user's *first* session with engagement (click or deeper) inside a
period, with every earlier session as history; the model is selected on validation cases only.
A **search case** is every session with a query and engagement inside a period (a user's
first session included: a search needs no history), with the earlier sessions as history;
search cases are judged and fitted apart from the recommendation ones.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from index.features import ACTION_CODE, ACTIONS, CLICK, Event, Session, group_sessions
from index.text import normalize_text
from index.vocab import Vocabulary

log = logging.getLogger(__name__)

EVENT_COLUMNS = ["user_id", "item_id", "ts", "action", "scene", "request_id"]
QUERY_COLUMN = "query"  # optional: the search text of the event's request, empty elsewhere
CATALOG_COLUMNS = ["item_id", "category", "price"]  # what the vocabulary is built from
DAY = 86400
MIN_USERS = 2  # below this there is nothing to generalise across
EXAMPLE_IDS = 5  # missing catalog items named in a refusal


class DataError(ValueError):
    """The event log or catalog cannot be used as given; the message says what to change."""


@dataclass(frozen=True)
class EvalCase:
    user_id: str
    history: list[Session]  # oldest first, all strictly before the target
    target: Session

    def target_items(self) -> list[str]:
        return self.target.engaged_items()


@dataclass
class Dataset:
    vocab: Vocabulary
    train: dict[str, list[Session]]  # sessions before the validation period
    val: list[EvalCase]
    test: list[EvalCase]
    val_start: int
    test_start: int
    data_start: int
    data_end: int
    popularity: dict[str, list[str]]  # scene → item ids by engagement in training; "*" = all
    search_val: list[EvalCase] = field(default_factory=list)  # sessions with a query, see above
    search_test: list[EvalCase] = field(default_factory=list)

    @property
    def has_queries(self) -> bool:
        """Whether the log carries search text (training sessions or search cases)."""
        return bool(self.search_val or self.search_test) or any(
            s.query for sessions in self.train.values() for s in sessions
        )


def read_events(path: Path) -> pd.DataFrame:
    """CSV (optionally .gz) with the design's event columns; ids read as strings. ``DataError``
    for a missing or unreadable file, missing columns or actions outside ``ACTIONS``.

    The optional ``query`` column is returned normalised (``index.text.normalize_text``), ""
    where empty; a log without it (every log before search) reads as all "".
    """
    frame = _read_csv(
        path,
        {
            "user_id": str,
            "item_id": str,
            "action": str,
            "scene": str,
            "request_id": str,
            "ts": np.int64,
            QUERY_COLUMN: str,
        },
        EVENT_COLUMNS,
    )
    if QUERY_COLUMN in frame.columns:
        raw = frame[QUERY_COLUMN].fillna("")
        # Most rows repeat one request's query: normalise each distinct text once.
        normalised = {text: normalize_text(text) for text in raw.unique().tolist()}
        frame[QUERY_COLUMN] = raw.map(normalised)
    else:
        frame[QUERY_COLUMN] = ""
    unknown = set(frame["action"].fillna("").unique()) - set(ACTION_CODE)
    if unknown:
        raise DataError(
            f"{path}: unknown actions {sorted(unknown)}; the known actions are {', '.join(ACTIONS)}"
        )
    return frame[[*EVENT_COLUMNS, QUERY_COLUMN]]


def read_catalog(path: Path) -> pd.DataFrame:
    """``DataError`` for a missing or unreadable file or missing columns."""
    return _read_csv(path, {"item_id": str, "category": str}, CATALOG_COLUMNS)


def _read_csv(path: Path, dtype: dict[str, Any], columns: list[str]) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"{path} does not exist (--data is a directory holding events.csv and catalog.csv)")
    try:
        frame = pd.read_csv(path, dtype=dtype)
    except ValueError as exc:  # pandas' parser and type errors, an empty file
        raise DataError(f"{path}: cannot read it: {exc}") from exc
    missing = set(columns) - set(frame.columns)
    if missing:
        raise DataError(f"{path}: missing columns {sorted(missing)} (it needs {', '.join(columns)})")
    return frame


def catalog_vocab(catalog: pd.DataFrame, scenes: list[str], base: Vocabulary | None = None) -> Vocabulary:
    """The catalog's vocabulary; with ``base``, ``base`` extended by the items and scenes it lacks
    (an incremental round keeps the indices its model was trained with)."""
    columns = (catalog["item_id"].tolist(), catalog["category"].tolist(), catalog["price"].tolist(), scenes)
    return Vocabulary.build(*columns) if base is None else base.extended(*columns)


def iter_user_events(frame: pd.DataFrame) -> Iterator[tuple[str, list[Event]]]:
    frame = frame.sort_values(["user_id", "ts"], kind="stable")
    queries = frame[QUERY_COLUMN] if QUERY_COLUMN in frame.columns else pd.Series("", index=frame.index)
    columns = [frame[c].to_numpy() for c in EVENT_COLUMNS] + [queries.to_numpy()]
    users = columns[0]
    if len(users) == 0:
        return
    boundaries = np.flatnonzero(users[1:] != users[:-1]) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [len(users)]])
    for start, end in zip(starts, ends, strict=True):
        events = [
            Event(str(u), str(i), int(t), str(a), str(s), str(r), str(q))
            for u, i, t, a, s, r, q in zip(*(c[start:end] for c in columns), strict=True)
        ]
        yield str(users[start]), events


def popularity_by_scene(sessions: dict[str, list[Session]], top: int) -> dict[str, list[str]]:
    counts: dict[str, dict[str, int]] = {"*": {}}
    for user_sessions in sessions.values():
        for session in user_sessions:
            scene_counts = counts.setdefault(session.scene, {})
            for item, action in session.items:
                if action >= CLICK:
                    scene_counts[item] = scene_counts.get(item, 0) + 1
                    counts["*"][item] = counts["*"].get(item, 0) + 1
    return {
        scene: [item for item, _ in sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))[:top]]
        for scene, c in counts.items()
    }


def _first_engaged(sessions: list[Session], start: int, end: int) -> int | None:
    for position, session in enumerate(sessions):
        if start <= session.ts < end and session.engaged_items():
            return position
    return None


def load_dataset(
    events_path: Path,
    catalog_path: Path,
    val_days: int = 1,
    test_days: int = 1,
    popularity_top: int = 2000,
    base_vocab: Vocabulary | None = None,
) -> Dataset:
    return build_dataset(
        read_events(events_path), read_catalog(catalog_path), val_days, test_days, popularity_top, base_vocab
    )


def load_training_dataset(events_path: Path, catalog_path: Path, val_days: int, test_days: int) -> Dataset:
    """``load_dataset`` that refuses (``DataError``) what cannot train and judge a model: fewer
    than ``MIN_USERS`` users, log items the catalog lacks (they would be silently left out of
    the targets and the evaluation), or an empty training, validation or test split. The log
    checks run before the sessions are built, so a bad log fails fast."""
    frame, catalog = read_events(events_path), read_catalog(catalog_path)
    users = frame["user_id"].nunique()
    if users < MIN_USERS:
        raise DataError(
            f"{events_path} has events of {users} user(s); training needs several users "
            "(point --data at a fuller log)"
        )
    log_items = pd.Index(frame["item_id"].unique())
    missing = log_items[~log_items.isin(catalog["item_id"])]
    if len(missing):
        examples = ", ".join(str(item) for item in missing.sort_values()[:EXAMPLE_IDS])
        raise DataError(
            f"{len(missing)} item ids in {events_path} are not in {catalog_path} (e.g. {examples}): "
            "add them to catalog.csv, or point --data at a directory whose catalog covers the log"
        )
    dataset = build_dataset(frame, catalog, val_days, test_days)
    span = f"the log spans {(dataset.data_end - dataset.data_start) / DAY:.1f} days"
    if not dataset.train:
        raise DataError(
            f"no training sessions before the validation period: {span}, and --val-days {val_days} "
            f"plus --test-days {test_days} take all of it; lower --val-days or --test-days"
        )
    if not dataset.val:
        raise DataError(
            f"no validation cases: no user has a session with a click or deeper, after an earlier "
            f"session, in the {val_days} day(s) before the test period ({span}): pass a larger --val-days"
        )
    if not dataset.test:
        raise DataError(
            f"no test cases: no user has a session with a click or deeper, after an earlier session, "
            f"in the last {test_days} day(s) of the log ({span}): pass a larger --test-days"
        )
    return dataset


def build_dataset(
    frame: pd.DataFrame,
    catalog: pd.DataFrame,
    val_days: int = 1,
    test_days: int = 1,
    popularity_top: int = 2000,
    base_vocab: Vocabulary | None = None,
    end_ts: int | None = None,
) -> Dataset:
    """``load_dataset`` on frames; ``end_ts`` (default: just after the last event) is where
    the test period ends."""
    vocab = catalog_vocab(catalog, sorted(frame["scene"].unique().tolist()), base_vocab)
    data_start = int(frame["ts"].min())
    data_end = int(frame["ts"].max()) + 1 if end_ts is None else end_ts
    test_start = data_end - test_days * DAY
    val_start = test_start - val_days * DAY
    train: dict[str, list[Session]] = {}
    val: list[EvalCase] = []
    test: list[EvalCase] = []
    search: dict[str, list[EvalCase]] = {"val": [], "test": []}
    for user_id, events in iter_user_events(frame):
        sessions = group_sessions(events)
        train_sessions = [s for s in sessions if s.ts < val_start]
        if train_sessions:
            train[user_id] = train_sessions
        for cases, start, end in ((val, val_start, test_start), (test, test_start, data_end)):
            position = _first_engaged(sessions, start, end)
            if position:  # None or 0: no target, or no history to predict from
                cases.append(EvalCase(user_id, sessions[:position], sessions[position]))
        for split, start, end in (("val", val_start, test_start), ("test", test_start, data_end)):
            search[split].extend(
                EvalCase(user_id, sessions[:position], session)
                for position, session in enumerate(sessions)
                if session.query and start <= session.ts < end and session.engaged_items()
            )
    log.info(
        "%d events, %d items, %d train users, %d val cases, %d test cases, %d/%d search val/test cases",
        len(frame),
        vocab.n_items,
        len(train),
        len(val),
        len(test),
        len(search["val"]),
        len(search["test"]),
    )
    return Dataset(
        vocab=vocab,
        train=train,
        val=val,
        test=test,
        val_start=val_start,
        test_start=test_start,
        data_start=data_start,
        data_end=data_end,
        popularity=popularity_by_scene(train, popularity_top),
        search_val=search["val"],
        search_test=search["test"],
    )
