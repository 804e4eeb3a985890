"""Running the service: uvicorn, programmatically, on ``settings.host``/``settings.port``.

One process serves one app (one bundle in memory); scale with replicas, not uvicorn workers.
"""

from __future__ import annotations

import logging
from pathlib import Path

import uvicorn

from service.app import create_app
from service.settings import Settings

log = logging.getLogger(__name__)

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def serve(settings: Settings, seed_events: Path | None = None, seed_users: int | None = None) -> None:
    """Serve until interrupted (SIGINT/SIGTERM shut down cleanly).

    ``seed_events``: an event-log CSV (``user_id,item_id,ts,action,scene,request_id``, may be
    gzipped) appended to the session store before serving; only the first ``seed_users``
    distinct users if given. Raises ``SystemExit(3)`` if start-up fails (bad seed file,
    store down while seeding, port in use).
    """
    logging.basicConfig(level=settings.log_level.upper(), format=LOG_FORMAT)
    app = create_app(settings, seed_events=seed_events, seed_users=seed_users)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        lifespan="on",
        access_log=settings.log_level == "debug",  # per-request lines are metrics' job otherwise
    )
    server = uvicorn.Server(config)
    server.run()
    if not server.started:
        log.error("nsp-recall did not start")
        raise SystemExit(3)
