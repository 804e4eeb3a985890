"""Micro-batching: concurrent requests' encoder calls coalesced into one ONNX Runtime run.

Under load many requests want the encoder at once; one run over a batch of B sequences costs
far less than B runs of one. ``EncodeBatcher`` never waits for a batch to fill: a request's
sequence goes into a queue, and each of ``workers`` loops takes everything queued (up to
``max_batch``) the moment it is free. At low load a request runs alone with no added delay;
under load the batches grow by themselves while the workers are busy.

Sequences of one batch are left-padded to the longest (the encoder masks padding; the
publish-time agreement check covers padded batches). Requests holding different bundles (a
swap in progress) are never mixed: each bundle's share of a batch is encoded with that bundle.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from concurrent.futures import Executor

import numpy as np

from index.features import stack_left_padded
from service.metrics import Metrics
from service.runtime import Bundle

log = logging.getLogger(__name__)

_Pending = tuple[Bundle, np.ndarray, "asyncio.Future[np.ndarray]"]


class EncodeBatcher:
    """``encode(bundle, sequence)`` → the user vector, batched with concurrent callers.

    Start with ``start()`` on the running loop; ``stop()`` cancels the workers and fails what
    is still queued.
    """

    def __init__(self, executor: Executor, metrics: Metrics, *, max_batch: int, workers: int) -> None:
        if max_batch < 1 or workers < 1:
            raise ValueError("max_batch and workers must be at least 1")
        self._executor = executor
        self._metrics = metrics
        self._max_batch = max_batch
        self._workers = workers
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        if not self._tasks:
            self._tasks = [
                asyncio.create_task(self._run(), name=f"encode-batcher-{i}") for i in range(self._workers)
            ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        while not self._queue.empty():
            _, _, future = self._queue.get_nowait()
            if not future.done():
                future.set_exception(RuntimeError("encoder batcher stopped"))

    async def encode(self, bundle: Bundle, sequence: np.ndarray) -> np.ndarray:
        """(T, F) tokens → (D,) user vector."""
        if not self._tasks:
            raise RuntimeError("encoder batcher not started")
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((bundle, sequence, future))
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            self._metrics.encode_batch_size.observe(len(batch))
            for bundle in {id(b): b for b, _, _ in batch}.values():
                group = [(sequence, future) for b, sequence, future in batch if b is bundle]
                try:
                    tokens = stack_left_padded([sequence for sequence, _ in group])
                    with self._metrics.stage("encode"):
                        vectors = await loop.run_in_executor(self._executor, bundle.encode, tokens)
                except Exception as exc:  # hand the failure to every caller of this group
                    for _, future in group:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_, future), vector in zip(group, vectors, strict=True):
                    if not future.done():  # the caller may have been cancelled meanwhile
                        future.set_result(vector)
