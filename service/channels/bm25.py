"""The ``bm25`` channel: the request's search query against the bundle's BM25 index of item
texts (``index.bm25``). Answers nothing for a request without a query. Runs in the CPU pool:
its work grows with the items that share a word piece with the query."""

from __future__ import annotations

import asyncio
import functools
from concurrent.futures import Executor

from index.fusion import EMPTY, Candidates
from service.channels.base import RequestContext
from service.runtime import Bundle


class Bm25Channel:
    name = "bm25"

    def __init__(self, executor: Executor) -> None:
        self._executor = executor

    def available(self, bundle: Bundle) -> bool:
        return bundle.text is not None and bundle.text.bm25 is not None

    async def propose(self, context: RequestContext, bundle: Bundle) -> Candidates:
        text = bundle.text
        if not context.query or text is None or text.bm25 is None:
            return EMPTY
        work = functools.partial(
            text.bm25.search, context.query, text.tokenizer, context.depth, context.excluded
        )
        return await asyncio.get_running_loop().run_in_executor(self._executor, work)
