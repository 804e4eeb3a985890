"""How a semantic ID (SID) is spelled: four levels and the generator's token ids for them.

A SID is ``(c1, c2, c3, g)``: the three RQ-VAE codes (level 1 is the item's category where it
has one) and the group suffix the cluster-size split appends (``model_export.sid.clusters``).
Arrays of SIDs are ``(n, 4)`` int64 level values. The generator reads and writes *tokens*: one
vocabulary for all levels, each level's values at its own offset, after two reserved ids
(``PAD_TOKEN`` pads a user's recent-SID context, ``BOS_TOKEN`` starts every decoded SID), so a
token says which level it belongs to and the model needs no separate position-per-level table.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LEVELS = 4  # three RQ-VAE levels and the group suffix
PAD_TOKEN = 0
BOS_TOKEN = 1
FIRST_TOKEN = 2


@dataclass(frozen=True)
class SidLayout:
    """Value ranges per level: codes in ``[0, sizes[l])``. Immutable and thread-safe."""

    sizes: tuple[int, int, int, int]  # (K1, K2, K3, G_max)

    def __post_init__(self) -> None:
        if len(self.sizes) != LEVELS or min(self.sizes) < 1:
            raise ValueError(f"a SID layout needs {LEVELS} positive level sizes, got {self.sizes}")

    @property
    def offsets(self) -> np.ndarray:
        """(4,) int64: the token id of value 0 at each level."""
        return np.asarray(FIRST_TOKEN + np.concatenate([[0], np.cumsum(self.sizes[:-1])]), dtype=np.int64)

    @property
    def vocab_size(self) -> int:
        return FIRST_TOKEN + sum(self.sizes)

    def level_range(self, level: int) -> tuple[int, int]:
        """[start, stop) token ids of ``level`` (0-based)."""
        start = int(self.offsets[level])
        return start, start + self.sizes[level]

    def to_tokens(self, sids: np.ndarray) -> np.ndarray:
        """(..., 4) level values → (..., 4) token ids. Raises ``ValueError`` out of range."""
        sids = np.asarray(sids, dtype=np.int64)
        if sids.shape[-1:] != (LEVELS,):
            raise ValueError(f"SIDs need a last axis of {LEVELS}, got shape {sids.shape}")
        if sids.size and ((sids < 0).any() or (sids >= np.asarray(self.sizes)).any()):
            raise ValueError(f"SID values outside the level sizes {self.sizes}")
        return np.asarray(sids + self.offsets, dtype=np.int64)

    def from_tokens(self, tokens: np.ndarray) -> np.ndarray:
        """(..., 4) token ids → (..., 4) level values (no range check: tokens come from a
        decoder constrained to each level's range)."""
        return np.asarray(np.asarray(tokens, dtype=np.int64) - self.offsets, dtype=np.int64)
