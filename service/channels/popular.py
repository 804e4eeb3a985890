"""The ``popular`` channel: the bundle's popularity list for the request's scene (the list the
fallback serves), then the all-scenes list, scored 1 / rank (``index.popularity``)."""

from __future__ import annotations

import itertools
import weakref

from index.fusion import Candidates
from index.popularity import ALL_SCENES, popular_labels
from service.channels.base import RequestContext
from service.runtime import Bundle

MAX_LISTS = 256  # per bundle; a bundle has one popularity list per scene it was trained on


class PopularChannel:
    """Keeps each bundle's lists as labels (computed on a bundle's first request for the list,
    dropped with the bundle): one list per scene the bundle has, so the cache is bounded by the
    bundle, not by the scenes requests name."""

    name = "popular"

    def __init__(self) -> None:
        self._labels: weakref.WeakKeyDictionary[Bundle, dict[int, list[int]]] = weakref.WeakKeyDictionary()

    def available(self, bundle: Bundle) -> bool:
        return True

    async def propose(self, context: RequestContext, bundle: Bundle) -> Candidates:
        return popular_labels(self._ranked(bundle, context.scene), context.depth, context.excluded_set)

    def _ranked(self, bundle: Bundle, scene: str) -> list[int]:
        scene_list = bundle.fallback(scene)  # the scene's own list, or the all-scenes one
        per_bundle = self._labels.setdefault(bundle, {})
        ranked = per_bundle.get(id(scene_list))  # lists live as long as their bundle
        if ranked is None:
            ranked = bundle.vocab.labels_of(itertools.chain(scene_list, bundle.fallback(ALL_SCENES)))
            if len(per_bundle) < MAX_LISTS:  # a bundle whose fallback builds new lists: no cache
                per_bundle[id(scene_list)] = ranked
        return ranked
