"""Every recall channel and the merge, offline: the lists the service would compute for
evaluation cases, and rankers over them for the harness (``model_export.ranking``).

The history, i2i and popular lists come from the same ``index`` functions the service calls;
the nsp list is the trained model's exact inner-product ranking (the service searches HNSW,
whose loss ``bench/quality.py`` reports separately). A case is answered as a request at the
target session's time and scene, with its history as the user's sessions and its query (search
cases; the text channels answer nothing without one) as the request's query. Lists are computed
once at the deepest K and cut for smaller ones: every channel's list at a depth is the prefix
of its deeper list, so this is what a request's channels return. As in the service, a k
request asks each channel for max(k, ``min_depth``) candidates and the merge cuts to k.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from index.bundle import ChannelsSpec
from index.features import RECALL_SESSIONS, Session
from index.fusion import EMPTY, Candidates, FusionParams, fuse
from index.history import HistoryParams, history_candidates
from index.i2i import I2IParams, ItemToItem, i2i_candidates
from index.popularity import popular_candidates, scene_then_all
from index.vocab import Vocabulary
from model_export.data import EvalCase
from model_export.ranking import first_k

MIN_DEPTH = ChannelsSpec.model_fields["min_depth"].default
CaseLists = list[dict[str, Candidates]]  # per case, channel → (labels, scores), best first
# A text channel offline: (query, the user's sessions before it, depth, excluded labels) → its
# list, computed by the same index code the service runs
# (``model_export.text.build.offline_text_searches``); only ``sid`` reads the sessions.
TextSearch = Callable[[str, Sequence[Session], int, np.ndarray], Candidates]


def seen_labels(case: EvalCase, vocab: Vocabulary) -> np.ndarray:
    labels = {
        label for s in case.history for item, _ in s.items if (label := vocab.item_index(item)) is not None
    }
    return np.asarray(sorted(labels), dtype=np.int64)


@dataclass
class OfflineChannels:
    """The channels of one bundle-to-be. ``user_vectors`` maps cases to (N, D) NSP user vectors
    (None: no nsp channel); ``items`` is the (M, D) item matrix they are searched against."""

    vocab: Vocabulary
    popularity: dict[str, list[str]]
    history: HistoryParams = field(default_factory=HistoryParams)
    i2i_table: ItemToItem | None = None
    i2i: I2IParams = field(default_factory=I2IParams)
    user_vectors: Callable[[Sequence[EvalCase]], np.ndarray] | None = None
    items: np.ndarray | None = None
    min_depth: int = MIN_DEPTH  # candidates per channel for a k request: max(k, min_depth)
    text: dict[str, TextSearch] = field(default_factory=dict)  # channel name → search

    def depth(self, k: int) -> int:
        return max(k, self.min_depth)

    @property
    def names(self) -> list[str]:
        return [*self.recommendation_names, *self.text]

    @property
    def recommendation_names(self) -> list[str]:
        """The channels that answer a request without a query."""
        names = ["nsp"] if self.user_vectors is not None else []
        names.append("history")
        if self.i2i_table is not None:
            names.append("i2i")
        return [*names, "popular"]

    def lists(
        self, cases: Sequence[EvalCase], depth: int, exclude_seen: bool, only: Sequence[str] | None = None
    ) -> CaseLists:
        """Per case, each channel's list (``only``: just those channels)."""
        wanted = [name for name in self.names if only is None or name in only]
        seen = [seen_labels(c, self.vocab) for c in cases]
        excluded = seen if exclude_seen else [np.zeros(0, dtype=np.int64)] * len(cases)
        out: CaseLists = [{} for _ in cases]
        if "nsp" in wanted:
            for row, candidates in enumerate(self._nsp(cases, depth, excluded)):
                out[row]["nsp"] = candidates
        for row, case in enumerate(cases):
            now, drop = case.target.ts, excluded[row]
            read = case.history[-RECALL_SESSIONS:]  # what the service reads of the user
            if "history" in wanted:
                out[row]["history"] = (
                    EMPTY
                    if exclude_seen
                    else history_candidates(read, self.vocab, now, self.history, depth, drop)
                )
            if "i2i" in wanted and self.i2i_table is not None:
                out[row]["i2i"] = i2i_candidates(read, self.vocab, self.i2i_table, self.i2i, depth, drop)
            if "popular" in wanted:
                ranked = scene_then_all(self.popularity, case.target.scene)
                out[row]["popular"] = popular_candidates(ranked, self.vocab, depth, set(drop.tolist()))
            for name, search in self.text.items():
                if name in wanted:
                    query = case.target.query
                    out[row][name] = search(query, read, depth, drop) if query else EMPTY
        return out

    def _nsp(self, cases: Sequence[EvalCase], depth: int, excluded: list[np.ndarray]) -> list[Candidates]:
        assert self.user_vectors is not None and self.items is not None
        out: list[Candidates] = []
        for start in range(0, len(cases), 512):
            chunk = cases[start : start + 512]
            users = self.user_vectors(chunk)
            widest = max((len(e) for e in excluded[start : start + len(chunk)]), default=0)
            width = min(depth + widest, len(self.items))
            scores = users @ self.items.T  # (B, M)
            top = np.argpartition(-scores, width - 1, axis=1)[:, :width]
            top_scores = np.take_along_axis(scores, top, axis=1)
            order = np.lexsort((top, -top_scores), axis=1)
            top, top_scores = (
                np.take_along_axis(top, order, axis=1),
                np.take_along_axis(top_scores, order, axis=1),
            )
            for row in range(len(chunk)):
                keep = ~np.isin(top[row], excluded[start + row])
                labels, values = top[row][keep][:depth], top_scores[row][keep][:depth]
                out.append((labels.astype(np.int64), values.astype(np.float32)))
        return out


def cut(lists: CaseLists, depth: int) -> CaseLists:
    """The same lists at a smaller depth (what the channels return at that depth)."""
    return [{name: (c[0][:depth], c[1][:depth]) for name, c in row.items()} for row in lists]


def pad_rows(rows: Sequence[np.ndarray], fill: Sequence[np.ndarray], k: int) -> np.ndarray:
    """(N, k): each row, then its ``fill`` labels not already in it, cut to k, -1 padded."""
    width = k + max((len(r) for r in rows), default=0)
    candidates = np.full((len(rows), width + k), -1, dtype=np.int64)
    for n, (row, extra) in enumerate(zip(rows, fill, strict=True)):
        extra = extra[~np.isin(extra, row)][:k]
        candidates[n, : len(row)] = row
        candidates[n, len(row) : len(row) + len(extra)] = extra
    return first_k(candidates, candidates >= 0, k)


def fill_lists(
    cases: Sequence[EvalCase], source: OfflineChannels, k: int, exclude_seen: bool
) -> list[np.ndarray]:
    """What the service pads a short answer with: the popular list (scene, then all scenes)."""
    return [row["popular"][0] for row in source.lists(cases, k, exclude_seen, only=["popular"])]


def merged_rows(
    lists: CaseLists, fusion: FusionParams, k: int, channels: Sequence[str] | None = None
) -> list[np.ndarray]:
    """Per case, the merged top k of the lists (``channels``: only those)."""
    rows = []
    for row in lists:
        chosen = row if channels is None else {n: c for n, c in row.items() if n in channels}
        rows.append(fuse(chosen, fusion, k)[0])
    return rows


@dataclass
class ChannelRanker:
    """A ``Ranker`` answering as the service does for a request naming these ``channels`` (all
    of them: the merged list), padded to k from popularity."""

    source: OfflineChannels
    spec: ChannelsSpec  # the fitted merge per exclusion policy and scenario
    channels: Sequence[str] | None = None
    search: bool = False  # the cases are search requests (their own fitted merge)

    def rank(self, cases: Sequence[EvalCase], k: int, exclude_seen: bool) -> np.ndarray:
        lists = self.source.lists(cases, self.source.depth(k), exclude_seen, only=self.channels)
        rows = merged_rows(lists, self.spec.fusion_for(exclude_seen, search=self.search), k)
        return pad_rows(rows, fill_lists(cases, self.source, k, exclude_seen), k)
