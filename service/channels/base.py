"""The channel interface: request context + bundle → scored candidates.

A channel is one retrieval path (``nsp``, ``history``, ``i2i``, ``popular``; search channels
later). Each lives in its own module of this package and is listed in ``service.channels``;
adding one means a module, its bundle files and a line there, never a change to another
channel. The pipeline (``service.recall``) runs the chosen channels concurrently, each under a
deadline; a channel that raises or times out is left out of the merge and counted, it never
fails the request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from index.features import Session
from index.fusion import Candidates
from service.runtime import Bundle


@dataclass(frozen=True)
class RequestContext:
    """What every channel may read about one request. Immutable; built once per request."""

    user_id: str
    sessions: list[Session]  # the user's sessions before ``now``, oldest first
    scene: str
    now: int  # the query context's time: the request's ``as_of``, or the time it arrived
    depth: int  # candidates wanted from each channel: max(k, the bundle's channels.min_depth)
    exclude_seen: bool
    excluded: np.ndarray  # sorted unique item labels no channel may return
    excluded_set: frozenset[int]  # the same labels, for per-candidate checks
    query: str | None = None


class Channel(Protocol):
    """One retrieval path. Implementations are stateless across requests and thread-safe.

    ``propose`` returns at most ``context.depth`` distinct catalog labels with their scores,
    best first, none of them in ``context.excluded``. It may raise: the pipeline counts the
    failure and answers without it. CPU work heavier than a few microseconds per history item
    goes to the CPU pool, never the event loop.
    """

    name: str

    def available(self, bundle: Bundle) -> bool:
        """Whether ``bundle`` carries what this channel needs (older bundles may not)."""
        ...

    async def propose(self, context: RequestContext, bundle: Bundle) -> Candidates: ...
