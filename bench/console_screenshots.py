"""Screenshots of the retrieval console's four views, for docs/console.md.

    .venv/bin/python bench/console_screenshots.py [--bundles var/bundles] [--data var/demo/data]

Starts ``nsprecall serve`` with the console on over ``--bundles`` (default: ``make run``'s),
a session store (``NSP_REDIS_URL`` / ``REDIS_URL``, else a private redis-server, as the demo
does) seeded with the first ``--seed-users`` users of ``--data``/events.csv, sends a little
traffic so that the latency view has something to show, then opens each view in Debian's
headless chromium at a fixed width and writes ``--out``/{user,item,bundle,latency}.png.

The user view shows the demo's user (the most active seeded one) on the demo's head query, so
every channel of a search bundle answers; ``--user`` and ``--query`` pick others (``--query ""``:
a recommendation request). The item view shows the first item of that answer with i2i
neighbours.
"""

from __future__ import annotations

import argparse
import io
import logging
import secrets
import subprocess
import sys
import urllib.parse
from pathlib import Path

import httpx
import redis
from benchlib import free_port, start_serve, wait_for
from PIL import Image  # matplotlib's dependency (dev extras)
from selenium.webdriver.chrome.webdriver import WebDriver

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # tests/browser.py: the headless chromium the browser test uses

from browser import browser_missing, headless_chromium, open_view  # noqa: E402

from nsprecall.cli import DEFAULT_BUNDLES, DEMO_DIR  # noqa: E402
from nsprecall.demo import INTENTS_FILE, SEED_USERS, local_redis, pick_demo_query, pick_demo_user  # noqa: E402

log = logging.getLogger("bench.console_screenshots")

WIDTH = 1600
MAX_HEIGHT = 2400  # a longer page is cut here: the top of each view is what the docs show
K = 10
WARMUP_USERS = 40


def traffic(client: httpx.Client, users: list[str], query: str | None) -> None:
    """Recalls through every channel, so each latency histogram has observations."""
    for user in users:
        client.post("/v1/recall", json={"user_id": user, "k": K, "scene": "homepage"}).raise_for_status()
        if query:
            body = {"user_id": user, "k": K, "scene": "search", "query": query}
            client.post("/v1/recall", json=body).raise_for_status()


def item_with_neighbours(client: httpx.Client, item_ids: list[str]) -> str:
    """The first of ``item_ids`` with i2i neighbours (a fuller item view), else the first."""
    for item_id in item_ids:
        item = client.get(f"/v1/items/{urllib.parse.quote(item_id, safe='')}", params={"neighbours": 1})
        if item.status_code == 200 and item.json()["neighbours"]:
            return item_id
    return item_ids[0]


def seeded_users(events: Path, n: int) -> list[str]:
    users: dict[str, None] = {}
    with events.open() as f:
        next(f)
        for line in f:
            users.setdefault(line.split(",", 1)[0], None)
            if len(users) >= n:
                break
    return list(users)


def shoot(driver: WebDriver, base_url: str, route: str, path: Path) -> None:
    driver.set_window_size(WIDTH, 900)
    open_view(driver, base_url, route)
    # The window is taller than the page it shows by the browser's own frame.
    frame, height = driver.execute_script(
        "return [window.outerHeight - window.innerHeight, document.documentElement.scrollHeight]"
    )
    driver.set_window_size(WIDTH, min(max(int(height), 600), MAX_HEIGHT) + int(frame))
    # 256 colours: flat UI colours and text survive unchanged, at a third of the bytes.
    shot = Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB")
    shot.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(path, optimize=True)
    log.info("wrote %s (%s)", path, route)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bundles", type=Path, default=ROOT / DEFAULT_BUNDLES, help="bundle root to serve")
    parser.add_argument("--data", type=Path, default=ROOT / DEMO_DIR / "data", help="events.csv to seed")
    parser.add_argument("--seed-users", type=int, default=SEED_USERS)
    parser.add_argument("--user", default=None, help="user of the user view (default: the demo's)")
    parser.add_argument("--query", default=None, help='search text of the user view ("": none)')
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "console")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    missing = browser_missing()
    if missing is not None:
        raise SystemExit(missing)

    events = args.data / "events.csv"
    user = args.user or pick_demo_user(events, args.seed_users)
    query = args.query
    if query is None:
        intents = args.data / INTENTS_FILE
        query = pick_demo_query(intents) if intents.is_file() else ""
    args.out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    work = ROOT / "var" / "console-screenshots"
    work.mkdir(parents=True, exist_ok=True)
    with local_redis(work / "redis") as redis_url, (work / "serve.log").open("wb") as server_log:
        env = {
            "NSP_CONSOLE_ENABLED": "1",
            "NSP_ADMIN_TOKEN": secrets.token_urlsafe(24),
            "NSP_REDIS_URL": redis_url,
            "NSP_STORE_KEY_PREFIX": f"console-shots-{secrets.token_hex(4)}",
        }
        seed = ["--seed-events", str(events), "--seed-users", str(args.seed_users)]
        server = start_serve(args.bundles, port, env, server_log, seed)
        try:
            with httpx.Client(base_url=base_url, timeout=30) as client:
                wait_for(lambda: client.get("/readyz").status_code == 200, 300, "readiness", alive=server)
                traffic(client, seeded_users(events, WARMUP_USERS), query)
                scene = {"scene": "search", "query": query} if query else {"scene": "homepage"}
                answer = client.post("/v1/recall", json={"user_id": user, "k": K, **scene}).json()
                shown = item_with_neighbours(client, [item["item_id"] for item in answer["items"]])
            # exclude_seen false: the user's own items may come back, marked as seen.
            shown_user = {"user_id": user, **scene, "k": K, "exclude_seen": "false"}
            routes = {
                "user": "#/user?" + "&".join(f"{k}={quote(str(v))}" for k, v in shown_user.items()),
                "item": f"#/item/{quote(shown)}",
                "bundle": "#/bundle",
                "latency": "#/latency",
            }
            driver = headless_chromium(WIDTH, 900)
            try:
                for name, route in routes.items():
                    shoot(driver, base_url, route, args.out / f"{name}.png")
            finally:
                driver.quit()
        finally:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
            if redis_url is not None:  # a configured Redis outlives this run: leave it as it was
                store = redis.Redis.from_url(redis_url)
                keys = list(store.scan_iter(f"{env['NSP_STORE_KEY_PREFIX']}:*"))
                if keys:
                    store.delete(*keys)


def quote(text: str) -> str:
    """As the console's encodeURIComponent: the route the console builds itself is the one it
    renders."""
    return urllib.parse.quote(text, safe="!~*'()")


if __name__ == "__main__":
    main()
