"""service.limits: the body-size limit and the in-flight limit as ASGI middleware, alone and
wired into the app; and the app's answers to bad input that the framework refuses itself."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeBundle, serving
from prometheus_client import CollectorRegistry, Counter, Gauge
from starlette.types import Message, Receive, Scope, Send

from service.app import create_app
from service.limits import BodySizeLimit, InFlightLimit, ShutdownCutoff
from service.schemas import MAX_TS
from service.settings import Settings

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Echo:
    """An ASGI app that reads the whole body and answers 200 with its length; can be held."""

    def __init__(self) -> None:
        self.calls = 0
        self.release = asyncio.Event()
        self.release.set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.calls += 1
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        await self.release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": str(len(body)).encode()})


def http_scope(path: str = "/v1/recall", headers: dict[str, str] | None = None) -> Scope:
    raw = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    return {"type": "http", "method": "POST", "path": path, "headers": raw}


class Client:
    """Feeds body chunks to an ASGI app, records how many it read and what it answered."""

    def __init__(self, chunks: list[bytes]) -> None:
        self._chunks = chunks
        self.read = 0
        self.sent: list[Message] = []

    async def receive(self) -> Message:
        if self.read == len(self._chunks):
            await asyncio.sleep(3600)  # a client that has sent everything waits for the answer
        chunk = self._chunks[self.read]
        self.read += 1
        return {"type": "http.request", "body": chunk, "more_body": self.read < len(self._chunks)}

    async def send(self, message: Message) -> None:
        self.sent.append(message)

    @property
    def status(self) -> int:
        return int(self.sent[0]["status"])

    @property
    def headers(self) -> dict[str, str]:
        return {k.decode().lower(): v.decode() for k, v in self.sent[0]["headers"]}

    def json(self) -> Any:
        return json.loads(b"".join(m.get("body", b"") for m in self.sent[1:]))


async def test_a_declared_body_over_the_limit_is_413_before_a_byte_is_read() -> None:
    app = Echo()
    client = Client([b"x" * 2048])
    await BodySizeLimit(app, max_bytes=1024)(
        http_scope(headers={"content-length": "2048"}), client.receive, client.send
    )
    assert client.status == 413
    assert client.json()["error"] == "body_too_large"
    assert "max_body_bytes=1024" in client.json()["detail"]
    assert client.headers["connection"] == "close"
    assert client.read == 0 and app.calls == 0


async def test_a_chunked_body_is_refused_as_soon_as_it_passes_the_limit() -> None:
    app = Echo()
    client = Client([b"x" * 600, b"x" * 600, b"x" * 600])
    await BodySizeLimit(app, max_bytes=1024)(
        http_scope(headers={"transfer-encoding": "chunked"}), client.receive, client.send
    )
    assert client.status == 413 and client.json()["error"] == "body_too_large"
    assert client.read == 2 and app.calls == 0  # the third chunk was never read


@pytest.mark.parametrize("headers", [{"transfer-encoding": "chunked"}, {"content-length": "1024"}])
async def test_bodies_within_the_limit_reach_the_app_whole(headers: dict[str, str]) -> None:
    app = Echo()
    client = Client([b"x" * 512, b"x" * 512])
    await BodySizeLimit(app, max_bytes=1024)(http_scope(headers=headers), client.receive, client.send)
    assert client.status == 200
    assert client.sent[1]["body"] == b"1024"


def in_flight_limit(app: Any, limit: int, registry: CollectorRegistry | None = None) -> InFlightLimit:
    registry = registry or CollectorRegistry()
    shed = Counter("shed", "test", ["route"], registry=registry)
    gauge = Gauge("in_flight", "test", ["route"], registry=registry)
    return InFlightLimit(app, limit=limit, paths={"/v1/recall"}, shed=shed, in_flight=gauge)


async def test_requests_beyond_the_in_flight_limit_are_503_at_once_and_counted() -> None:
    app = Echo()
    app.release.clear()
    registry = CollectorRegistry()
    limited = in_flight_limit(app, 2, registry)
    held = [Client([b"{}"]) for _ in range(2)]
    tasks = [asyncio.create_task(limited(http_scope(), c.receive, c.send)) for c in held]
    await asyncio.sleep(0.01)
    assert registry.get_sample_value("in_flight", {"route": "/v1/recall"}) == 2
    refused, probe = Client([b"{}"]), Client([b""])
    await asyncio.wait_for(limited(http_scope(), refused.receive, refused.send), 1)
    assert refused.status == 503
    assert refused.headers["retry-after"] == "1"
    assert refused.json()["error"] == "overloaded"
    assert registry.get_sample_value("shed_total", {"route": "/v1/recall"}) == 1
    probing = asyncio.create_task(limited(http_scope("/livez"), probe.receive, probe.send))
    await asyncio.sleep(0.01)
    assert app.calls == 3  # other paths are never refused: the probe reached the app
    app.release.set()
    await asyncio.gather(*tasks, probing)
    assert [c.status for c in [*held, probe]] == [200, 200, 200]
    after = Client([b"{}"])
    await limited(http_scope(), after.receive, after.send)
    assert after.status == 200  # the slots were given back
    assert registry.get_sample_value("in_flight", {"route": "/v1/recall"}) == 0


async def test_a_failing_request_gives_its_slot_back() -> None:
    async def broken(scope: Scope, receive: Receive, send: Send) -> None:
        raise RuntimeError("boom")

    limited = in_flight_limit(broken, 1)
    for _ in range(3):
        client = Client([b"{}"])
        with pytest.raises(RuntimeError):
            await limited(http_scope(), client.receive, client.send)
        assert client.sent == []  # not refused: the slot was free again


async def test_a_request_cancelled_at_shutdown_is_answered_503_shutting_down() -> None:
    app = Echo()
    app.release.clear()
    client = Client([b"{}"])
    task = asyncio.create_task(ShutdownCutoff(app)(http_scope(), client.receive, client.send))
    await asyncio.sleep(0.01)
    task.cancel()  # what uvicorn does when the shutdown grace time ends
    await task
    assert client.status == 503
    assert client.json()["error"] == "shutting_down"
    assert client.headers["retry-after"] == "1" and client.headers["connection"] == "close"


async def test_a_cancelled_request_that_started_answering_is_left_to_the_server() -> None:
    async def half(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await asyncio.sleep(3600)

    client = Client([b"{}"])
    task = asyncio.create_task(ShutdownCutoff(half)(http_scope(), client.receive, client.send))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert [m["type"] for m in client.sent] == ["http.response.start"]


async def test_the_app_enforces_max_body_bytes_and_answers_with_its_problem_body(tmp_path: Path) -> None:
    async with serving(tmp_path, FakeBundle(), max_body_bytes=1024) as client:
        small = await client.post("/v1/recall", json={"user_id": "u", "exclude_item_ids": ["i"] * 100})
        big = await client.post("/v1/recall", json={"user_id": "u", "exclude_item_ids": ["i"] * 300})
        metrics = (await client.get("/metrics")).text
    assert small.status_code == 200
    assert big.status_code == 413
    assert big.json()["error"] == "body_too_large"
    assert "nsp_requests_shed_total" in metrics


FRAMEWORK_ERRORS = {
    "unknown path": ("GET", "/v1/nothing", None, 404, "not_found"),
    "wrong method": ("DELETE", "/v1/recall", None, 405, "method_not_allowed"),
    "body not UTF-8": ("POST", "/v1/recall", b"\xff\xfe{", 400, "bad_request"),
}


@pytest.mark.parametrize("case", FRAMEWORK_ERRORS.values(), ids=FRAMEWORK_ERRORS.keys())
async def test_framework_errors_have_the_problem_body(tmp_path: Path, case: tuple[Any, ...]) -> None:
    method, path, body, status, code = case
    async with serving(tmp_path, FakeBundle()) as client:
        response = await client.request(
            method, path, content=body, headers={"content-type": "application/json"}
        )
    assert response.status_code == status
    assert response.json()["error"] == code and response.json()["detail"]


STRICT = {
    "k as a string": {"user_id": "u", "k": "5"},
    "k fractional": {"user_id": "u", "k": 2.5},
    "k a bool": {"user_id": "u", "k": True},
    "exclude_seen a string": {"user_id": "u", "exclude_seen": "no"},
    "user_id a number": {"user_id": 7},
}


@pytest.mark.parametrize("body", STRICT.values(), ids=STRICT.keys())
async def test_values_are_not_coerced(tmp_path: Path, body: dict[str, Any]) -> None:
    async with serving(tmp_path, FakeBundle()) as client:
        response = await client.post("/v1/recall", json=body)
    assert response.status_code == 422
    assert response.json()["error"] == "invalid_request"


async def test_an_integral_float_is_an_integer(tmp_path: Path) -> None:
    # JSON Schema (the OpenAPI document) counts 3.0 as an integer; so does the service.
    async with serving(tmp_path, FakeBundle()) as client:
        response = await client.post("/v1/recall", json={"user_id": "u", "k": 3.0})
    assert response.status_code == 200 and len(response.json()["items"]) == 3


async def test_event_times_past_2100_are_refused(tmp_path: Path) -> None:
    event = {"user_id": "u", "item_id": "i", "action": "click", "scene": "s", "request_id": "r"}
    async with serving(tmp_path, FakeBundle()) as client:
        last = await client.post("/v1/events", json={"events": [{**event, "ts": MAX_TS}]})
        after = await client.post("/v1/events", json={"events": [{**event, "ts": MAX_TS + 1}]})
        millis = await client.post("/v1/events", json={"events": [{**event, "ts": 1_767_225_600_000}]})
    assert last.status_code == 202
    assert after.status_code == 422 and millis.status_code == 422


def _bounded_string(spec: dict[str, Any]) -> bool:
    """A length limit, or one of listed values (an enum, or a const: a one-value Literal)."""
    return "maxLength" in spec or "enum" in spec or "const" in spec


def test_every_string_field_of_a_request_is_bounded(tmp_path: Path) -> None:
    schema = create_app(Settings(bundle_root=tmp_path, redis_url=None)).openapi()
    unbounded = []
    for name, model in schema["components"]["schemas"].items():
        for field, spec in model.get("properties", {}).items():
            for option in spec.get("anyOf", [spec]):
                if option.get("type") == "string" and not _bounded_string(option):
                    unbounded.append(f"{name}.{field}")
                items = option.get("items", {})
                if option.get("type") == "array" and (
                    "maxItems" not in option or (items.get("type") == "string" and not _bounded_string(items))
                ):
                    unbounded.append(f"{name}.{field}[]")
    requests = {"RecallRequest", "EventsRequest", "EventIn", "PinRequest"}
    assert [f for f in unbounded if f.split(".")[0] in requests] == []


async def test_unknown_exclude_ids_are_ignored(tmp_path: Path) -> None:
    async with serving(tmp_path, FakeBundle()) as client:
        response = await client.post(
            "/v1/recall", json={"user_id": "u", "k": 4, "exclude_item_ids": ["no-such-item", "x" * 128]}
        )
    assert response.status_code == 200 and len(response.json()["items"]) == 4


async def test_httpx_streams_without_content_length(tmp_path: Path) -> None:
    """The in-process client sends a generator body chunked, as the limit's chunked path expects."""

    async def body() -> Any:
        for _ in range(5):
            yield b" " * 300

    async with serving(tmp_path, FakeBundle(), max_body_bytes=1024) as client:
        response = await client.post(
            "/v1/recall", content=body(), headers={"content-type": "application/json"}
        )
    assert response.status_code == 413
