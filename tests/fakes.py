"""Test doubles and builders shared by the service tests.

``FakeBundle`` implements ``service.runtime.Bundle`` without ONNX: a deterministic encoder
(the mean of the history items' vectors, so a user's own items rank high) over a real hnswlib
index and a real ``Vocabulary``. ``write_real_bundle`` publishes a complete, valid bundle
directory with a tiny hand-built ONNX encoder, for tests of the real loading path.

Both serve the nsp channel alone (a bundle from before the multi-channel merge) unless given
``channels`` (the manifest's ``ChannelsSpec``) and, for the i2i channel, an ``i2i`` table.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from fastapi import FastAPI

from index.ann import ItemIndex, search_excluding
from index.bundle import (
    ENCODER_FILE,
    INDEX_FILE,
    MANIFEST,
    POPULARITY_FILE,
    PROBE_FILE,
    ChannelsSpec,
    HnswParams,
    Manifest,
    commit,
    staging,
)
from index.features import COL, ITEM, N_FEATURES, Event, build_tokens, group_sessions, stack_left_padded
from index.i2i import I2I_FILE, ItemToItem
from index.item_meta import ItemMeta
from index.vocab import ITEM_OFFSET, Vocabulary
from service.app import create_app
from service.metrics import Metrics
from service.registry import BundleRegistry
from service.runtime import ALL_SCENES, Bundle, LoadedBundle
from service.settings import Settings
from service.store import History, InMemorySessionStore, SessionStore, StoreUnavailable
from service.text_indexes import TextIndexes
from service.topk_cache import CacheUnavailable, TopKCache

SCENES = ("default", "search", "feed")


def make_vocab(n_items: int, scenes: Sequence[str] = SCENES) -> Vocabulary:
    ids = [f"item-{i:04d}" for i in range(n_items)]
    categories = [f"cat-{i % 5}" for i in range(n_items)]
    prices = [float(1 + (i * 7) % 100) for i in range(n_items)]
    return Vocabulary.build(ids, categories, prices, list(scenes))


def manifest_fields(n_items: int, dim: int, *, ef_search: int = 64) -> dict[str, object]:
    """Everything a manifest needs except version, files and created_at."""
    return {
        "parent_version": None,
        "training": {"kind": "pretrain"},
        "model_config": {"d_model": dim},
        "embedding_dim": dim,
        "encoder": {
            "inputs": ["tokens"],
            "outputs": ["user_vec"],
            "max_sessions": 20,
            "max_items_per_session": 12,
        },
        "hnsw": {"space": "ip", "M": 16, "ef_construction": 100, "ef_search": ef_search},
        "item_count": n_items,
        "metrics": {"recall@100": 0.25},
    }


def unit_rows(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    vectors = rng.normal(size=(n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


class FakeBundle:
    """A ``Bundle`` with a fake encoder and a real index; counts encode and search calls."""

    def __init__(
        self,
        version: int = 1,
        n_items: int = 60,
        dim: int = 8,
        seed: int = 0,
        popularity: Mapping[str, list[str]] | None = None,
        channels: ChannelsSpec | None = None,
        i2i: ItemToItem | None = None,
        text: TextIndexes | None = None,
        meta: ItemMeta | None = None,
    ) -> None:
        """``channels`` None: a legacy bundle (nsp alone). ``i2i``, ``text`` and ``meta`` are
        served as given, unchecked (``LoadedBundle`` would validate them), so a test can hand a
        channel a broken table."""
        rng = np.random.default_rng(seed)
        self._vocab = make_vocab(n_items)
        self.item_vectors = unit_rows(rng, n_items, dim)
        self._index = ItemIndex.build(self.item_vectors, HnswParams(space="ip", ef_search=64))
        ids = [str(i) for i in self._vocab.item_ids]
        self._popularity = dict(popularity) if popularity is not None else {ALL_SCENES: ids[::-1][:20]}
        self._manifest = Manifest.model_validate(
            {
                **manifest_fields(n_items, dim),
                "version": version,
                "created_at": "2024-01-01T00:00:00+00:00",
                "files": {},
                "channels": channels.model_dump() if channels is not None else None,
                "text": text.spec.model_dump() if text is not None else None,
                "item_meta": {"attributes": meta.attribute_names} if meta is not None else None,
            }
        )
        self._i2i = i2i
        self._text = text
        self._meta = meta
        self.encode_calls = 0
        self.search_ks: list[int] = []

    @property
    def version(self) -> int:
        return self._manifest.version

    @property
    def manifest(self) -> Manifest:
        return self._manifest

    @property
    def vocab(self) -> Vocabulary:
        return self._vocab

    @property
    def i2i(self) -> ItemToItem | None:
        return self._i2i

    @property
    def text(self) -> TextIndexes | None:
        return self._text

    @property
    def meta(self) -> ItemMeta | None:
        return self._meta

    def encode(self, tokens: np.ndarray) -> np.ndarray:
        self.encode_calls += 1
        out = np.zeros((tokens.shape[0], self.item_vectors.shape[1]), dtype=np.float32)
        for row, sequence in enumerate(tokens):
            items = sequence[
                (sequence[:, COL["token_type"]] == ITEM) & (sequence[:, COL["item"]] >= ITEM_OFFSET)
            ]
            labels = items[:, COL["item"]] - ITEM_OFFSET
            out[row] = self.item_vectors[labels].mean(axis=0) if len(labels) else self.item_vectors[0]
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    def search(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        self.search_ks.append(k)
        return self._index.search(vectors, k)

    def search_excluding(
        self, vector: np.ndarray, k: int, excluded: frozenset[int]
    ) -> tuple[np.ndarray, np.ndarray]:
        return search_excluding(
            self.search, self._index.count, vector, k, excluded, self._index.params.ef_search
        )

    def fallback(self, scene: str) -> list[str]:
        return self._popularity.get(scene) or self._popularity[ALL_SCENES]


class FailingStore:
    """A ``SessionStore`` whose backend is down."""

    async def append(self, events: Sequence[Event]) -> int:
        raise StoreUnavailable("session store write failed: ConnectionError: connection refused")

    async def history(
        self, user_id: str, sessions: int, *, seen: bool = True, seen_before: int | None = None
    ) -> History:
        raise StoreUnavailable("session store read failed: ConnectionError: connection refused")

    async def recent(self, user_id: str, limit: int) -> list[Event]:
        raise StoreUnavailable("session store read failed: ConnectionError: connection refused")

    async def ping(self) -> bool:
        return False

    async def close(self) -> None:
        return None


class FailingCache:
    """A ``TopKCache`` whose backend is down."""

    async def get(self, user_id: str) -> bytes | None:
        raise CacheUnavailable("top-K cache read failed: ConnectionError: connection refused")

    async def put(self, user_id: str, value: bytes, ttl_s: float) -> None:
        raise CacheUnavailable("top-K cache write failed: ConnectionError: connection refused")

    async def delete(self, user_ids: Collection[str]) -> None:
        raise CacheUnavailable("top-K cache delete failed: ConnectionError: connection refused")

    async def close(self) -> None:
        return None


def registry_of(root: Path, *bundles: Bundle, metrics: Metrics | None = None) -> BundleRegistry:
    """A real registry over ``root`` whose loader hands out the given bundles by version.

    Each bundle gets a ``root/<version>/manifest.json`` stub so the registry can find it.
    """
    by_version = {bundle.version: bundle for bundle in bundles}
    for version in by_version:
        (root / str(version)).mkdir(parents=True, exist_ok=True)
        (root / str(version) / MANIFEST).write_text("{}")
    return BundleRegistry(root, lambda directory: by_version[int(directory.name)], metrics=metrics)


def history(
    user_id: str, items: Sequence[str], start_ts: int = 1_700_000_000, per_session: int = 3
) -> list[Event]:
    """Click events on ``items``, ``per_session`` to a request session, one minute apart."""
    return [
        Event(user_id, item, start_ts + 60 * i, "click", "default", f"{user_id}-req-{i // per_session}")
        for i, item in enumerate(items)
    ]


# --- a real bundle on disk, with a tiny ONNX encoder built by hand (no torch) -----------------


def _encoder_model(weight: np.ndarray, bias: np.ndarray) -> bytes:
    """user_vec = L2-normalise(mean over positions of float(tokens) @ weight + bias)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    dim = weight.shape[1]
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["tokens"], ["tokens_f"], to=TensorProto.FLOAT),
            helper.make_node("ReduceMean", ["tokens_f"], ["pooled"], axes=[1], keepdims=0),
            helper.make_node("MatMul", ["pooled", "weight"], ["projected"]),
            helper.make_node("Add", ["projected", "bias"], ["shifted"]),
            helper.make_node("LpNormalization", ["shifted"], ["user_vec"], axis=1, p=2),
        ],
        "fake_encoder",
        [helper.make_tensor_value_info("tokens", TensorProto.INT64, ["batch", "length", N_FEATURES])],
        [helper.make_tensor_value_info("user_vec", TensorProto.FLOAT, ["batch", dim])],
        initializer=[numpy_helper.from_array(weight, "weight"), numpy_helper.from_array(bias, "bias")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def reference_encode(tokens: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    out = tokens.astype(np.float32).mean(axis=1) @ weight + bias
    return (out / np.linalg.norm(out, axis=1, keepdims=True)).astype(np.float32)


def write_real_bundle(
    root: Path,
    version: int | None = None,
    *,
    n_items: int = 40,
    dim: int = 8,
    seed: int = 0,
    probe_error: float = 0.0,
    index_items: int | None = None,
    manifest_overrides: Mapping[str, object] | None = None,
    popularity: Mapping[str, object] | None = None,
    channels: ChannelsSpec | None = None,
    i2i: ItemToItem | None = None,
) -> Path:
    """Publish a complete bundle under ``root``; returns its directory.

    ``probe_error`` perturbs the recorded probe vectors (the encoder then fails the probe);
    ``index_items`` builds the index over fewer items than the vocabulary has. ``channels`` goes
    into the manifest and ``i2i`` is written as ``i2i.npz`` (each independently, so a test can
    publish a manifest that configures the i2i channel without the file).
    """
    rng = np.random.default_rng(seed)
    vocab = make_vocab(n_items)
    weight = rng.normal(size=(N_FEATURES, dim)).astype(np.float32)
    bias = rng.normal(size=(dim,)).astype(np.float32)
    ids = [str(i) for i in vocab.item_ids]
    users = [history(f"u{u}", rng.choice(ids, size=5).tolist()) for u in range(3)]
    tokens = stack_left_padded(
        [build_tokens(group_sessions(events), "default", 1_700_100_000, vocab) for events in users]
    )
    expected = reference_encode(tokens, weight, bias) + np.float32(probe_error)
    with staging(root) as stage:
        vocab.save(stage)
        (stage / ENCODER_FILE).write_bytes(_encoder_model(weight, bias))
        ItemIndex.build(unit_rows(rng, index_items or n_items, dim), HnswParams(space="ip")).save(
            stage / INDEX_FILE
        )
        popular = popularity if popularity is not None else {ALL_SCENES: ids[:10], "search": ids[-5:]}
        (stage / POPULARITY_FILE).write_text(json.dumps(popular))
        with (stage / PROBE_FILE).open("wb") as f:
            np.savez(f, tokens=tokens, user_vec=expected)
        if i2i is not None:
            i2i.save(stage / I2I_FILE)
        fields = manifest_fields(n_items, dim)
        if channels is not None:
            fields["channels"] = channels.model_dump()
        fields.update(manifest_overrides or {})
        return commit(root, stage, fields, version=version)


@asynccontextmanager
async def serving_app(
    root: Path,
    *bundles: Bundle,
    store: SessionStore | None = None,
    registry: BundleRegistry | None = None,
    topk_cache: TopKCache | None = None,
    **settings: Any,
) -> AsyncIterator[tuple[httpx.AsyncClient, FastAPI]]:
    """An HTTP client on ``create_app`` with its lifespan running (bundles via ``registry_of``),
    and the app (its ``state.services`` once the lifespan runs)."""
    config = Settings(**{"bundle_root": root, "redis_url": None, "watch_interval_s": 60, **settings})
    app = create_app(
        config,
        store or InMemorySessionStore(),
        registry or registry_of(root, *bundles),
        topk_cache=topk_cache,
    )
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://nsp") as client,
    ):
        yield client, app


@asynccontextmanager
async def serving(
    root: Path,
    *bundles: Bundle,
    store: SessionStore | None = None,
    registry: BundleRegistry | None = None,
    **settings: Any,
) -> AsyncIterator[httpx.AsyncClient]:
    """``serving_app``'s client alone."""
    async with serving_app(root, *bundles, store=store, registry=registry, **settings) as (client, _):
        yield client


async def post_events(client: httpx.AsyncClient, events: Sequence[Event]) -> None:
    body = {"events": [event_body(event) for event in events]}
    response = await client.post("/v1/events", json=body)
    assert response.status_code == 202, response.text


def event_body(event: Event) -> dict[str, Any]:
    """``event`` as ``POST /v1/events`` takes it: no ``query`` field when it has none (the API
    refuses an empty query)."""
    fields = event._asdict()
    if not event.query:
        del fields["query"]
    return fields


async def recall(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    """POST /v1/recall (for user ``alice`` unless ``user_id`` is given); asserts a 200."""
    response = await client.post("/v1/recall", json={"user_id": "alice", **body})
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def channel_and_merged(
    root: Path, seen: Sequence[str], channel: str, query: str, k: int
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The bundles under ``root`` served for ``alice``, who has engaged with ``seen``: (a search
    request asking ``channel`` alone, the same search request with every channel, a plain
    recommendation request), each for ``k`` items with seen items excluded."""
    store = InMemorySessionStore()
    await store.append(history("alice", list(seen)))
    as_of = history("alice", list(seen))[-1].ts + 3600
    async with serving(root, store=store, registry=BundleRegistry(root, LoadedBundle.load)) as client:
        alone = await recall(client, k=k, query=query, channels=[channel], as_of=as_of, exclude_seen=True)
        search = await recall(client, k=k, query=query, as_of=as_of, exclude_seen=True)
        plain = await recall(client, k=k, as_of=as_of, exclude_seen=True)
    return alone, search, plain


def ids(result: dict[str, Any]) -> list[str]:
    return [item["item_id"] for item in result["items"]]
