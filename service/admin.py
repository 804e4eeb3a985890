"""Operator endpoints, ``/v1/admin/*``: serving state, reload now, roll back, pin and unpin.

Every endpoint needs ``Authorization: Bearer <NSP_ADMIN_TOKEN>``; a missing or wrong token is
a 401 with ``WWW-Authenticate: Bearer``, and with no token configured the endpoints answer
403 ``admin_disabled``. Every action is logged with the caller's address and counted in
``nsp_admin_actions_total{action,outcome}``. Actions act on this instance only: with several
replicas, call each one.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.dependencies import Services, ServicesDep
from service.errors import AdminDisabled, AdminUnauthorized
from service.metrics import AdminAction
from service.registry import RegistryState
from service.schemas import FailedVersionOut, PinRequest, Problem, ServingState, SwapOut

log = logging.getLogger(__name__)

_bearer = HTTPBearer(auto_error=False, description="The service's NSP_ADMIN_TOKEN.")


async def require_admin(
    request: Request,
    services: ServicesDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    token = services.settings.admin_token
    if token is None:
        raise AdminDisabled("admin endpoints are disabled: set NSP_ADMIN_TOKEN to enable them")
    # compare_digest on bytes: constant time, and it accepts any characters.
    if credentials is None or not secrets.compare_digest(
        credentials.credentials.encode(), token.get_secret_value().encode()
    ):
        log.warning(
            "admin %s %s from %s denied: %s bearer token",
            request.method,
            request.url.path,
            _caller(request),
            "no" if credentials is None else "wrong",
        )
        raise AdminUnauthorized("this endpoint needs the admin bearer token (Authorization: Bearer …)")


router = APIRouter(
    prefix="/v1/admin",
    tags=["admin"],
    dependencies=[Depends(require_admin)],
    responses={
        400: {"model": Problem},
        401: {"model": Problem},
        403: {"model": Problem},
        409: {"model": Problem},
        413: {"model": Problem},
        503: {"model": Problem},
    },
)


@router.get("/bundle")
async def serving_state(services: ServicesDep) -> ServingState:
    return await report(services)


@router.post("/reload")
async def reload(request: Request, services: ServicesDep) -> ServingState:
    """Look for a newer bundle now, retrying versions in back-off; a no-op while pinned."""
    with _audit(request, services, "reload"):
        await services.registry.reload()
    return await report(services)


@router.post("/rollback")
async def rollback(request: Request, services: ServicesDep) -> ServingState:
    """Serve the previous (older) version and pin it; 409 when there is none that loads."""
    with _audit(request, services, "rollback"):
        await services.registry.rollback()
    return await report(services)


@router.put("/pin", responses={404: {"model": Problem}})
async def pin(body: PinRequest, request: Request, services: ServicesDep) -> ServingState:
    """Serve ``version`` until unpinned; 404 if it does not exist, 409 if it does not load."""
    with _audit(request, services, "pin"):
        await services.registry.pin(body.version)
    return await report(services)


@router.delete("/pin")
async def unpin(request: Request, services: ServicesDep) -> ServingState:
    """Back to newest-wins: the newest loadable version is served at once."""
    with _audit(request, services, "unpin"):
        await services.registry.unpin()
    return await report(services)


@contextmanager
def _audit(request: Request, services: Services, action: AdminAction) -> Iterator[None]:
    """Counts the action; logs and re-raises its failure (the error table answers it)."""
    try:
        yield
    except Exception as exc:
        services.metrics.admin_actions.labels(action=action, outcome="failed").inc()
        log.warning("admin %s from %s failed: %s", action, _caller(request), exc)
        raise
    services.metrics.admin_actions.labels(action=action, outcome="ok").inc()
    registry = services.registry
    served = registry.current()
    log.info(
        "admin %s from %s: serving bundle %s%s",
        action,
        _caller(request),
        served.version if served is not None else "none",
        " (pinned)" if registry.pinned else "",
    )


async def report(services: Services) -> ServingState:
    """The registry's serving state as the API answers it (also ``GET /v1/bundles``)."""
    return _state_out(await services.registry.state())


def _state_out(state: RegistryState) -> ServingState:
    return ServingState(
        version=state.version,
        pinned=state.pinned,
        previous_version=state.previous_version,
        versions=state.versions,
        failed=[
            FailedVersionOut(version=f.version, attempts=f.attempts, retry_in_s=f.retry_in_s)
            for f in state.failed
        ],
        swaps=[SwapOut.model_validate(swap, from_attributes=True) for swap in state.swaps],
    )


def _caller(request: Request) -> str:
    return request.client.host if request.client is not None else "unknown"
