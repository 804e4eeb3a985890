"""The popular channel's list, shared by the service and offline evaluation: the scene's
popularity list, then the all-scenes list, as catalog labels scored 1 / rank."""

from __future__ import annotations

import itertools
from collections.abc import Collection, Iterable

import numpy as np

from index.vocab import Vocabulary

ALL_SCENES = "*"  # popularity key for all scenes together


def popular_candidates(
    ranked_ids: Iterable[str], vocab: Vocabulary, depth: int, excluded: Collection[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``depth`` distinct catalog labels of ``ranked_ids`` in order, none in ``excluded``."""
    lookup = vocab.item_index
    labels = (label for item_id in ranked_ids if (label := lookup(item_id)) is not None)
    return popular_labels(labels, depth, excluded)


def popular_labels(
    ranked: Iterable[int], depth: int, excluded: Collection[int]
) -> tuple[np.ndarray, np.ndarray]:
    """``popular_candidates`` of lists already mapped to labels (the service keeps them so per
    bundle: a heavy user's exclusions skip far down the list, a lookup per id each time)."""
    chosen: list[int] = []
    taken: set[int] = set()  # chosen already (the lists repeat items); excluded stays as given
    for label in ranked:
        if len(chosen) == depth:
            break
        if label not in excluded and label not in taken:
            taken.add(label)
            chosen.append(label)
    labels = np.asarray(chosen, dtype=np.int64)
    return labels, (1.0 / np.arange(1, len(labels) + 1)).astype(np.float32)


def scene_then_all(popularity: dict[str, list[str]], scene: str) -> Iterable[str]:
    """The scene's list (if any), then the all-scenes list."""
    return itertools.chain(popularity.get(scene, ()), popularity.get(ALL_SCENES, ()))
