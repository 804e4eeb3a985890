"""Settings: read from the environment once, validated, and never leaking the Redis password."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from pydantic import ValidationError

from service.settings import Settings, to_environment


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "REDIS_URL",
        "NSP_REDIS_URL",
        "NSP_PORT",
        "NSP_BUNDLE_ROOT",
        "NSP_MAX_K",
        "NSP_DEFAULT_K",
        "NSP_ADMIN_TOKEN",
        "NSP_INSTANCE_NAME",
        "NSP_NEARLINE_ENABLED",
        "NSP_NEARLINE_K",
    ):
        monkeypatch.delenv(name, raising=False)


def test_defaults_run_without_redis() -> None:
    settings = Settings()
    assert settings.redis_url is None
    assert settings.bundle_root == Path("var/bundles")
    assert settings.default_k == 100 and settings.max_k == 1000
    assert settings.admin_token is None  # admin endpoints off unless a token is configured


def test_environment_uses_the_nsp_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NSP_PORT", "9100")
    monkeypatch.setenv("NSP_BUNDLE_ROOT", "/srv/bundles")
    settings = Settings()
    assert settings.port == 9100
    assert settings.bundle_root == Path("/srv/bundles")


def test_redis_url_comes_from_either_variable_nsp_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://plain:6379/0")
    plain = Settings().redis_url
    assert plain is not None and plain.get_secret_value() == "redis://plain:6379/0"
    monkeypatch.setenv("NSP_REDIS_URL", "redis://nsp:6379/0")
    nsp = Settings().redis_url
    assert nsp is not None and nsp.get_secret_value() == "redis://nsp:6379/0"


def test_the_redis_password_is_not_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NSP_REDIS_URL", "redis://:hunter2@redis:6379/0")
    settings = Settings()
    assert "hunter2" not in repr(settings) and "hunter2" not in str(settings.model_dump())
    with pytest.raises(ValidationError) as failure:
        Settings(port=-1)
    assert "hunter2" not in str(failure.value)


def test_the_admin_token_is_secret_and_long_enough(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NSP_ADMIN_TOKEN", "correct-horse-battery-staple")
    settings = Settings()
    assert settings.admin_token is not None
    assert settings.admin_token.get_secret_value() == "correct-horse-battery-staple"
    assert "battery" not in repr(settings)
    monkeypatch.setenv("NSP_ADMIN_TOKEN", "hunter2")
    with pytest.raises(ValidationError, match="at least 16 characters") as failure:
        Settings()
    assert "hunter2" not in str(failure.value)


def test_nearline_is_off_unless_enabled(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings()
    assert settings.nearline_enabled is False
    assert settings.nearline_k == 200 and settings.nearline_scene == "default"
    monkeypatch.setenv("NSP_NEARLINE_ENABLED", "1")
    monkeypatch.setenv("NSP_NEARLINE_K", "50")
    settings = Settings()
    assert settings.nearline_enabled is True and settings.nearline_k == 50
    # Its limits are checked only when it is on: lowering max_k alone stays valid.
    assert Settings(max_k=50, default_k=10, nearline_k=200, nearline_enabled=False).max_k == 50


def test_the_instance_name_defaults_to_host_and_pid(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().instance_name == f"{socket.gethostname()}-{os.getpid()}"
    monkeypatch.setenv("NSP_INSTANCE_NAME", "recall-7f9c-2")
    assert Settings().instance_name == "recall-7f9c-2"


@pytest.mark.parametrize(
    "overrides",
    [
        {"default_k": 200, "max_k": 100},
        {"max_k": 1001},
        {"store_max_events": 0},
        {"log_level": "loud"},
        {"instance_name": "../escape"},
        {"instance_name": ".hidden"},
        {"watch_interval_s": 3600},  # serving records would look dead to pruning between polls
        {"nearline_enabled": True, "nearline_k": 300, "max_k": 200},
        {"nearline_enabled": True, "nearline_concurrency": 3, "cpu_workers": 2},
        {"nearline_max_age_s": 0},
        {"nearline_max_pending": 0},
        {"nearline_scene": ""},
    ],
)
def test_inconsistent_settings_fail_at_start_up(overrides: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Settings(**overrides)


def test_several_workers_need_redis() -> None:
    with pytest.raises(ValidationError, match="workers > 1 needs redis_url"):
        Settings(workers=2)
    assert Settings(workers=2, redis_url="redis://localhost:6379/0").workers == 2


def test_worker_processes_read_back_the_settings_they_are_given(monkeypatch: pytest.MonkeyPatch) -> None:
    given = Settings(
        workers=3,
        redis_url="redis://:secret@localhost:6379/0",
        admin_token="a" * 20,
        bundle_root=Path("/srv/bundles"),
        pin_file=Path("/tmp/pin.json"),
        nearline_enabled=True,
        watch_interval_s=0.5,
        encoder_provider="cuda",
    )
    for name, value in to_environment(given).items():
        monkeypatch.setenv(name, value)
    assert Settings() == given
    assert "NSP_PIN_FILE" not in to_environment(given.model_copy(update={"pin_file": None}))
