"""Domain errors → HTTP responses, in one table.

Bad input is always a 4xx with a message saying what is wrong; an unavailable dependency is a
503 with ``Retry-After``; a missing or wrong admin token is a 401 with ``WWW-Authenticate``.
Every error body is ``{"error": code, "detail": message}``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from service.registry import BundleLoadFailed, BundleRootUnavailable, NothingToRollBack, UnknownVersion
from service.store import StoreUnavailable

log = logging.getLogger(__name__)


class NoBundleLoaded(Exception):
    """No bundle has been loaded yet (start-up, or every version so far failed to load)."""


class UnknownItem(Exception):
    """The served bundle's vocabulary does not hold the item asked about."""


class LimitExceeded(Exception):
    """The request is within the API's ceilings but over this deployment's configured limits."""


class BodyTooLarge(Exception):
    """The request body is larger than ``max_body_bytes`` (declared or counted while reading)."""


class Overloaded(Exception):
    """``max_in_flight`` requests are running already; this one is refused at once, not queued."""


class ShuttingDown(Exception):
    """The server cancelled the request: it was still running when the shutdown grace time ended."""


class AdminDisabled(Exception):
    """An admin endpoint was called but no admin token is configured."""


class AdminUnauthorized(Exception):
    """An admin endpoint was called without the configured bearer token."""


@dataclass(frozen=True)
class ErrorSpec:
    status: int
    code: str
    retry_after_s: int | None = None
    challenge: str | None = None  # WWW-Authenticate value of a 401

    def headers(self) -> dict[str, str] | None:
        headers = {}
        if self.retry_after_s is not None:
            headers["Retry-After"] = str(self.retry_after_s)
        if self.challenge is not None:
            headers["WWW-Authenticate"] = self.challenge
        return headers or None


ERRORS: dict[type[Exception], ErrorSpec] = {
    RequestValidationError: ErrorSpec(422, "invalid_request"),
    LimitExceeded: ErrorSpec(422, "limit_exceeded"),
    BodyTooLarge: ErrorSpec(413, "body_too_large"),
    AdminUnauthorized: ErrorSpec(401, "unauthorized", challenge="Bearer"),
    AdminDisabled: ErrorSpec(403, "admin_disabled"),
    UnknownVersion: ErrorSpec(404, "unknown_version"),
    UnknownItem: ErrorSpec(404, "unknown_item"),
    NothingToRollBack: ErrorSpec(409, "nothing_to_roll_back"),
    BundleLoadFailed: ErrorSpec(409, "bundle_load_failed"),
    StoreUnavailable: ErrorSpec(503, "session_store_unavailable", retry_after_s=1),
    Overloaded: ErrorSpec(503, "overloaded", retry_after_s=1),
    ShuttingDown: ErrorSpec(503, "shutting_down", retry_after_s=1),
    NoBundleLoaded: ErrorSpec(503, "no_bundle_loaded", retry_after_s=5),
    BundleRootUnavailable: ErrorSpec(503, "bundle_root_unavailable", retry_after_s=5),
}


def _detail(exc: Exception) -> object:
    if isinstance(exc, RequestValidationError):
        # Location, message and type only: echoing the input back could return a whole batch.
        return jsonable_encoder([{k: e[k] for k in ("loc", "msg", "type") if k in e} for e in exc.errors()])
    return str(exc)


def _spec(exc: Exception) -> ErrorSpec:
    return next(spec for kind, spec in ERRORS.items() if isinstance(exc, kind))


def problem_response(exc: Exception, headers: Mapping[str, str] | None = None) -> JSONResponse:
    """``exc`` (an instance of a kind in ``ERRORS``) as its status, headers and problem body; for
    middleware that answers before the app's exception handlers could."""
    spec = _spec(exc)
    return JSONResponse(
        {"error": spec.code, "detail": _detail(exc)},
        status_code=spec.status,
        headers={**(spec.headers() or {}), **(headers or {})} or None,
    )


async def _handle(request: Request, exc: Exception) -> JSONResponse:
    spec = _spec(exc)
    if spec.status >= 500:
        log.warning("%s %s → %d: %s", request.method, request.url.path, spec.status, exc)
    return problem_response(exc)


# Errors the framework raises itself: an unknown path, a wrong method, an unreadable body.
HTTP_ERROR_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed"}


async def _handle_http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    code = HTTP_ERROR_CODES.get(exc.status_code, "http_error")
    return JSONResponse(
        {"error": code, "detail": exc.detail}, status_code=exc.status_code, headers=exc.headers
    )


def install_error_handlers(app: FastAPI) -> None:
    for kind in ERRORS:
        app.add_exception_handler(kind, _handle)
    app.add_exception_handler(HTTPException, _handle_http)
