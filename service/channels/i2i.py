"""The ``i2i`` channel: neighbours of the user's recent engaged items in the bundle's
co-occurrence table (``index.i2i``), aggregated with recency weights. Runs in the CPU pool:
its work grows with the table's neighbours per item times the recent items."""

from __future__ import annotations

import asyncio
import functools
from concurrent.futures import Executor

from index.fusion import EMPTY, Candidates
from index.i2i import i2i_candidates
from service.channels.base import RequestContext
from service.runtime import Bundle


class I2IChannel:
    name = "i2i"

    def __init__(self, executor: Executor) -> None:
        self._executor = executor

    def available(self, bundle: Bundle) -> bool:
        spec = bundle.manifest.channels
        return spec is not None and spec.i2i is not None and bundle.i2i is not None

    async def propose(self, context: RequestContext, bundle: Bundle) -> Candidates:
        spec, table = bundle.manifest.channels, bundle.i2i
        if spec is None or spec.i2i is None or table is None:
            return EMPTY
        work = functools.partial(
            i2i_candidates, context.sessions, bundle.vocab, table, spec.i2i, context.depth, context.excluded
        )
        return await asyncio.get_running_loop().run_in_executor(self._executor, work)
