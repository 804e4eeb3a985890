"""The ``history`` channel: the user's own items (repeat and re-purchase), scored by recency,
frequency and action depth with the weights in the bundle manifest (``index.history``).

It contributes nothing when seen items are excluded: every item it could propose is seen.
The work is one pass over the history the request already holds, so it runs on the loop.
"""

from __future__ import annotations

from index.fusion import EMPTY, Candidates
from index.history import history_candidates
from service.channels.base import RequestContext
from service.runtime import Bundle


class HistoryChannel:
    name = "history"

    def available(self, bundle: Bundle) -> bool:
        return bundle.manifest.channels is not None

    async def propose(self, context: RequestContext, bundle: Bundle) -> Candidates:
        spec = bundle.manifest.channels
        if spec is None or context.exclude_seen:
            return EMPTY
        return history_candidates(
            context.sessions, bundle.vocab, context.now, spec.history, context.depth, context.excluded
        )
