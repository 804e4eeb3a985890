"""Seeding the session store from an event-log CSV at start-up."""

from __future__ import annotations

import gzip
from pathlib import Path

import httpx
import pytest
from fakes import FakeBundle, registry_of

from service.app import create_app
from service.seed import SeedError, seed_store
from service.settings import Settings
from service.store import InMemorySessionStore

pytestmark = pytest.mark.anyio

HEADER = "user_id,item_id,ts,action,scene,request_id\n"
ROWS = [
    "u1,item-0001,100,click,feed,r1",
    "u2,item-0002,101,exposure,feed,r2",
    "u1,item-0003,102,pay,feed,r1",
    "u3,item-0004,103,click,search,r3",
    "u2,item-0005,oops,click,feed,r2",
    "u2,item-0006,104,like,feed,r2",
]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def write_log(path: Path, rows: list[str] = ROWS, header: str = HEADER) -> Path:
    text = header + "\n".join(rows) + "\n"
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


@pytest.mark.parametrize("name", ["events.csv", "events.csv.gz"])
async def test_seeds_every_valid_row(tmp_path: Path, name: str) -> None:
    store = InMemorySessionStore()
    users, events = await seed_store(store, write_log(tmp_path / name))
    assert (users, events) == (3, 4)  # the bad-ts and unknown-action rows are skipped
    assert [e.item_id for e in await store.recent("u1", 10)] == ["item-0003", "item-0001"]
    assert [e.item_id for e in await store.recent("u2", 10)] == ["item-0002"]


async def test_seed_users_keeps_the_first_distinct_users(tmp_path: Path) -> None:
    store = InMemorySessionStore()
    assert await seed_store(store, write_log(tmp_path / "events.csv"), max_users=2) == (2, 3)
    assert await store.recent("u3", 10) == []


async def test_large_files_are_appended_in_batches(tmp_path: Path) -> None:
    rows = [f"u{n % 7},item-{n},{n + 1},click,feed,r{n // 3}" for n in range(2500)]
    store = InMemorySessionStore(max_events=10_000)
    assert await seed_store(store, write_log(tmp_path / "big.csv", rows)) == (7, 2500)
    assert len(await store.recent("u0", 10_000)) == 358


async def test_a_file_without_the_event_header_is_refused(tmp_path: Path) -> None:
    path = write_log(tmp_path / "events.csv", header="user,item,ts\n")
    with pytest.raises(SeedError, match="action"):
        await seed_store(InMemorySessionStore(), path)
    with pytest.raises(SeedError, match="no such file"):
        await seed_store(InMemorySessionStore(), tmp_path / "missing.csv")


async def test_the_app_seeds_before_serving(tmp_path: Path) -> None:
    settings = Settings(bundle_root=tmp_path, redis_url=None, watch_interval_s=60)
    app = create_app(
        settings,
        registry=registry_of(tmp_path, FakeBundle()),
        seed_events=write_log(tmp_path / "e.csv"),
        seed_users=1,
    )
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://nsp") as client,
    ):
        u1 = (await client.post("/v1/recall", json={"user_id": "u1", "k": 3})).json()
        u2 = (await client.post("/v1/recall", json={"user_id": "u2", "k": 3})).json()
    assert u1["source"] == "model"
    assert u2["source"] == "fallback"
