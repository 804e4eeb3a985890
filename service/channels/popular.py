"""The ``popular`` channel: the bundle's popularity list for the request's scene (the list the
fallback serves), then the all-scenes list. Scores fall with the rank (1 / rank)."""

from __future__ import annotations

import itertools

import numpy as np

from index.fusion import Candidates
from service.channels.base import RequestContext
from service.runtime import ALL_SCENES, Bundle


class PopularChannel:
    name = "popular"

    def available(self, bundle: Bundle) -> bool:
        return True

    async def propose(self, context: RequestContext, bundle: Bundle) -> Candidates:
        return popular_labels(bundle, context.scene, context.depth, context.excluded_set)


def popular_labels(bundle: Bundle, scene: str, depth: int, excluded: frozenset[int]) -> Candidates:
    """Up to ``depth`` labels of the scene's list then the all-scenes list, none excluded."""
    chosen: list[int] = []
    taken = set(excluded)
    lookup = bundle.vocab.item_index
    for item_id in itertools.chain(bundle.fallback(scene), bundle.fallback(ALL_SCENES)):
        if len(chosen) == depth:
            break
        label = lookup(item_id)
        if label is not None and label not in taken:
            taken.add(label)
            chosen.append(label)
    labels = np.asarray(chosen, dtype=np.int64)
    return labels, (1.0 / np.arange(1, len(labels) + 1)).astype(np.float32)
