"""Shared fixtures: one tiny world, trained and published through the real CLI, per test run."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from cli_helpers import run_cli

TINY_WORLD = ["--users", "400", "--items", "1200", "--days", "14", "--seed", "7"]


@pytest.fixture(scope="session")
def redis_url() -> str:
    return os.environ.get("NSP_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("world")
    run_cli("synth", "--out", str(out), *TINY_WORLD, "--quiet")
    return out


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
