"""The console's HTTP surface: ``/ui`` and its packaged assets only when the setting is on, the
right content types, revalidation by ETag, and nothing outside the allow-list reachable."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fakes import FakeBundle, serving

import service.console
from service.console import ASSETS

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_console_is_absent_unless_enabled(tmp_path: Path) -> None:
    async with serving(tmp_path, FakeBundle()) as client:
        page = await client.get("/ui")
        script = await client.get("/ui/static/console.js")
    assert page.status_code == 404 and page.json()["error"] == "not_found"
    assert script.status_code == 404


MODULES = sorted(name for name in ASSETS if name.endswith(".js"))
IMPORT = re.compile(r'^import\s[^;]*?\sfrom\s"([^"]+)";', re.MULTILINE)


async def test_page_and_assets_are_served_with_their_types(tmp_path: Path) -> None:
    async with serving(tmp_path, FakeBundle(), console_enabled=True) as client:
        page = await client.get("/ui")
        css = await client.get("/ui/static/console.css")
        modules = [await client.get(f"/ui/static/{name}") for name in MODULES]
    assert page.status_code == 200 and page.headers["content-type"] == "text/html; charset=utf-8"
    assert css.headers["content-type"] == "text/css; charset=utf-8"
    # A browser runs an ES module only when it comes with a JavaScript type.
    assert len(modules) > 1 and all(js.status_code == 200 for js in modules)
    assert all(js.headers["content-type"] == "text/javascript; charset=utf-8" for js in modules)
    assert '<script type="module" src="ui/static/console.js"></script>' in page.text
    assert 'href="ui/static/console.css"' in page.text
    # Same-origin scripts, the imported modules included, and nothing inline or from elsewhere.
    assert "script-src 'self';" in page.headers["content-security-policy"]
    for response in (page, css, *modules):
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["content-security-policy"] == page.headers["content-security-policy"]
    # Nothing comes from another origin: the page is usable offline.
    for text in (page.text, css.text, *(js.text for js in modules)):
        assert "http://" not in text.replace("http://www.w3.org/2000/svg", "")
        assert "https://" not in text


def test_every_module_import_is_a_served_sibling() -> None:
    """The entry reaches every module, and every import names a listed module beside it (a
    relative "./name.js"), so no import is a 404 or leaves /ui/static/."""
    static = Path(service.console.__file__).parent / "static"
    imports = {name: IMPORT.findall((static / name).read_text()) for name in MODULES}
    for name, targets in imports.items():
        assert all(t.startswith("./") and t[2:] in MODULES for t in targets), (name, targets)
    reached, todo = set(), ["console.js"]
    while todo:
        name = todo.pop()
        if name not in reached:
            reached.add(name)
            todo.extend(t[2:] for t in imports[name])
    assert reached == set(MODULES)


async def test_an_unchanged_asset_is_revalidated_not_resent(tmp_path: Path) -> None:
    async with serving(tmp_path, FakeBundle(), console_enabled=True) as client:
        first = await client.get("/ui/static/console.js")
        again = await client.get("/ui/static/console.js", headers={"if-none-match": first.headers["etag"]})
        stale = await client.get("/ui/static/console.js", headers={"if-none-match": '"0000"'})
    assert again.status_code == 304 and again.content == b""
    assert stale.status_code == 200 and stale.content == first.content


NOT_ASSETS = ["index.html", "missing.js", "..%2F__init__.py", "..%2F..%2Fapp.py", "%2Fetc%2Fpasswd"]


@pytest.mark.parametrize("name", NOT_ASSETS)
async def test_only_listed_assets_are_served(tmp_path: Path, name: str) -> None:
    async with serving(tmp_path, FakeBundle(), console_enabled=True) as client:
        response = await client.get(f"/ui/static/{name}")
    assert response.status_code == 404
    assert "import" not in response.text  # no Python source leaked


def test_every_listed_asset_ships_in_the_package() -> None:
    static = Path(service.console.__file__).parent / "static"
    assert {p.name for p in static.iterdir()} == set(ASSETS)
