"""What the routes depend on: the app's ``Services`` and the bundle a request is served with."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from service.errors import NoBundleLoaded
from service.metrics import Metrics
from service.nearline import Nearline
from service.recall import RecallPipeline
from service.registry import BundleRegistry
from service.runtime import Bundle
from service.settings import Settings
from service.store import SessionStore


@dataclass(frozen=True)
class Services:
    """What the routes use; built by the lifespan, one per app."""

    settings: Settings
    store: SessionStore
    registry: BundleRegistry
    pipeline: RecallPipeline
    metrics: Metrics
    nearline: Nearline | None = None  # None unless NSP_NEARLINE_ENABLED


async def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(_services)]


async def _bundle(services: ServicesDep) -> Bundle:
    # Taken once per request: everything the request computes comes from this one bundle.
    bundle = services.registry.current()
    if bundle is None:
        raise NoBundleLoaded(f"no bundle loaded yet from {services.registry.root}")
    return bundle


BundleDep = Annotated[Bundle, Depends(_bundle)]
