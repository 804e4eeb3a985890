"""The ``sid`` channel (CQ-SID): the request's query and the user's recently engaged items'
semantic IDs through the bundle's generator, trie-constrained beam search over the published
SIDs, and the SIDs' items (``index.sid_search``). Everything runs in the CPU pool; the beam size
follows the depth the merge asks for, bounded by the ``sid_max_beam`` setting. A request without
a query gets nothing from it."""

from __future__ import annotations

import asyncio
import functools
from concurrent.futures import Executor

from index.fusion import EMPTY, Candidates
from index.sid_search import SidSearch, recent_engaged
from index.tokenizer import TextTokenizer
from service.channels.base import RequestContext
from service.metrics import Metrics
from service.runtime import Bundle


class SidChannel:
    name = "sid"

    def __init__(self, executor: Executor, metrics: Metrics, max_beam: int) -> None:
        self._executor = executor
        self._metrics = metrics
        self._max_beam = max_beam

    def available(self, bundle: Bundle) -> bool:
        return bundle.text is not None and bundle.text.sid is not None

    async def propose(self, context: RequestContext, bundle: Bundle) -> Candidates:
        text = bundle.text
        if not context.query or text is None or text.sid is None:
            return EMPTY
        work = functools.partial(
            _search, text.sid, text.tokenizer, self._metrics, context, bundle, self._max_beam
        )
        return await asyncio.get_running_loop().run_in_executor(self._executor, work)


def _search(
    sid: SidSearch,
    tokenizer: TextTokenizer,
    metrics: Metrics,
    context: RequestContext,
    bundle: Bundle,
    max_beam: int,
) -> Candidates:
    assert context.query is not None
    recent = recent_engaged(context.sessions, bundle.vocab, sid.spec.user_sids)
    beam = sid.beam_for(context.depth, max_beam)
    with metrics.stage("sid_generate"):
        rows, scores = sid.generate_for(context.query, tokenizer, recent, beam)
    with metrics.stage("sid_lookup"):
        return sid.items_of(rows, scores, context.depth, context.excluded)
