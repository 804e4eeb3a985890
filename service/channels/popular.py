"""The ``popular`` channel: the bundle's popularity list for the request's scene (the list the
fallback serves), then the all-scenes list, scored 1 / rank (``index.popularity``)."""

from __future__ import annotations

import itertools

from index.fusion import Candidates
from index.popularity import ALL_SCENES, popular_candidates
from service.channels.base import RequestContext
from service.runtime import Bundle


class PopularChannel:
    name = "popular"

    def available(self, bundle: Bundle) -> bool:
        return True

    async def propose(self, context: RequestContext, bundle: Bundle) -> Candidates:
        ranked = itertools.chain(bundle.fallback(context.scene), bundle.fallback(ALL_SCENES))
        return popular_candidates(ranked, bundle.vocab, context.depth, context.excluded_set)
