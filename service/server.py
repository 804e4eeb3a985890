"""Running the service: uvicorn, programmatically, on ``settings.host``/``settings.port``.

One process serves one app with one bundle in memory. ``settings.workers`` > 1 runs that many
processes behind one listening socket (uvicorn's supervisor restarts one that dies): each
loads its own bundle, so a pod's memory grows with the worker count, but one Python process
is bound to about one core by the GIL, and this is how a pod uses more than one. The
processes share the session store (Redis), the metrics (aggregated through
``PROMETHEUS_MULTIPROC_DIR``) and an operator's pin (``settings.pin_file``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
from pathlib import Path

import uvicorn
from fastapi import FastAPI
from uvicorn.supervisors import Multiprocess

from service.app import create_app
from service.metrics import MULTIPROCESS_DIR_ENV
from service.seed import SeedError, seed_store
from service.settings import Settings, to_environment
from service.store import StoreUnavailable, store_from_settings

log = logging.getLogger(__name__)

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
WORKER_APP = "service.server:worker_app"  # built in each worker process from the environment
STARTUP_FAILED = 3


def serve(settings: Settings, seed_events: Path | None = None, seed_users: int | None = None) -> None:
    """Serve until interrupted (SIGINT/SIGTERM shut down cleanly).

    ``seed_events``: an event-log CSV (``user_id,item_id,ts,action,scene,request_id``, may be
    gzipped) appended to the session store before serving; only the first ``seed_users``
    distinct users if given. Raises ``SystemExit(3)`` if start-up fails (bad seed file,
    store down while seeding, port in use).
    """
    logging.basicConfig(level=settings.log_level.upper(), format=LOG_FORMAT)
    if settings.workers > 1:
        _serve_workers(settings, seed_events, seed_users)
        return
    app = create_app(settings, seed_events=seed_events, seed_users=seed_users)
    server = uvicorn.Server(_config(settings, app))
    server.run()
    if not server.started:
        log.error("nsp-recall did not start")
        raise SystemExit(STARTUP_FAILED)


def worker_app() -> FastAPI:
    """The app of one worker process, configured by the environment its supervisor set."""
    settings = Settings()
    logging.basicConfig(level=settings.log_level.upper(), format=LOG_FORMAT)
    # Every process keeps its own serving record: its own instance name.
    named = settings.model_copy(update={"instance_name": f"{settings.instance_name}-{os.getpid()}"})
    return create_app(named)


def _serve_workers(settings: Settings, seed_events: Path | None, seed_users: int | None) -> None:
    with tempfile.TemporaryDirectory(prefix="nsp-recall-") as scratch:
        if seed_events is not None:  # once, here, not once per worker
            try:
                asyncio.run(_seed(settings, seed_events, seed_users))
            except (SeedError, StoreUnavailable, OSError) as exc:
                log.error("nsp-recall did not start: seeding from %s failed: %s", seed_events, exc)
                raise SystemExit(STARTUP_FAILED) from exc
        metrics_dir = Path(scratch) / "metrics"
        metrics_dir.mkdir()
        pin_file = settings.pin_file or Path(scratch) / "pin.json"
        os.environ.update(to_environment(settings.model_copy(update={"pin_file": pin_file})))
        os.environ[MULTIPROCESS_DIR_ENV] = str(metrics_dir)
        log.info("starting %d worker processes (pin file %s)", settings.workers, pin_file)
        config = _config(settings, WORKER_APP, workers=settings.workers)
        try:
            sockets = [config.bind_socket()]
        except SystemExit as exc:  # uvicorn logs why (port in use) and exits
            log.error("nsp-recall did not start")
            raise SystemExit(STARTUP_FAILED) from exc
        Multiprocess(config, sockets=sockets).run()


async def _seed(settings: Settings, seed_events: Path, seed_users: int | None) -> None:
    store = store_from_settings(settings)
    try:
        await seed_store(store, seed_events, seed_users)
    finally:
        await store.close()


def _config(settings: Settings, app: FastAPI | str, workers: int = 1) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        factory=isinstance(app, str),
        workers=workers,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        lifespan="on",
        access_log=settings.log_level == "debug",  # per-request lines are metrics' job otherwise
        # On SIGTERM: stop accepting, let in-flight requests finish for this long, then cancel them.
        timeout_graceful_shutdown=settings.shutdown_grace_s,
    )
