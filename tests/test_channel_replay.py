"""The service answers a replayed evaluation case exactly as the offline evaluation ranks it.

Validation cases of the tiny world are replayed through ``POST /v1/recall`` with ``as_of`` at
the target session's time, against the real bundle ``nsprecall train``/``publish`` made (its
fitted channels, merge and i2i table). With the deterministic channels (history, i2i,
popular) the answer must equal ``model_export.channels``' ranking item for item: the benchmark
judges what the service serves. (The nsp channel is left out only because the service searches
HNSW where the offline ranking is exact.)
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fakes import post_events, recall, serving

from index.bundle import ChannelsSpec
from index.features import ACTIONS, Event
from index.i2i import I2I_FILE, ItemToItem
from model_export.channels import ChannelRanker, OfflineChannels
from model_export.data import EvalCase, load_dataset
from model_export.ranking import case_targets
from service.runtime import LoadedBundle

pytestmark = pytest.mark.anyio

CHANNELS = ["history", "i2i", "popular"]
K = 20


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def events_of(user_id: str, case: EvalCase) -> list[Event]:
    return [
        Event(user_id, item, session.ts, ACTIONS[action - 1], session.scene, session.request_id)
        for session in case.history
        for item, action in session.items
    ]


@pytest.mark.parametrize("exclude_seen", [False, True])
async def test_replayed_cases_get_the_offline_ranking(
    world: Path, bundle_root: Path, tmp_path: Path, exclude_seen: bool
) -> None:
    bundle = LoadedBundle.load(bundle_root / "1")
    assert bundle.manifest.channels is not None
    spec: ChannelsSpec = bundle.manifest.channels
    dataset = load_dataset(world / "events.csv", world / "catalog.csv", val_days=1, test_days=1)
    cases, _ = case_targets(dataset.val, dataset.vocab)
    cases = [c for c in cases if sum(len(s.items) for s in c.history) <= 400][:12]
    assert spec.i2i is not None and len(cases) >= 5
    table = ItemToItem.load(bundle_root / "1" / I2I_FILE, bundle.vocab.n_items)
    source = OfflineChannels(
        bundle.vocab, dataset.popularity, spec.history, table, spec.i2i, min_depth=spec.min_depth
    )
    offline = ChannelRanker(source, spec, CHANNELS).rank(cases, K, exclude_seen)

    async with serving(tmp_path / "bundles", bundle) as client:
        for n, case in enumerate(cases):
            user = f"replay-{n}"
            await post_events(client, events_of(user, case))
            answer = await recall(
                client,
                user_id=user,
                k=K,
                scene=case.target.scene,
                as_of=case.target.ts,
                channels=CHANNELS,
                exclude_seen=exclude_seen,
            )
            served = [bundle.vocab.item_index(item["item_id"]) for item in answer["items"]]
            assert answer["source"] == "model"
            assert served == offline[n].tolist(), f"case {n}"
