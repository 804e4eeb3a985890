"""Service configuration: one ``Settings`` read from the environment (prefix ``NSP_``).

Build it once at start-up (``Settings()``) and pass it in; nothing reads the environment at
import time. Validation errors surface at start-up, before the service binds its port.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Literal, Self

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from index.bundle import SERVING_RECORD_MAX_AGE_S
from index.features import RECALL_SESSIONS

# Hard ceilings of the v1 API (design §3.2). Settings may lower them, never raise them.
API_MAX_K = 1000
API_MAX_EVENTS_PER_BATCH = 1000
API_MAX_EXCLUDE_IDS = 1000
# Events one recall reads (and groups into sessions) before the encoder's window trims them.
API_MAX_HISTORY_EVENTS = 10_000

LOG_LEVELS = ("critical", "error", "warning", "info", "debug")
MIN_ADMIN_TOKEN_CHARS = 16


def default_instance_name() -> str:
    """Host name (a Kubernetes pod's name) and process id: unique among live instances."""
    return f"{socket.gethostname()}-{os.getpid()}"


class Settings(BaseSettings):
    """Immutable after validation; safe to share between threads."""

    # hide_input_in_errors: a validation error must not echo the Redis URL (it may hold a password).
    model_config = SettingsConfigDict(
        env_prefix="NSP_", extra="ignore", frozen=True, validate_by_name=True, hide_input_in_errors=True
    )

    bundle_root: Path = Field(
        default=Path("var/bundles"), description="Directory of numbered bundle versions."
    )
    redis_url: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("NSP_REDIS_URL", "REDIS_URL", "redis_url"),
        description="Session store URL (redis://…); unset runs an in-memory store that is not persisted.",
    )
    store_key_prefix: str = Field(
        default="nsp", min_length=1, description="Prefix of every session-store key."
    )
    store_max_events: int = Field(
        default=500,
        gt=0,
        le=API_MAX_HISTORY_EVENTS,
        description="Most recent events kept per user (the oldest whole sessions go first); "
        "exclude_seen drops every item they met.",
    )
    history_sessions: int = Field(
        default=RECALL_SESSIONS,  # what offline evaluation reads too (index.features)
        gt=0,
        le=1000,
        description="Most recent sessions a recall reads (what the channels see); exclusions "
        "still cover every stored item.",
    )
    store_ttl_seconds: int = Field(
        default=30 * 86400, gt=0, description="A user's events expire this long after their last write."
    )
    store_timeout_s: float = Field(
        default=0.2,
        gt=0,
        description="Bound on one session-store call, connecting and its one reconnect included.",
    )
    store_breaker_failures: int = Field(
        default=3,
        ge=0,
        description="Consecutive store failures that open the circuit breaker (calls fail fast); 0 = off.",
    )
    store_breaker_reset_s: float = Field(
        default=2.0,
        gt=0,
        description="How long an open breaker fails fast before it lets one probe call through.",
    )
    redis_cluster: bool = Field(
        default=False,
        description="NSP_REDIS_URL names one node of a Redis Cluster (keys are hash-tagged by user).",
    )
    redis_tls_ca_file: Path | None = Field(
        default=None,
        description="CA file verifying the Redis server's certificate (rediss:// URLs); unset: system CAs.",
    )
    watch_interval_s: float = Field(
        default=5.0,
        gt=0,
        # Each poll refreshes the serving record; pruning ignores records older than this bound.
        le=SERVING_RECORD_MAX_AGE_S / 4,
        description="How often the bundle root is polled (and the serving record refreshed).",
    )
    workers: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Server processes of this instance, each holding its own bundle copy (>1 needs Redis).",
    )
    pin_file: Path | None = Field(
        default=None,
        description=(
            "Where an operator's pin is kept, so that every worker process follows it and a restarted"
            " one keeps it; unset: in memory with one worker, a temporary file with several."
        ),
    )
    encoder_provider: Literal["cpu", "cuda"] = Field(
        default="cpu",
        description="ONNX Runtime execution provider; cuda falls back to cpu (logged) when unavailable.",
    )
    encoder_threads: int = Field(
        default=1, ge=1, description="ONNX Runtime intra-op threads per encoder call."
    )
    cpu_workers: int = Field(
        default=2, ge=1, description="Threads of the pool that runs encode + ANN search."
    )
    ann_threads: int = Field(default=1, ge=1, description="hnswlib threads per query batch.")
    sid_max_beam: int = Field(
        default=100,
        ge=1,
        le=1000,
        description="Largest beam the sid channel searches (it picks one from the bundle's ladder by depth).",
    )
    gram_max_beam: int = Field(
        default=10,
        ge=1,
        le=100,
        description="Largest beam the gram channel searches (the bundle's beam, at most this).",
    )
    gram_max_codes: int = Field(
        default=10,
        ge=1,
        le=100,
        description="Most text codes the gram channel looks up per request (the bundle's, at most this).",
    )
    encode_batch_max: int = Field(
        default=1,  # off: on the CPU it did not measure better (docs/architecture.md)
        ge=1,
        le=256,
        description="Micro-batching: most concurrent requests sharing one encoder run (1 = off).",
    )
    default_k: int = Field(default=100, ge=1, description="Items returned when a recall request gives no k.")
    exclude_seen: bool = Field(
        default=True,
        description="Default of a recall request's exclude_seen: drop the user's own items (fashion) or "
        "keep them for the repeat-purchase channel (grocery: false). A request still overrides it.",
    )
    channel_timeout_s: float = Field(
        default=0.25,
        gt=0,
        le=10,
        description="Deadline of one channel within a recall; a channel past it is left out of the "
        "merge, counted and named in missing_channels.",
    )
    max_k: int = Field(
        default=API_MAX_K, ge=1, le=API_MAX_K, description="Largest k a recall request may ask for."
    )
    max_events_per_batch: int = Field(
        default=API_MAX_EVENTS_PER_BATCH,
        ge=1,
        le=API_MAX_EVENTS_PER_BATCH,
        description="Largest /v1/events batch.",
    )
    max_exclude_ids: int = Field(
        default=API_MAX_EXCLUDE_IDS,
        ge=0,
        le=API_MAX_EXCLUDE_IDS,
        description="Most exclude_item_ids per request.",
    )
    max_body_bytes: int = Field(
        default=1024 * 1024,
        ge=1024,
        le=64 * 1024 * 1024,
        # A full events batch with every ASCII id at its longest is ~0.55 MiB.
        description="Largest request body in bytes (declared or, when chunked, counted); larger: 413.",
    )
    max_in_flight: int = Field(
        default=64,
        ge=1,
        # 64 recalls queued on a 2-thread CPU pool wait ~0.1 s; beyond that a retry elsewhere is faster.
        description="Recall requests running at once per server process; more are answered 503 at once.",
    )
    shutdown_grace_s: int = Field(
        default=20,
        ge=1,
        # Below Kubernetes' default terminationGracePeriodSeconds (30), leaving time for the lifespan.
        description="On SIGTERM, how long in-flight requests may take to finish before they are cancelled.",
    )
    # Nearline mode (docs/architecture.md#nearline): an event ingest recomputes the user's top-K
    # in the background; recalls that the cached list can answer exactly are served from it.
    nearline_enabled: bool = Field(
        default=False, description="Recompute top-K after ingest and serve eligible recalls from it."
    )
    nearline_k: int = Field(
        default=200,
        ge=1,
        le=API_MAX_K,
        # Larger than the usual k so that a request's exclude_item_ids still leave k items.
        description="Items cached per user (at most max_k); recalls asking for more are computed.",
    )
    nearline_max_age_s: float = Field(
        default=600.0,
        gt=0,
        # The cached list was computed with the context (hour, weekday) of its computation time.
        description="A cached top-K older than this is not served (also its Redis TTL).",
    )
    nearline_scene: str = Field(
        default="default",
        min_length=1,
        max_length=64,
        description="Scene the recompute uses; only recalls for this scene are served from the cache.",
    )
    nearline_max_pending: int = Field(
        default=1000, ge=1, description="Users waiting for a recompute; ingests beyond it are not queued."
    )
    nearline_concurrency: int = Field(
        default=1,
        ge=1,
        description="Recomputes running at once, each on a CPU-pool thread (at most cpu_workers).",
    )
    admin_token: SecretStr | None = Field(
        default=None,
        description="Bearer token for /v1/admin/*; unset disables the admin endpoints (403).",
    )
    console_enabled: bool = Field(
        default=False,
        description="Serve the read-only retrieval console at /ui (docs/console.md); its admin buttons "
        "still need admin_token.",
    )
    instance_name: str = Field(
        default_factory=default_instance_name,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$",
        description="Names this instance's serving record, <bundle_root>/.serving/<instance_name>.json.",
    )
    host: str = Field(default="127.0.0.1", description="Interface the HTTP server binds.")
    port: int = Field(default=8000, ge=0, le=65535, description="Port the HTTP server binds.")
    log_level: str = Field(default="info", description="One of critical, error, warning, info, debug.")

    @model_validator(mode="after")
    def _check_redis_options(self) -> Self:
        if self.redis_url is None and (self.redis_cluster or self.redis_tls_ca_file is not None):
            raise ValueError("redis_cluster and redis_tls_ca_file need redis_url")
        if self.redis_tls_ca_file is not None and not self.redis_url_is_tls:
            raise ValueError("redis_tls_ca_file needs a rediss:// redis_url (TLS)")
        return self

    @property
    def redis_url_is_tls(self) -> bool:
        return self.redis_url is not None and self.redis_url.get_secret_value().startswith("rediss://")

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.default_k > self.max_k:
            raise ValueError(f"default_k ({self.default_k}) exceeds max_k ({self.max_k})")
        if self.workers > 1 and self.redis_url is None:
            raise ValueError("workers > 1 needs redis_url: the in-memory session store is one per process")
        if not self.nearline_enabled:  # a deployment lowering max_k need not touch nearline_k
            return self
        if self.nearline_k > self.max_k:
            raise ValueError(f"nearline_k ({self.nearline_k}) exceeds max_k ({self.max_k})")
        # More recomputes at once than pool threads would only queue ahead of requests.
        if self.nearline_concurrency > self.cpu_workers:
            raise ValueError(
                f"nearline_concurrency ({self.nearline_concurrency}) exceeds cpu_workers ({self.cpu_workers})"
            )
        return self

    @field_validator("admin_token")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < MIN_ADMIN_TOKEN_CHARS:
            raise ValueError(f"admin_token must have at least {MIN_ADMIN_TOKEN_CHARS} characters")
        return value

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        if value.lower() not in LOG_LEVELS:
            raise ValueError(f"log_level must be one of {', '.join(LOG_LEVELS)}")
        return value.lower()


def to_environment(settings: Settings) -> dict[str, str]:
    """``settings`` as the ``NSP_*`` variables that make ``Settings()`` read it back (for worker
    processes, which build their settings from the environment). Unset fields are left out."""
    env = {}
    for name in Settings.model_fields:
        value = getattr(settings, name)
        if value is None:
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        env[f"NSP_{name.upper()}"] = str(value).lower() if isinstance(value, bool) else str(value)
    return env
