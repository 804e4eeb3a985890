"""The ``dense`` channel: the request's query through the bundle's two-tower query encoder,
searched in its HNSW index of item text vectors (``index.dense``). Encoder and search run in the
CPU pool; a request without a query gets nothing from it."""

from __future__ import annotations

import asyncio
import functools
from concurrent.futures import Executor

from index.fusion import EMPTY, Candidates
from service.channels.base import RequestContext
from service.runtime import Bundle


class DenseChannel:
    name = "dense"

    def __init__(self, executor: Executor) -> None:
        self._executor = executor

    def available(self, bundle: Bundle) -> bool:
        return bundle.text is not None and bundle.text.dense is not None

    async def propose(self, context: RequestContext, bundle: Bundle) -> Candidates:
        text = bundle.text
        if not context.query or text is None or text.dense is None:
            return EMPTY
        work = functools.partial(
            text.dense.search, context.query, text.tokenizer, context.depth, context.excluded_set
        )
        return await asyncio.get_running_loop().run_in_executor(self._executor, work)
