"""What the API says about items, on really trained and published bundles (``conftest``): the
catalog row of each item on request (``include: ["meta"]`` on recall and sessions, the nearline
cache's answers included), and ``GET /v1/items/{id}``: metadata, i2i neighbours, SID and gram
codes from the served bundle; 404 for an item it does not know, 422 for bad input."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fakes import FakeBundle, history, post_events, recall, serving, serving_app
from test_item_meta import catalog_rows

from index.features import Event
from index.item_meta import ItemMeta
from service.registry import BundleRegistry
from service.runtime import LoadedBundle
from service.store import InMemorySessionStore
from service.topk_cache import InMemoryTopKCache

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def search_bundle(search_bundle_root: Path) -> LoadedBundle:
    return LoadedBundle.load(search_bundle_root / "1")


async def test_recall_and_sessions_carry_each_items_catalog_row_only_when_asked(
    search_bundle_root: Path, search_world: Path, search_bundle: LoadedBundle
) -> None:
    expected = {item: asdict(info) for item, info in catalog_rows(search_world).items()}
    seen = search_bundle.vocab.item_ids[:9].tolist()
    unknown = Event("alice", "not-in-the-catalog", 1_700_090_000, "click", "default", "alice-later")
    events = [*history("alice", seen), unknown]
    store = InMemorySessionStore()
    await store.append(events)
    as_of = events[-1].ts + 3600
    root = search_bundle_root
    async with serving(root, store=store, registry=BundleRegistry(root, LoadedBundle.load)) as client:
        plain = await recall(client, k=30, as_of=as_of)
        with_meta = await recall(client, k=30, as_of=as_of, include=["meta"])
        searched = await recall(client, k=30, as_of=as_of, query="red dress", include=["meta"])
        sessions = (await client.get("/v1/users/alice/sessions")).json()
        sessions_meta = (await client.get("/v1/users/alice/sessions", params={"include": "meta"})).json()

    assert all("meta" not in item for item in plain["items"])
    assert [{k: v for k, v in item.items() if k != "meta"} for item in with_meta["items"]] == plain["items"]
    for answer in (with_meta, searched):
        assert len(answer["items"]) == 30
        assert all(item["meta"] == expected[item["item_id"]] for item in answer["items"])

    assert all("meta" not in item for session in sessions["sessions"] for item in session["items"])
    newest, *older = sessions_meta["sessions"]
    assert newest["items"] == [{"item_id": "not-in-the-catalog", "action": "click"}]  # nothing to show
    items = [item for session in older for item in session["items"]]
    assert sorted(item["item_id"] for item in items) == sorted(seen)
    assert all(item["meta"] == expected[item["item_id"]] for item in items)


async def test_the_item_view_shows_meta_neighbours_sid_and_codes_of_the_served_bundle(
    search_bundle_root: Path, search_world: Path, search_bundle: LoadedBundle
) -> None:
    expected = {item: asdict(info) for item, info in catalog_rows(search_world).items()}
    bundle = search_bundle
    assert bundle.i2i is not None and bundle.text is not None
    sid, gram = bundle.text.sid, bundle.text.gram
    assert sid is not None and gram is not None
    rows = np.diff(bundle.i2i.indptr)
    coded = np.bincount(gram.index.items, minlength=bundle.vocab.n_items)
    label = int(np.flatnonzero((rows >= 3) & (sid.table.item_sid >= 0) & (coded > 0))[0])
    item_id = str(bundle.vocab.item_ids[label])

    root = search_bundle_root
    async with serving(root, registry=BundleRegistry(root, LoadedBundle.load)) as client:
        response = await client.get(f"/v1/items/{item_id}", params={"neighbours": 2})
    assert response.status_code == 200, response.text
    view = response.json()
    assert (view["item_id"], view["bundle_version"], view["meta"]) == (item_id, 1, expected[item_id])

    start = int(bundle.i2i.indptr[label])
    strongest = bundle.i2i.indices[start : start + 2].tolist()
    assert [n["item_id"] for n in view["neighbours"]] == [str(bundle.vocab.item_ids[n]) for n in strongest]
    weights = [n["weight"] for n in view["neighbours"]]
    assert weights == sorted(weights, reverse=True) and weights[0] > 0
    assert all(n["meta"] == expected[n["item_id"]] for n in view["neighbours"])

    # The SID and the codes, looked up the other way round: they lead back to the item.
    sid_row = int(sid.table.rows_of(np.asarray([view["sid"]]))[0])
    assert (
        sid_row >= 0 and label in sid.table.items[sid.table.offsets[sid_row] : sid.table.offsets[sid_row + 1]]
    )
    codes = view["codes"]
    assert len(codes) == coded[label]
    assert [c["logprob"] for c in codes] == sorted((c["logprob"] for c in codes), reverse=True)
    for code in codes:
        pairs = tuple(tuple(part.split("=", 1)) for part in code["code"].split(" + "))
        row = int(gram.index.table.row_of(gram.vocab.encode([pairs]))[0])
        assert row >= 0 and label in gram.index.postings(np.asarray([row]))[1]
        assert code["granularity"] == (
            "coarse" if len(pairs) <= 2 else "medium" if len(pairs) == 3 else "fine"
        )
        assert code["logprob"] <= 0


async def test_without_text_channels_sid_and_codes_are_null(bundle_root: Path, world: Path) -> None:
    expected = {item: asdict(info) for item, info in catalog_rows(world).items()}
    bundle = LoadedBundle.load(bundle_root / "1")
    assert bundle.text is None and bundle.i2i is not None
    label = int(np.argmax(np.diff(bundle.i2i.indptr)))
    item_id = str(bundle.vocab.item_ids[label])
    async with serving(bundle_root, registry=BundleRegistry(bundle_root, LoadedBundle.load)) as client:
        view = (await client.get(f"/v1/items/{item_id}")).json()
    assert view["meta"] == expected[item_id]
    assert len(view["neighbours"]) == min(20, int(np.diff(bundle.i2i.indptr)[label]))
    assert (view["sid"], view["codes"]) == (None, None)


async def test_a_bundle_without_meta_or_i2i_answers_nulls_and_unknown_items_are_404(tmp_path: Path) -> None:
    async with serving(tmp_path, FakeBundle(version=3, n_items=20)) as client:
        view = await client.get("/v1/items/item-0004")
        unknown = await client.get("/v1/items/no-such-item")
        answer = await recall(client, k=5, include=["meta"])
    assert view.json() == {
        "item_id": "item-0004",
        "bundle_version": 3,
        "meta": None,
        "neighbours": [],
        "sid": None,
        "codes": None,
    }
    assert unknown.status_code == 404
    assert unknown.json() == {
        "error": "unknown_item",
        "detail": "item 'no-such-item' is not in the catalog of bundle 3",
    }
    assert all("meta" not in item for item in answer["items"])  # nothing to add


async def test_the_item_view_before_a_bundle_is_loaded_is_503(tmp_path: Path) -> None:
    async with serving(tmp_path) as client:
        response = await client.get("/v1/items/item-0004")
    assert response.status_code == 503 and response.json()["error"] == "no_bundle_loaded"


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/v1/recall", {"user_id": "alice", "include": ["nope"]}),
        ("POST", "/v1/recall", {"user_id": "alice", "include": "meta"}),
        ("POST", "/v1/recall", {"user_id": "alice", "include": ["meta"] * 5}),
        ("GET", "/v1/users/alice/sessions?include=nope", None),
        ("GET", "/v1/items/item-0004?neighbours=0", None),
        ("GET", "/v1/items/item-0004?neighbours=101", None),
        ("GET", "/v1/items/item-0004?neighbours=two", None),
    ],
)
async def test_bad_input_is_422(tmp_path: Path, method: str, path: str, body: dict[str, Any] | None) -> None:
    async with serving(tmp_path, FakeBundle(n_items=20)) as client:
        response = await client.request(method, path, json=body)
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "invalid_request"


async def test_a_cached_nearline_answer_carries_meta_on_request_and_the_cache_is_unchanged(
    tmp_path: Path,
) -> None:
    n_items = 60
    meta = ItemMeta(
        titles=[f"title {i}" for i in range(n_items)],
        categories=[f"cat-{i % 5}" for i in range(n_items)],
        prices=[float(i) for i in range(n_items)],
        attributes={"brand": [f"brand {i % 3}" if i % 2 else "" for i in range(n_items)]},
    )
    bundle = FakeBundle(version=7, n_items=n_items, meta=meta)
    cache = InMemoryTopKCache()
    settings = {"nearline_enabled": True, "nearline_k": 20}
    async with serving_app(tmp_path, bundle, topk_cache=cache, **settings) as (client, app):
        await post_events(client, history("alice", ["item-0003", "item-0011", "item-0017"]))
        await app.state.services.nearline.idle()
        entry = await cache.get("alice")
        plain = await recall(client, k=10)
        with_meta = await recall(client, k=10, include=["meta"])
        assert await cache.get("alice") == entry
    assert plain["source"] == with_meta["source"] == "cache"
    assert all("meta" not in item for item in plain["items"])
    assert [{k: v for k, v in item.items() if k != "meta"} for item in with_meta["items"]] == plain["items"]
    for item in with_meta["items"]:
        label = int(item["item_id"].removeprefix("item-"))
        brand = {"brand": f"brand {label % 3}"} if label % 2 else {}
        assert item["meta"] == {
            "title": f"title {label}",
            "category": f"cat-{label % 5}",
            "price": float(label),
            "attributes": brand,
        }
