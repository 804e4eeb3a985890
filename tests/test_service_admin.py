"""The admin endpoints: bearer-token auth, reload, rollback, pin/unpin, their errors and metrics."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest
from fakes import FakeBundle, serving, serving_app

from index.bundle import MANIFEST, BundleError
from service.registry import BundleRegistry
from service.runtime import Bundle

pytestmark = pytest.mark.anyio

TOKEN = "s3cret-admin-token-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ENDPOINTS = [
    ("GET", "/v1/admin/bundle", None),
    ("POST", "/v1/admin/reload", None),
    ("POST", "/v1/admin/rollback", None),
    ("PUT", "/v1/admin/pin", {"version": 1}),
    ("DELETE", "/v1/admin/pin", None),
]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def registry(root: Path, versions: list[int], broken: frozenset[int] = frozenset()) -> BundleRegistry:
    """A registry over stub directories; versions in ``broken`` fail to load."""

    def load(directory: Path) -> Bundle:
        version = int(directory.name)
        if version in broken:
            raise BundleError(f"{directory}: checksum mismatch for encoder.onnx")
        return FakeBundle(version=version, n_items=20)

    for version in versions:
        publish(root, version)
    return BundleRegistry(root, load)


def publish(root: Path, version: int) -> None:
    (root / str(version)).mkdir(parents=True)
    (root / str(version) / MANIFEST).write_text("{}")


async def call(
    client: httpx.AsyncClient, method: str, path: str, body: object, headers: dict[str, str]
) -> httpx.Response:
    return await client.request(method, path, json=body, headers=headers)


def sample(text: str, line: str) -> bool:
    return line in text.splitlines()


@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS)
async def test_without_a_configured_token_admin_is_disabled(
    tmp_path: Path, method: str, path: str, body: object
) -> None:
    async with serving(tmp_path, registry=registry(tmp_path, [1, 2])) as client:
        response = await call(client, method, path, body, headers=AUTH)
        current = (await client.get("/v1/bundle")).json()
    assert response.status_code == 403
    assert response.json()["error"] == "admin_disabled"
    assert "NSP_ADMIN_TOKEN" in response.json()["detail"]
    assert current["version"] == 2 and current["pinned"] is False


@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS)
@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong-token-0123456789"}, {"Authorization": f"Basic {TOKEN}"}],
    ids=["no token", "wrong token", "not bearer"],
)
async def test_a_missing_or_wrong_token_is_401_and_changes_nothing(
    tmp_path: Path,
    method: str,
    path: str,
    body: object,
    headers: dict[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with serving(tmp_path, registry=registry(tmp_path, [1, 2]), admin_token=TOKEN) as client:
        with caplog.at_level(logging.WARNING):
            response = await call(client, method, path, body, headers=headers)
        current = (await client.get("/v1/bundle")).json()
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["error"] == "unauthorized"
    assert current["version"] == 2 and current["pinned"] is False
    denied = [r.getMessage() for r in caplog.records if "denied" in r.getMessage()]
    assert len(denied) == 1 and path in denied[0]
    assert TOKEN not in caplog.text


async def test_rollback_serves_the_previous_version_pinned(tmp_path: Path) -> None:
    async with serving(tmp_path, registry=registry(tmp_path, [1, 2, 3]), admin_token=TOKEN) as client:
        response = await client.post("/v1/admin/rollback", headers=AUTH)
        summary = (await client.get("/v1/bundle")).json()
        recall = (await client.post("/v1/recall", json={"user_id": "nobody", "k": 3})).json()
        metrics = (await client.get("/metrics")).text
    assert response.status_code == 200
    state = response.json()
    swaps = [{k: v for k, v in swap.items() if k != "at"} for swap in state.pop("swaps")]
    assert state == {
        "version": 2,
        "pinned": True,
        "previous_version": 3,
        "versions": [1, 2, 3],
        "failed": [],
    }
    assert swaps == [  # newest first
        {"version": 2, "previous_version": 3, "outcome": "swapped", "trigger": "rollback", "reason": None},
        {"version": 3, "previous_version": None, "outcome": "swapped", "trigger": "start", "reason": None},
    ]
    assert summary["version"] == 2 and summary["pinned"] is True
    assert recall["bundle_version"] == 2
    assert sample(metrics, 'nsp_admin_actions_total{action="rollback",outcome="ok"} 1.0')
    assert sample(metrics, "nsp_bundle_pinned 1.0")


async def test_rollback_with_nothing_older_is_409(tmp_path: Path) -> None:
    async with serving(tmp_path, registry=registry(tmp_path, [1]), admin_token=TOKEN) as client:
        response = await client.post("/v1/admin/rollback", headers=AUTH)
        metrics = (await client.get("/metrics")).text
    assert response.status_code == 409
    assert response.json()["error"] == "nothing_to_roll_back"
    assert sample(metrics, 'nsp_admin_actions_total{action="rollback",outcome="failed"} 1.0')


async def test_pin_and_unpin(tmp_path: Path) -> None:
    async with serving(tmp_path, registry=registry(tmp_path, [1, 2, 3]), admin_token=TOKEN) as client:
        pinned = await client.put("/v1/admin/pin", json={"version": 1}, headers=AUTH)
        publish(tmp_path, 4)
        reloaded = await client.post("/v1/admin/reload", headers=AUTH)  # the pin wins
        unpinned = await client.delete("/v1/admin/pin", headers=AUTH)
        summary = (await client.get("/v1/bundle")).json()
    assert pinned.status_code == 200
    assert pinned.json()["version"] == 1 and pinned.json()["pinned"] is True
    assert reloaded.json()["version"] == 1 and reloaded.json()["pinned"] is True
    assert unpinned.json()["version"] == 4 and unpinned.json()["pinned"] is False
    assert summary["version"] == 4 and summary["pinned"] is False


async def test_pin_of_an_unknown_version_is_404(tmp_path: Path) -> None:
    async with serving(tmp_path, registry=registry(tmp_path, [1, 2]), admin_token=TOKEN) as client:
        response = await client.put("/v1/admin/pin", json={"version": 9}, headers=AUTH)
        summary = (await client.get("/v1/bundle")).json()
    assert response.status_code == 404
    assert response.json() == {"error": "unknown_version", "detail": f"no complete bundle 9 under {tmp_path}"}
    assert summary["version"] == 2 and summary["pinned"] is False


async def test_pin_of_a_broken_version_is_409_and_the_old_bundle_keeps_serving(tmp_path: Path) -> None:
    reg = registry(tmp_path, [1, 2], broken=frozenset({1}))
    async with serving(tmp_path, registry=reg, admin_token=TOKEN) as client:
        response = await client.put("/v1/admin/pin", json={"version": 1}, headers=AUTH)
        recall = (await client.post("/v1/recall", json={"user_id": "nobody", "k": 3})).json()
        state = (await client.get("/v1/admin/bundle", headers=AUTH)).json()
        metrics = (await client.get("/metrics")).text
    assert response.status_code == 409
    assert response.json()["error"] == "bundle_load_failed"
    assert "checksum mismatch" in response.json()["detail"]
    assert recall["bundle_version"] == 2
    assert state["version"] == 2 and state["pinned"] is False
    assert [f["version"] for f in state["failed"]] == [1]
    assert sample(metrics, 'nsp_admin_actions_total{action="pin",outcome="failed"} 1.0')
    assert sample(metrics, "nsp_bundle_load_failures_total 1.0")


@pytest.mark.parametrize("body", [{"version": 0}, {"version": "two"}, {}, {"version": 1, "force": True}])
async def test_a_bad_pin_request_is_422(tmp_path: Path, body: dict[str, object]) -> None:
    async with serving(tmp_path, registry=registry(tmp_path, [1]), admin_token=TOKEN) as client:
        response = await client.put("/v1/admin/pin", json=body, headers=AUTH)
    assert response.status_code == 422
    assert response.json()["error"] == "invalid_request"


async def test_reload_serves_a_new_version_before_the_next_poll(tmp_path: Path) -> None:
    async with serving(tmp_path, registry=registry(tmp_path, [1]), admin_token=TOKEN) as client:
        publish(tmp_path, 2)  # the watcher polls only every 60 s here
        response = await client.post("/v1/admin/reload", headers=AUTH)
        recall = (await client.post("/v1/recall", json={"user_id": "nobody", "k": 3})).json()
        metrics = (await client.get("/metrics")).text
    assert response.status_code == 200
    assert response.json()["version"] == 2 and response.json()["previous_version"] == 1
    assert recall["bundle_version"] == 2
    assert sample(metrics, 'nsp_admin_actions_total{action="reload",outcome="ok"} 1.0')


def test_admin_endpoints_are_documented_with_bearer_auth() -> None:
    from service.app import create_app
    from service.settings import Settings

    schema = create_app(Settings(redis_url=None)).openapi()
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    for _, path, _ in ENDPOINTS:
        assert path in schema["paths"]


async def test_the_serving_state_and_its_swaps_are_public_at_v1_bundles(tmp_path: Path) -> None:
    """``GET /v1/bundles`` needs no token (none is even configured) and shows each swap and
    failed load, newest first, with what triggered it."""
    async with serving_app(tmp_path, registry=registry(tmp_path, [1], broken=frozenset({3}))) as (
        client,
        app,
    ):
        publish(tmp_path, 2)
        publish(tmp_path, 3)
        await app.state.services.registry.refresh()  # the watcher's poll: 3 fails, 2 swaps in
        response = await client.get("/v1/bundles")
        admin = await client.get("/v1/admin/bundle")
    assert admin.status_code == 403  # the admin twin stays closed
    assert response.status_code == 200
    state = response.json()
    swaps = state.pop("swaps")
    assert state == {
        "version": 2,
        "pinned": False,
        "previous_version": 1,
        "versions": [1, 2, 3],
        "failed": [{"version": 3, "attempts": 1, "retry_in_s": state["failed"][0]["retry_in_s"]}],
    }
    assert [{k: v for k, v in swap.items() if k != "at"} for swap in swaps] == [
        {"version": 2, "previous_version": 1, "outcome": "swapped", "trigger": "watcher", "reason": None},
        {
            "version": 3,
            "previous_version": 1,
            "outcome": "failed",
            "trigger": "watcher",
            "reason": f"{tmp_path / '3'}: checksum mismatch for encoder.onnx",
        },
        {"version": 1, "previous_version": None, "outcome": "swapped", "trigger": "start", "reason": None},
    ]
    assert swaps[0]["at"] >= swaps[1]["at"] >= swaps[2]["at"] > 1.7e9  # unix seconds


async def test_v1_bundles_matches_the_admin_state(tmp_path: Path) -> None:
    async with serving(tmp_path, registry=registry(tmp_path, [1, 2]), admin_token=TOKEN) as client:
        await client.put("/v1/admin/pin", json={"version": 1}, headers=AUTH)
        public = (await client.get("/v1/bundles")).json()
        admin = (await client.get("/v1/admin/bundle", headers=AUTH)).json()
    assert public == admin
    assert public["pinned"] is True and public["swaps"][0]["trigger"] == "pin"
