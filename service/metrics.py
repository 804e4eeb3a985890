"""Every Prometheus metric the service exports (design §3.4), in one place.

``Metrics`` owns its own ``CollectorRegistry``, so several apps can live in one process (tests
build many). Labels are fixed and low-cardinality: routes are path templates, outcomes are
status classes, stages and reasons are enums — never user or item ids. Durations are in
seconds (the Prometheus convention) with buckets resolving sub-millisecond to seconds.

prometheus_client metrics are thread-safe; observe from any thread.

With several server processes (``workers`` > 1) the server sets ``PROMETHEUS_MULTIPROC_DIR``
before the workers start: every process writes its values there and ``render`` aggregates all
of them, so a scrape reaching any process sees the whole instance. Counters and histograms are
summed; the bundle gauges keep one series per live process (a ``pid`` label).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from service.channels import CHANNEL_NAMES

Stage = Literal[
    "cache_fetch", "session_fetch", "tokens", "encode", "ann", "sid_generate", "sid_lookup", "gram_generate",
    "gram_lookup", "merge", "postprocess",
]  # fmt: skip
FallbackReason = Literal["no_history", "store_unavailable", "channels_failed"]
FALLBACK_REASONS: tuple[FallbackReason, ...] = ("no_history", "store_unavailable", "channels_failed")
AdminAction = Literal["reload", "rollback", "pin", "unpin"]
# Why a recall was not served from the nearline cache (nothing is counted while nearline is off).
CacheMiss = Literal[
    "ineligible", "scene", "absent", "unreadable", "unavailable", "stale_version", "stale_age", "insufficient"
]
# What became of one user's recompute request.
RecomputeOutcome = Literal["done", "dropped", "superseded", "no_history", "failed"]
CacheOperation = Literal["get", "put", "invalidate"]
CACHE_MISSES: tuple[CacheMiss, ...] = (
    "ineligible", "scene", "absent", "unreadable", "unavailable",
    "stale_version", "stale_age", "insufficient",
)  # fmt: skip
RECOMPUTE_OUTCOMES: tuple[RecomputeOutcome, ...] = ("done", "dropped", "superseded", "no_history", "failed")
CACHE_OPERATIONS: tuple[CacheOperation, ...] = ("get", "put", "invalidate")
STAGES: tuple[Stage, ...] = (
    "cache_fetch", "session_fetch", "tokens", "encode", "ann", "sid_generate", "sid_lookup", "gram_generate",
    "gram_lookup", "merge", "postprocess",
)  # fmt: skip
# Why a channel was left out of a recall's merge.
ChannelFailure = Literal["error", "timeout"]
CHANNEL_FAILURES: tuple[ChannelFailure, ...] = ("error", "timeout")
ADMIN_ACTIONS: tuple[AdminAction, ...] = ("reload", "rollback", "pin", "unpin")
# The Redis clients with a circuit breaker each (service.redis_client).
BreakerClient = Literal["session_store", "topk_cache"]
BREAKER_CLIENTS: tuple[BreakerClient, ...] = ("session_store", "topk_cache")
MULTIPROCESS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Routes whose requests the in-flight limit may refuse (service.limits); never probes or metrics.
SHED_ROUTES = ("/v1/recall",)
# prometheus_client.multiprocess has no annotations; these are its signatures.
_collect_processes: Callable[[CollectorRegistry], object] = multiprocess.MultiProcessCollector
_mark_process_dead: Callable[[int], None] = multiprocess.mark_process_dead
LATENCY_BUCKETS = (
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
)  # fmt: skip


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.request_seconds = Histogram(
            "nsp_request_duration_seconds",
            "HTTP request latency by route template and outcome (2xx/4xx/5xx).",
            ["route", "outcome"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.stage_seconds = Histogram(
            "nsp_recall_stage_duration_seconds",
            "Latency of one recall pipeline stage.",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.channel_seconds = Histogram(
            "nsp_channel_duration_seconds",
            "Latency of one channel within a recall (the channels run concurrently).",
            ["channel"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.channel_items = Counter(
            "nsp_channel_items",
            "Items of recall answers that each channel proposed (an item two channels proposed "
            "counts for both).",
            ["channel"],
            registry=r,
        )
        self.channel_failures = Counter(
            "nsp_channel_failures",
            "Recalls answered without a channel because it raised (error) or missed its deadline (timeout).",
            ["channel", "reason"],
            registry=r,
        )
        self.requests_shed = Counter(
            "nsp_requests_shed",
            "Requests answered 503 overloaded at once because max_in_flight were running, by route.",
            ["route"],
            registry=r,
        )
        self.requests_in_flight = Gauge(
            "nsp_requests_in_flight",
            "Requests running now on the routes max_in_flight limits, by route.",
            ["route"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.encode_batch_size = Histogram(
            "nsp_encode_batch_size",
            "Requests per encoder run when micro-batching is on.",
            buckets=(1, 2, 4, 8, 16, 32, 64),
            registry=r,
        )
        self.bundle_version = Gauge(
            "nsp_bundle_version",
            "Version of the bundle being served (0 = none loaded).",
            registry=r,
            multiprocess_mode="liveall",
        )
        self.bundle_loaded_at = Gauge(
            "nsp_bundle_loaded_timestamp_seconds",
            "Unix time the served bundle was swapped in.",
            registry=r,
            multiprocess_mode="liveall",
        )
        self.bundle_swaps = Counter("nsp_bundle_swaps", "Bundles swapped in.", registry=r)
        self.bundle_load_failures = Counter(
            "nsp_bundle_load_failures", "Bundle versions that failed to load or validate.", registry=r
        )
        self.bundle_pinned = Gauge(
            "nsp_bundle_pinned",
            "1 while an operator pins the served version, else 0.",
            registry=r,
            multiprocess_mode="liveall",
        )
        self.serving_record_failures = Counter(
            "nsp_serving_record_write_failures",
            "Writes of this instance's serving record (read by bundle pruning) that failed.",
            registry=r,
        )
        self.admin_actions = Counter(
            "nsp_admin_actions",
            "Admin actions by action and outcome (ok, failed).",
            ["action", "outcome"],
            registry=r,
        )
        self.store_errors = Counter(
            "nsp_session_store_errors", "Session-store calls that failed.", ["operation"], registry=r
        )
        self.store_breaker_open = Gauge(
            "nsp_store_breaker_open",
            "1 while the Redis circuit breaker of this client fails calls fast (open or half-open).",
            ["client"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.store_breaker_rejected = Counter(
            "nsp_store_breaker_rejected",
            "Redis calls failed fast by an open circuit breaker, without a network call.",
            ["client"],
            registry=r,
        )
        self.fallbacks = Counter(
            "nsp_recall_fallbacks",
            "Recall answered from popularity instead of the model.",
            ["reason"],
            registry=r,
        )
        self.degraded = Counter(
            "nsp_recall_degraded", "Recall answered degraded because the session store failed.", registry=r
        )
        self.events_ingested = Counter(
            "nsp_events_ingested", "Events acknowledged by the session store.", registry=r
        )
        self.cache_hits = Counter(
            "nsp_nearline_cache_hits", "Recalls served from the nearline top-K cache.", registry=r
        )
        self.cache_misses = Counter(
            "nsp_nearline_cache_misses",
            "Recalls the nearline cache could not answer (then computed), by reason.",
            ["reason"],
            registry=r,
        )
        self.cache_errors = Counter(
            "nsp_nearline_cache_errors",
            "Nearline cache calls that failed (Redis down or timing out), by operation.",
            ["operation"],
            registry=r,
        )
        self.recomputes = Counter(
            "nsp_nearline_recomputes",
            "Nearline recompute requests by outcome (done, dropped when the queue was full, superseded "
            "by newer events, no_history, failed).",
            ["outcome"],
            registry=r,
        )
        self.recompute_seconds = Histogram(
            "nsp_nearline_recompute_duration_seconds",
            "One nearline recompute: history fetch, encode, ANN search and cache write.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.recomputes_pending = Gauge(
            "nsp_nearline_recomputes_pending",
            "Users waiting for a nearline recompute.",
            registry=r,
            multiprocess_mode="livesum",
        )
        for stage in STAGES:
            self.stage_seconds.labels(stage=stage)  # export every stage from the first scrape
        for channel in CHANNEL_NAMES:
            self.channel_seconds.labels(channel=channel)
            self.channel_items.labels(channel=channel)
            for failure in CHANNEL_FAILURES:
                self.channel_failures.labels(channel=channel, reason=failure)
        for route in SHED_ROUTES:
            self.requests_shed.labels(route=route)
            self.requests_in_flight.labels(route=route)
        for fallback_reason in FALLBACK_REASONS:
            self.fallbacks.labels(reason=fallback_reason)
        for operation in ("append", "recent"):
            self.store_errors.labels(operation=operation)
        for client in BREAKER_CLIENTS:
            self.store_breaker_open.labels(client=client)
            self.store_breaker_rejected.labels(client=client)
        for reason in CACHE_MISSES:
            self.cache_misses.labels(reason=reason)
        for operation in CACHE_OPERATIONS:
            self.cache_errors.labels(operation=operation)
        for recompute_outcome in RECOMPUTE_OUTCOMES:
            self.recomputes.labels(outcome=recompute_outcome)
        for action in ADMIN_ACTIONS:
            for outcome in ("ok", "failed"):
                self.admin_actions.labels(action=action, outcome=outcome)

    @contextmanager
    def stage(self, stage: Stage) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.stage_seconds.labels(stage=stage).observe(time.perf_counter() - start)

    def bundle_swapped(self, version: int) -> None:
        self.bundle_swaps.inc()
        self.bundle_version.set(version)
        self.bundle_loaded_at.set(time.time())

    def render(self) -> bytes:
        """The exposition text: this process's metrics, or every process's in multiprocess mode."""
        if os.environ.get(MULTIPROCESS_DIR_ENV):
            aggregate = CollectorRegistry()
            _collect_processes(aggregate)
            return generate_latest(aggregate)
        return generate_latest(self.registry)


def forget_this_process() -> None:
    """In multiprocess mode, drop this process's live gauges (call when it stops serving)."""
    if os.environ.get(MULTIPROCESS_DIR_ENV):
        _mark_process_dead(os.getpid())
