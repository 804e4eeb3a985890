"""Domain errors → HTTP responses, in one table.

Bad input is always a 4xx with a message saying what is wrong; an unavailable dependency is a
503 with ``Retry-After``. Every error body is ``{"error": code, "detail": message}``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from service.store import StoreUnavailable

log = logging.getLogger(__name__)


class NoBundleLoaded(Exception):
    """No bundle has been loaded yet (start-up, or every version so far failed to load)."""


class LimitExceeded(Exception):
    """The request is within the API's ceilings but over this deployment's configured limits."""


@dataclass(frozen=True)
class ErrorSpec:
    status: int
    code: str
    retry_after_s: int | None = None


ERRORS: dict[type[Exception], ErrorSpec] = {
    RequestValidationError: ErrorSpec(422, "invalid_request"),
    LimitExceeded: ErrorSpec(422, "limit_exceeded"),
    StoreUnavailable: ErrorSpec(503, "session_store_unavailable", retry_after_s=1),
    NoBundleLoaded: ErrorSpec(503, "no_bundle_loaded", retry_after_s=5),
}


def _detail(exc: Exception) -> object:
    if isinstance(exc, RequestValidationError):
        # Location, message and type only: echoing the input back could return a whole batch.
        return jsonable_encoder([{k: e[k] for k in ("loc", "msg", "type") if k in e} for e in exc.errors()])
    return str(exc)


async def _handle(request: Request, exc: Exception) -> JSONResponse:
    spec = next(spec for kind, spec in ERRORS.items() if isinstance(exc, kind))
    if spec.status >= 500:
        log.warning("%s %s → %d: %s", request.method, request.url.path, spec.status, exc)
    headers = {"Retry-After": str(spec.retry_after_s)} if spec.retry_after_s is not None else None
    return JSONResponse(
        {"error": spec.code, "detail": _detail(exc)}, status_code=spec.status, headers=headers
    )


def install_error_handlers(app: FastAPI) -> None:
    for kind in ERRORS:
        app.add_exception_handler(kind, _handle)
