"""The HTTP app: factory, lifespan and thin routes over the pipeline, store and registry.

``create_app`` wires everything but starts nothing; the lifespan (run by uvicorn or by a test
client) builds the session store and the CPU pool, loads the newest bundle, optionally seeds
the store, and starts the bundle watcher (and, in nearline mode, the recompute workers) — and
undoes all of it on shutdown. The service is live as soon as it accepts connections and ready
once a bundle is loaded.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, FastAPI, Query
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import admin, console, items
from service.batching import EncodeBatcher
from service.dependencies import BundleDep, Services, ServicesDep
from service.errors import LimitExceeded, install_error_handlers
from service.limits import BodySizeLimit, InFlightLimit, ShutdownCutoff
from service.metrics import SHED_ROUTES, Metrics, forget_this_process
from service.nearline import Nearline, NearlineConfig
from service.pin_file import PinFile
from service.recall import RecallPipeline, RecallQuery, standard_channels
from service.registry import BundleRegistry, BundleWatcher
from service.runtime import LoadedBundle
from service.schemas import (
    BundleSummary,
    EventsAccepted,
    EventsRequest,
    Include,
    Problem,
    RecallRequest,
    RecallResponse,
    ServingState,
    SessionsResponse,
)
from service.seed import seed_store
from service.serving_record import ServingRecord
from service.settings import Settings
from service.store import SessionStore, StoreUnavailable, store_from_settings
from service.topk_cache import TopKCache, topk_cache_from_settings

log = logging.getLogger(__name__)


# 400: a body that is not text (not UTF-8); 413: over max_body_bytes (service.limits).
router = APIRouter(responses={code: {"model": Problem} for code in (400, 413, 422, 503)})


@router.post("/v1/recall")
async def recall(body: RecallRequest, services: ServicesDep, bundle: BundleDep) -> RecallResponse:
    settings = services.settings
    k = body.k if body.k is not None else settings.default_k
    if k > settings.max_k:
        raise LimitExceeded(f"k={k} exceeds this service's max_k={settings.max_k}")
    if len(body.exclude_item_ids) > settings.max_exclude_ids:
        raise LimitExceeded(
            f"{len(body.exclude_item_ids)} exclude_item_ids exceed max_exclude_ids={settings.max_exclude_ids}"
        )
    exclude_seen = body.exclude_seen if body.exclude_seen is not None else settings.exclude_seen
    query = RecallQuery.of(body, k, exclude_seen)
    answer = None
    if services.nearline is not None:
        answer = await services.nearline.cached(bundle, query)
    if answer is None:
        answer = await services.pipeline.recall(bundle, query)
    return items.recall_with_meta(answer, bundle) if "meta" in body.include else answer


@router.post("/v1/events", status_code=202)
async def events(body: EventsRequest, services: ServicesDep) -> EventsAccepted:
    limit = services.settings.max_events_per_batch
    if len(body.events) > limit:
        raise LimitExceeded(f"{len(body.events)} events exceed max_events_per_batch={limit}")
    try:
        accepted = await services.store.append([event.to_event() for event in body.events])
    except StoreUnavailable:
        services.metrics.store_errors.labels(operation="append").inc()
        raise
    services.metrics.events_ingested.inc(accepted)
    if services.nearline is not None:  # invalidates the users' cached lists; recomputes are not awaited
        await services.nearline.events_stored(event.user_id for event in body.events)
    return EventsAccepted(accepted=accepted)


@router.get("/v1/users/{user_id}/sessions")
async def user_sessions(
    user_id: Annotated[str, PathParam(min_length=1, max_length=128)],
    services: ServicesDep,
    limit: Annotated[int, Query(ge=1, le=100, description="Most recent sessions to return.")] = 20,
    include: Annotated[
        list[Include], Query(max_length=4, description="meta: each item's metadata from the served bundle.")
    ] = [],  # noqa: B006 (FastAPI copies defaults)
) -> SessionsResponse:
    sessions = await services.pipeline.sessions(user_id, limit)
    bundle = services.registry.current()  # no bundle yet: sessions without metadata
    if "meta" in include and bundle is not None:
        sessions = items.sessions_with_meta(sessions, bundle)
    return SessionsResponse(user_id=user_id, sessions=sessions)


@router.get("/v1/bundle")
async def bundle_summary(bundle: BundleDep, services: ServicesDep) -> BundleSummary:
    m = bundle.manifest
    return BundleSummary(
        version=m.version,
        pinned=services.registry.pinned and services.registry.current() is bundle,
        parent_version=m.parent_version,
        created_at=m.created_at,
        training=m.training.model_dump(),
        item_count=m.item_count,
        embedding_dim=m.embedding_dim,
        hnsw=m.hnsw.model_dump(),
        metrics=m.metrics,
        channels=m.channels.model_dump() if m.channels is not None else None,
        text=m.text.model_dump() if m.text is not None else None,
        query_pieces=m.encoder.query_pieces,
    )


@router.get("/v1/bundles")
async def serving_state(services: ServicesDep) -> ServingState:
    """What this instance serves, the versions on disk and its recent swaps: the serving state
    of ``GET /v1/admin/bundle``, read-only and without the token."""
    return await admin.report(services)


@router.get("/livez")
async def livez() -> dict[str, str]:
    return {"status": "alive"}


@router.get("/readyz", response_model=None)
async def readyz(services: ServicesDep) -> dict[str, object] | JSONResponse:
    bundle = services.registry.current()
    if bundle is None:
        reason = f"no bundle loaded yet from {services.registry.root}"
        return JSONResponse({"status": "not ready", "reason": reason}, status_code=503)
    return {"status": "ready", "bundle_version": bundle.version}


@router.get("/metrics", include_in_schema=False)
async def metrics(services: ServicesDep) -> Response:
    return Response(services.metrics.render(), media_type=Metrics.content_type)


class RequestMetricsMiddleware:
    """Times every HTTP request by route template (``unmatched`` for 404s) and status class."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self._app = app
        self._metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self._app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            outcome = f"{status // 100}xx"
            self._metrics.request_seconds.labels(route=route, outcome=outcome).observe(
                time.perf_counter() - start
            )


def create_app(
    settings: Settings,
    store: SessionStore | None = None,
    registry: BundleRegistry | None = None,
    *,
    topk_cache: TopKCache | None = None,
    seed_events: Path | None = None,
    seed_users: int | None = None,
) -> FastAPI:
    """The recall service as an ASGI app; nothing starts until its lifespan runs.

    ``store``: used as given and left open on shutdown (the caller owns it); when None the
    lifespan builds one from ``settings`` (Redis if ``redis_url`` is set) and closes it.
    ``registry``: when None, one over ``settings.bundle_root`` loading ``LoadedBundle``s and
    keeping this instance's serving record; the app exports the registry's ``metrics``.
    ``topk_cache``: the nearline cache when ``settings.nearline_enabled``, used as given and left
    open (the caller owns it); when None the lifespan builds one (the session store's Redis, or
    in memory) and closes it.
    ``seed_events``: an event-log CSV appended to the store at start-up (first ``seed_users``
    distinct users only, if given).
    """
    if registry is None:
        loader = functools.partial(
            LoadedBundle.load,
            encoder_threads=settings.encoder_threads,
            ann_threads=settings.ann_threads,
            provider=settings.encoder_provider,
        )
        record = ServingRecord(settings.bundle_root, settings.instance_name)
        pins = PinFile(settings.pin_file) if settings.pin_file is not None else None
        registry = BundleRegistry(settings.bundle_root, loader, record=record, pin_file=pins)
    bundles = registry
    metrics = bundles.metrics

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        session_store = store if store is not None else store_from_settings(settings, metrics)
        executor = ThreadPoolExecutor(settings.cpu_workers, thread_name_prefix="nsp-cpu")
        watcher = BundleWatcher(bundles, settings.watch_interval_s)
        nearline: Nearline | None = None
        cache: TopKCache | None = None
        batcher: EncodeBatcher | None = None
        try:
            await bundles.refresh(trigger="start")
            if bundles.current() is None:
                log.warning("no loadable bundle under %s yet; not ready until one is published", bundles.root)
            if seed_events is not None:
                await seed_store(session_store, seed_events, seed_users)
            if settings.encode_batch_max > 1:
                batcher = EncodeBatcher(
                    executor, metrics, max_batch=settings.encode_batch_max, workers=settings.cpu_workers
                )
                batcher.start()
            pipeline = RecallPipeline(
                session_store,
                standard_channels(
                    executor,
                    metrics,
                    batcher,
                    settings.sid_max_beam,
                    settings.gram_max_beam,
                    settings.gram_max_codes,
                ),
                metrics,
                history_sessions=settings.history_sessions,
                channel_timeout_s=settings.channel_timeout_s,
            )
            if settings.nearline_enabled:
                cache = topk_cache if topk_cache is not None else topk_cache_from_settings(settings, metrics)
                nearline = Nearline(
                    pipeline, bundles.current, cache, metrics, NearlineConfig.from_settings(settings)
                )
                nearline.start()
            app.state.services = Services(settings, session_store, bundles, pipeline, metrics, nearline)
            watcher.start()
            yield
        finally:
            await watcher.stop()
            if nearline is not None:
                await nearline.stop()
            if batcher is not None:
                await batcher.stop()
            if cache is not None and topk_cache is None:
                await cache.close()
            await bundles.close()
            executor.shutdown(wait=True, cancel_futures=True)
            if store is None:
                await session_store.close()
            forget_this_process()

    app = FastAPI(title="nsp-recall", version="1", lifespan=lifespan)
    app.include_router(router)
    app.include_router(items.router)
    app.include_router(admin.router)
    if settings.console_enabled:
        app.include_router(console.router)
    # The last added runs first: shedding costs nothing, and a refused body is still timed.
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestMetricsMiddleware, metrics=metrics)
    app.add_middleware(
        InFlightLimit,
        limit=settings.max_in_flight,
        paths=SHED_ROUTES,
        shed=metrics.requests_shed,
        in_flight=metrics.requests_in_flight,
    )
    app.add_middleware(ShutdownCutoff)
    install_error_handlers(app)
    return app
