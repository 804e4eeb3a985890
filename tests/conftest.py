"""Shared fixtures: one tiny world, trained and published through the real CLI, per test run;
a Redis admin client and a fresh key prefix for tests against a real Redis."""

from __future__ import annotations

import json
import os
import socket
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from cli_helpers import run_cli

from service.redis_client import redact_url

TINY_WORLD = ["--users", "400", "--items", "1200", "--days", "14", "--seed", "7"]


@pytest.fixture(scope="session")
def redis_url() -> str:
    return os.environ.get("NSP_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture
async def admin(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """A client of the test Redis; skips the test when there is none. Needs ``anyio_backend``."""
    client = aioredis.Redis.from_url(redis_url, socket_timeout=1, socket_connect_timeout=1)
    try:
        await client.ping()
    except Exception as exc:
        await client.aclose()
        pytest.skip(f"no Redis at {redact_url(redis_url)}: {exc}")
    yield client
    await client.aclose()


@pytest.fixture
async def prefix(admin: aioredis.Redis) -> AsyncIterator[str]:
    """A key prefix no other test uses; its keys are deleted afterwards."""
    prefix = f"nsptest-{uuid.uuid4().hex}"
    yield prefix
    keys = [key async for key in admin.scan_iter(match=f"{prefix}:*")]
    if keys:
        await admin.delete(*keys)


@pytest.fixture
def closed_port() -> int:
    """A local port nothing listens on: a Redis that is down."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("world")
    run_cli("synth", "--out", str(out), *TINY_WORLD, "--quiet")
    return out


@pytest.fixture(scope="session")
def search_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny world with search sessions (``synth --search``): queries, titled attributes."""
    out = tmp_path_factory.mktemp("search-world")
    run_cli("synth", "--out", str(out), *TINY_WORLD, "--search", "--quiet")
    return out


@pytest.fixture(scope="session")
def search_trained(search_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run trained on the search world: text channels, the query-reading encoder and the
    search merge."""
    run = tmp_path_factory.mktemp("search-run")
    # A few EG-GRPO and DPO steps: enough to run the alignment paths, not to move the tiny models.
    run_cli(
        "train", "--data", str(search_world), "--out", str(run), "--epochs", "2", "--sid-grpo-steps", "5",
        "--gram-dpo-steps", "5", "--gram-epochs", "1", "--quiet",
    )  # fmt: skip
    return run


@pytest.fixture(scope="session")
def search_bundle_root(search_trained: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle root holding version 1 published from ``search_trained``."""
    root = tmp_path_factory.mktemp("search-bundles")
    run_cli("publish", "--run", str(search_trained), "--bundles", str(root))
    return root


@pytest.fixture(scope="session")
def trained(world: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """(run directory, what `nsprecall train` printed)."""
    run = tmp_path_factory.mktemp("run")
    stdout = run_cli("train", "--data", str(world), "--out", str(run), "--epochs", "3", "--quiet")
    return run, stdout


@pytest.fixture(scope="session")
def bundle_root(trained: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle root holding version 1, published from the tiny run."""
    root = tmp_path_factory.mktemp("bundles")
    out = run_cli("publish", "--run", str(trained[0]), "--bundles", str(root))
    assert json.loads(out)["published"].endswith("/1")
    return root
