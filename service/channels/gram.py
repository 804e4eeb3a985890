"""The ``gram`` channel (GRAM): the request's query through the bundle's code generator, trie-
constrained beam search over the published text codes, the codes' items from the code index,
each scored by how closely the query side's and the product side's code probabilities agree
(``index.gram_search``). Everything runs in the CPU pool; beam and codes are the bundle's,
bounded by the ``gram_beam`` and ``gram_max_codes`` settings. A request without a query gets
nothing from it."""

from __future__ import annotations

import asyncio
import functools
from concurrent.futures import Executor

from index.fusion import EMPTY, Candidates
from index.gram_search import GramSearch
from index.tokenizer import TextTokenizer
from service.channels.base import RequestContext
from service.metrics import Metrics
from service.runtime import Bundle


class GramChannel:
    name = "gram"

    def __init__(self, executor: Executor, metrics: Metrics, max_beam: int, max_codes: int) -> None:
        self._executor = executor
        self._metrics = metrics
        self._max_beam = max_beam
        self._max_codes = max_codes

    def available(self, bundle: Bundle) -> bool:
        return bundle.text is not None and bundle.text.gram is not None

    async def propose(self, context: RequestContext, bundle: Bundle) -> Candidates:
        text = bundle.text
        if not context.query or text is None or text.gram is None:
            return EMPTY
        beam = min(text.gram.spec.beam, self._max_beam)
        codes = min(text.gram.spec.max_codes, self._max_codes)
        work = functools.partial(_search, text.gram, text.tokenizer, self._metrics, context, beam, codes)
        return await asyncio.get_running_loop().run_in_executor(self._executor, work)


def _search(
    gram: GramSearch,
    tokenizer: TextTokenizer,
    metrics: Metrics,
    context: RequestContext,
    beam: int,
    max_codes: int,
) -> Candidates:
    assert context.query is not None
    with metrics.stage("gram_generate"):
        rows, query_logp, _ = gram.generate_for(context.query, tokenizer, beam, max_codes)
    with metrics.stage("gram_lookup"):
        return gram.items_of(rows, query_logp, context.depth, context.excluded)
