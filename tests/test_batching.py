"""Micro-batching of encoder calls: batches form under concurrency, results stay per request."""

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from fakes import FakeBundle

from index.features import Event, build_tokens, group_sessions
from service.batching import EncodeBatcher
from service.metrics import Metrics


def _sequence(bundle: FakeBundle, items: list[int]) -> np.ndarray:
    ids = [str(bundle.vocab.item_ids[i]) for i in items]
    events = [Event("u", item, 1000 + n, "click", "default", "r1") for n, item in enumerate(ids)]
    return build_tokens(group_sessions(events), "default", 2000, bundle.vocab, 20, 12)


class SlowBundle(FakeBundle):
    """Encodes slowly and records every batch size, so concurrent callers pile up."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.batches: list[int] = []
        self.gate = threading.Event()

    def encode(self, tokens: np.ndarray) -> np.ndarray:
        self.batches.append(len(tokens))
        self.gate.wait(5)
        return super().encode(tokens)


async def _run(batcher: EncodeBatcher, calls: list) -> list[np.ndarray]:
    batcher.start()
    try:
        return await asyncio.gather(*(batcher.encode(b, s) for b, s in calls))
    finally:
        await batcher.stop()


def test_concurrent_requests_share_a_batch_and_get_their_own_vectors() -> None:
    bundle = SlowBundle(n_items=60)
    sequences = [_sequence(bundle, [i, i + 1, (i * 7) % 60]) for i in range(9)]
    expected = [FakeBundle.encode(bundle, s[None])[0] for s in sequences]
    bundle.batches.clear()
    bundle.gate.clear()

    async def main() -> list[np.ndarray]:
        batcher = EncodeBatcher(ThreadPoolExecutor(2), Metrics(), max_batch=4, workers=1)
        batcher.start()
        first = asyncio.ensure_future(batcher.encode(bundle, sequences[0]))
        await asyncio.sleep(0.05)  # the worker is now stuck in the first (single) encode
        rest = [asyncio.ensure_future(batcher.encode(bundle, s)) for s in sequences[1:]]
        await asyncio.sleep(0.05)
        bundle.gate.set()
        out = await asyncio.gather(first, *rest)
        await batcher.stop()
        return out

    vectors = asyncio.run(main())
    assert bundle.batches == [1, 4, 4]  # alone at first, then what queued meanwhile, capped
    for got, want in zip(vectors, expected, strict=True):
        assert np.allclose(got, want, atol=1e-6)


def test_a_lone_request_is_not_delayed_into_a_batch() -> None:
    bundle = SlowBundle()
    bundle.gate.set()
    batcher = EncodeBatcher(ThreadPoolExecutor(1), Metrics(), max_batch=16, workers=1)
    asyncio.run(_run(batcher, [(bundle, _sequence(bundle, [1, 2]))]))
    assert bundle.batches == [1]


def test_bundles_are_never_mixed_in_one_encoder_run() -> None:
    old, new = SlowBundle(version=1, seed=1), SlowBundle(version=2, seed=2)
    old.gate.set()
    new.gate.set()
    calls = [(old if i % 2 else new, _sequence(old, [i, i + 3])) for i in range(6)]
    batcher = EncodeBatcher(ThreadPoolExecutor(1), Metrics(), max_batch=8, workers=1)
    vectors = asyncio.run(_run(batcher, calls))
    for (bundle, sequence), vector in zip(calls, vectors, strict=True):
        assert np.allclose(vector, FakeBundle.encode(bundle, sequence[None])[0], atol=1e-6)


def test_an_encoder_failure_reaches_every_caller_of_its_batch() -> None:
    class Broken(FakeBundle):
        def encode(self, tokens: np.ndarray) -> np.ndarray:
            raise RuntimeError("onnx exploded")

    bundle = Broken()
    batcher = EncodeBatcher(ThreadPoolExecutor(1), Metrics(), max_batch=8, workers=1)

    async def main() -> list[object]:
        batcher.start()
        out = await asyncio.gather(
            *(batcher.encode(bundle, _sequence(bundle, [i])) for i in range(3)), return_exceptions=True
        )
        await batcher.stop()
        return out

    results = asyncio.run(main())
    assert all(isinstance(r, RuntimeError) and "exploded" in str(r) for r in results)


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError):
        EncodeBatcher(ThreadPoolExecutor(1), Metrics(), max_batch=0, workers=1)
