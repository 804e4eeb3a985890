"""The retrieval console, ``GET /ui``: static pages over the read-only v1 API (docs/console.md).

The console is one HTML page, one stylesheet and native JavaScript modules (``console.js`` the
entry, importing the others by relative path), shipped as package files under ``static/`` and
served as they are: no build step, no bundler, nothing fetched from elsewhere. The page
reads the public API from the browser (sessions, recall, items, bundles, ``/metrics``) and
writes nothing except through the token-guarded ``/v1/admin/*`` endpoints, with a token the
operator types in. Mounted by ``create_app`` only when ``Settings.console_enabled``.

Assets are read once per process and answered with an ``ETag``, so a browser revalidates
(``no-cache``) and a new release is seen at once without versioned file names. Only the names
in ``ASSETS`` are served; any other name is a 404, so no path reaches the file system.
"""

from __future__ import annotations

import functools
import hashlib
from importlib import resources

from fastapi import APIRouter, Request, Response
from starlette.exceptions import HTTPException

INDEX = "index.html"
JAVASCRIPT = "text/javascript; charset=utf-8"
# Every file the console serves, with its content type; nothing else under /ui/static/. The script
# is native ES modules: console.js is the entry the page loads, the others it imports by relative
# path; a browser runs a module only when it is served with a JavaScript content type.
ASSETS = {
    INDEX: "text/html; charset=utf-8",
    "console.css": "text/css; charset=utf-8",
    "console.js": JAVASCRIPT,  # entry: routing and navigation
    "api.js": JAVASCRIPT,  # fetch helper, API errors
    "route.js": JAVASCRIPT,  # hash routes
    "dom.js": JAVASCRIPT,  # element builders: data as text only
    "user.js": JAVASCRIPT,
    "item.js": JAVASCRIPT,
    "bundle.js": JAVASCRIPT,  # incl. the admin actions
    "metrics.js": JAVASCRIPT,  # Prometheus histograms, percentiles
    "latency.js": JAVASCRIPT,
}
# The page loads only its own files and talks only to this origin: a title that slipped past the
# script's escaping still could not run inline code or load anything from elsewhere. 'self' covers
# the entry module and every module it imports (same origin).
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)

router = APIRouter(include_in_schema=False)


@functools.cache
def _asset(name: str) -> tuple[bytes, str]:
    """(content, ETag) of a packaged asset; read once per process."""
    content = resources.files(__name__).joinpath("static", name).read_bytes()
    return content, '"' + hashlib.sha256(content).hexdigest()[:32] + '"'


def _serve(request: Request, name: str) -> Response:
    content, etag = _asset(name)
    headers = {
        "ETag": etag,
        "Cache-Control": "no-cache",
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": CONTENT_SECURITY_POLICY,
        "Referrer-Policy": "no-referrer",
    }
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    return Response(content, media_type=ASSETS[name], headers=headers)


@router.get("/ui")
async def index(request: Request) -> Response:
    return _serve(request, INDEX)


@router.get("/ui/static/{name}")
async def static(name: str, request: Request) -> Response:
    if name not in ASSETS or name == INDEX:
        raise HTTPException(404, f"no console asset {name!r}")
    return _serve(request, name)
