"""The SID table: which items carry each semantic ID, and the way back from a SID to its items.

Rows are the distinct SIDs of the catalog, lexicographically sorted (so a SID's row is found by
binary search and the trie's leaves are the rows in order). Each row holds its items best first
by the score given at build time (for instance popularity), ties by label, in CSR form. Built
offline at publish, saved as ``SID_TABLE_FILE`` in the bundle and checked in full on load.
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from index.i2i import gather_rows
from index.sid_layout import LEVELS, SidLayout

SID_TABLE_FILE = "sid_table.npz"
SID_TABLE_FORMAT = 1
_TABLE_KEYS = ("format", "sizes", "codes", "offsets", "items", "item_sid")


@dataclass(frozen=True, eq=False)
class SidTable:
    """SIDs and their items. Immutable (arrays are read-only); safe to share between threads.

    Construct with ``build`` or ``load``; the constructor trusts its arguments.
    """

    layout: SidLayout
    codes: np.ndarray  # (S, 4) int64 unique SIDs, lexicographically sorted
    offsets: np.ndarray  # (S + 1,) int64 CSR into items
    items: np.ndarray  # (total,) int64 item labels, within a SID best first by the build score
    item_sid: np.ndarray  # (N,) int64 row of each item's SID, -1 for an item without one
    keys: np.ndarray = field(init=False, repr=False)  # (S,) int64 mixed-radix key per row, ascending

    def __post_init__(self) -> None:
        object.__setattr__(self, "keys", sid_keys(self.codes, self.layout))
        for array in (self.codes, self.offsets, self.items, self.item_sid, self.keys):
            array.setflags(write=False)

    @property
    def n_sids(self) -> int:
        return len(self.codes)

    @property
    def n_items(self) -> int:
        return len(self.item_sid)

    @classmethod
    def build(cls, layout: SidLayout, item_sids: np.ndarray, item_scores: np.ndarray) -> SidTable:
        """From each item's SID (``(N, 4)`` int64, a row of -1 for an item without one) and a
        score per item (``(N,)``, higher first within a SID, ties by label).

        Raises ``ValueError`` for values outside the layout, partly missing SIDs or scores that
        are not finite.
        """
        item_sids = np.asarray(item_sids, dtype=np.int64)
        item_scores = np.asarray(item_scores, dtype=np.float64)
        if item_sids.ndim != 2 or item_sids.shape[1] != LEVELS:
            raise ValueError(f"item SIDs need shape (N, {LEVELS}), got {item_sids.shape}")
        if item_scores.shape != (len(item_sids),):
            raise ValueError(f"{len(item_sids)} item SIDs but item scores of shape {item_scores.shape}")
        if not np.all(np.isfinite(item_scores)):
            raise ValueError("item scores are not all finite")
        missing = item_sids == -1
        has_sid = ~missing.any(axis=1)
        if np.any(missing.any(axis=1) & ~missing.all(axis=1)):
            raise ValueError("an item's SID is partly -1: a SID is either whole or all -1")
        labels = np.flatnonzero(has_sid)
        sids = item_sids[labels]
        if len(sids) and ((sids < 0).any() or (sids >= np.asarray(layout.sizes)).any()):
            raise ValueError(f"SID values outside the level sizes {layout.sizes}")
        unique, first, row = np.unique(sid_keys(sids, layout), return_index=True, return_inverse=True)
        row = row.reshape(-1)
        order = np.lexsort((labels, -item_scores[labels], row))
        item_sid = np.full(len(item_sids), -1, dtype=np.int64)
        item_sid[labels] = row
        return cls(
            layout=layout,
            codes=sids[first].reshape(-1, LEVELS),
            offsets=np.searchsorted(row[order], np.arange(len(unique) + 1)).astype(np.int64),
            items=labels[order].astype(np.int64),
            item_sid=item_sid,
        )

    def save(self, directory: Path) -> None:
        with (directory / SID_TABLE_FILE).open("wb") as f:
            np.savez(
                f,
                format=np.int64(SID_TABLE_FORMAT),
                sizes=np.asarray(self.layout.sizes, dtype=np.int64),
                codes=self.codes,
                offsets=self.offsets,
                items=self.items,
                item_sid=self.item_sid,
            )

    @classmethod
    def load(cls, directory: Path, layout: SidLayout, n_items: int) -> SidTable:
        """The table in ``directory``, checked against ``layout`` and the catalog size.

        Raises ``OSError`` (``FileNotFoundError``) for a missing file and ``ValueError`` whose
        message starts with the file's name for anything else: an unreadable file, a missing
        array, another layout, codes out of range, unsorted or repeated, offsets that are not a
        CSR index over ``items`` (or leave a SID without items), labels outside the catalog or
        repeated, ``item_sid`` disagreeing with the rows.
        """
        data = read_arrays(directory / SID_TABLE_FILE, _TABLE_KEYS)
        _check_table(data, layout, n_items)
        return cls(
            layout=layout,
            codes=data["codes"].astype(np.int64),
            offsets=data["offsets"].astype(np.int64),
            items=data["items"].astype(np.int64),
            item_sid=data["item_sid"].astype(np.int64),
        )

    def rows_of(self, sids: np.ndarray) -> np.ndarray:
        """(n, 4) SIDs → (n,) int64 table row, -1 where the SID (in range or not) is absent."""
        sids = np.asarray(sids, dtype=np.int64)
        if sids.ndim != 2 or sids.shape[1] != LEVELS:
            raise ValueError(f"SIDs need shape (n, {LEVELS}), got {sids.shape}")
        valid = np.asarray(((sids >= 0) & (sids < np.asarray(self.layout.sizes))).all(axis=1))
        keys = sid_keys(np.where(valid[:, None], sids, 0), self.layout)
        rows = np.minimum(np.searchsorted(self.keys, keys), max(self.n_sids - 1, 0))
        found = valid & (self.keys[rows] == keys) if self.n_sids else np.zeros(len(sids), dtype=bool)
        return np.where(found, rows, -1).astype(np.int64)

    def expand(
        self, rows: np.ndarray, depth: int, excluded: frozenset[int] | np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """The items of SID ``rows`` in that order (within a SID the table's order), without
        ``excluded`` labels, at most ``depth``: (labels int64, position in ``rows`` of each
        label's SID int64), so a caller can score items by their SID's beam rank.

        Raises ``ValueError`` for a row outside the table.
        """
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        if len(rows) and (rows.min() < 0 or rows.max() >= self.n_sids):
            raise ValueError(f"SID rows outside the table's {self.n_sids} rows")
        if isinstance(excluded, frozenset):
            excluded = np.fromiter(excluded, dtype=np.int64, count=len(excluded))
        if depth <= 0 or not len(rows):
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        # Exclusions drop at most len(excluded) items, so later rows cannot reach the depth.
        lengths = self.offsets[rows + 1] - self.offsets[rows]
        before = np.cumsum(lengths) - lengths
        rows = rows[: int(np.searchsorted(before, depth + len(excluded)))]
        which, element = gather_rows(self.offsets, rows)
        labels = self.items[element]
        if len(excluded):
            keep = ~np.isin(labels, excluded)
            labels, which = labels[keep], which[keep]
        return labels[:depth].astype(np.int64), which[:depth].astype(np.int64)


def sid_keys(codes: np.ndarray, layout: SidLayout) -> np.ndarray:
    """(n, 4) in-range level values → (n,) int64 mixed-radix keys, ordered as the SIDs are
    lexicographically. Raises ``ValueError`` when the layout's keys would not fit in int64."""
    if np.prod(np.asarray(layout.sizes, dtype=object)) >= 2**63:
        raise ValueError(f"SID layout {layout.sizes} has more SIDs than int64 keys")
    keys = np.zeros(len(codes), dtype=np.int64)
    for level, size in enumerate(layout.sizes):
        keys = keys * size + codes[:, level]
    return keys


def read_arrays(path: Path, names: Sequence[str]) -> dict[str, np.ndarray]:
    """The arrays ``names`` of the ``.npz`` file at ``path``, all read into memory.

    Raises ``FileNotFoundError`` for a missing file, ``ValueError`` starting with the file's
    name for an unreadable one, a missing array or one of object dtype.
    """
    if not path.is_file():
        raise FileNotFoundError(f"{path.name}: missing")
    try:
        with np.load(path, allow_pickle=False) as data:
            absent = [name for name in names if name not in data.files]
            if absent:
                raise ValueError(f"{path.name}: missing array {absent[0]!r}")
            arrays = {name: data[name] for name in names}
    except (ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        if str(exc).startswith(f"{path.name}:"):
            raise
        raise ValueError(f"{path.name}: unreadable: {exc}") from exc
    for name, array in arrays.items():
        if array.dtype.kind not in "iu":
            raise ValueError(f"{path.name}: {name} must be integers, found {array.dtype}")
    return arrays


def _check_table(data: dict[str, np.ndarray], layout: SidLayout, n_items: int) -> None:
    name = SID_TABLE_FILE
    if data["format"].shape != () or int(data["format"]) != SID_TABLE_FORMAT:
        raise ValueError(f"{name}: format {data['format']}, this build reads {SID_TABLE_FORMAT}")
    if data["sizes"].tolist() != list(layout.sizes):
        raise ValueError(f"{name}: level sizes {data['sizes'].tolist()}, the bundle's {list(layout.sizes)}")
    codes, offsets, items, item_sid = data["codes"], data["offsets"], data["items"], data["item_sid"]
    if codes.ndim != 2 or codes.shape[1] != LEVELS:
        raise ValueError(f"{name}: codes need shape (S, {LEVELS}), found {codes.shape}")
    if offsets.shape != (len(codes) + 1,):
        raise ValueError(f"{name}: offsets of shape {offsets.shape} for {len(codes)} SIDs")
    if items.ndim != 1:
        raise ValueError(f"{name}: items must be 1-D, found shape {items.shape}")
    if item_sid.shape != (n_items,):
        raise ValueError(f"{name}: item_sid of shape {item_sid.shape}, the catalog has {n_items} items")
    if len(codes) and ((codes < 0).any() or (codes >= np.asarray(layout.sizes)).any()):
        raise ValueError(f"{name}: codes outside the level sizes {layout.sizes}")
    step = np.diff(sid_keys(codes.astype(np.int64), layout))
    if np.any(step < 0):
        raise ValueError(f"{name}: codes are not lexicographically sorted")
    if np.any(step == 0):
        raise ValueError(f"{name}: codes repeat a SID")
    if offsets[0] != 0 or offsets[-1] != len(items):
        raise ValueError(f"{name}: offsets run {offsets[0]}..{offsets[-1]}, items has {len(items)}")
    if np.any(np.diff(offsets) <= 0):
        raise ValueError(f"{name}: offsets are not increasing (a SID without items)")
    if len(items) and (items.min() < 0 or items.max() >= n_items):
        raise ValueError(f"{name}: item labels outside the catalog's {n_items} items")
    if np.any(np.bincount(items.astype(np.int64), minlength=n_items) > 1):
        raise ValueError(f"{name}: an item is listed under more than one SID")
    rows = np.repeat(np.arange(len(codes)), np.diff(offsets))
    if np.count_nonzero(item_sid != -1) != len(items) or np.any(item_sid[items] != rows):
        raise ValueError(f"{name}: item_sid disagrees with the items listed per SID")
