"""The retrieval console in a real headless chromium, against a real ``nsprecall serve`` (Redis,
ONNX Runtime, hnswlib) over bundles published from the search run, with one item's title
carrying markup that must render as text.

What the page shows is checked against the API's own answers to the same requests: the
sessions, the merged recall and each channel's own list (ids and order), for a recommendation
and for a search request reached through the page's own link. The admin buttons are tried
without the token (refused, nothing changes) and with it (pin and unpin take effect).
"""

from __future__ import annotations

import csv
import json
import re
import shutil
import urllib.parse
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from browser import browser_missing, headless_chromium, open_view, wait_rendered
from cli_helpers import run_cli, serve_process
from prometheus_client.parser import text_string_to_metric_families
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from index.item_meta import ITEM_META_FILE

ADMIN_TOKEN = "console-admin-token-0123456789"
USER = 'console-<u>&"user"'  # markup and quotes in the id itself: it travels in URLs and fields
EVIL_TITLE = '<script>window.__xss=1</script><img src=x onerror="window.__xss=2"> Evil kettle'
EVIL_QUERY = "<b>red</b> <img src=x onerror=window.__xss=3>"
SESSIONS_POSTED = 6

pytestmark = pytest.mark.skipif(browser_missing() is not None, reason=str(browser_missing()))


class Console:
    """The served console and what the test posted to it."""

    def __init__(self, client: httpx.Client, evil_item: str, as_of: int) -> None:
        self.client = client
        self.base_url = str(client.base_url).rstrip("/")
        self.evil_item = evil_item
        self.as_of = as_of

    def recall(self, **body: Any) -> dict[str, Any]:
        response = self.client.post("/v1/recall", json={"user_id": USER, "as_of": self.as_of, **body})
        assert response.status_code == 200, response.text
        answer: dict[str, Any] = response.json()
        return answer

    def lists(self, **body: Any) -> dict[str, list[str]]:
        """What the API answers: the merged list and each answering channel's own list."""
        merged = self.recall(k=20, **body)
        lists = {"merged": ids(merged)}
        for name in merged["answered_channels"]:
            lists[f"channel:{name}"] = ids(self.recall(k=20, channels=[name], **body))
        return lists

    def served(self) -> dict[str, Any]:
        summary: dict[str, Any] = self.client.get("/v1/bundle").json()
        return summary


def ids(answer: dict[str, Any]) -> list[str]:
    return [item["item_id"] for item in answer["items"]]


def user_sessions(world: Path) -> tuple[list[list[dict[str, str]]], str]:
    """The newest sessions of the world's user with the most sessions, oldest first, and the
    first item of their newest session (the item whose title the test poisons)."""
    by_user: dict[str, dict[str, list[dict[str, str]]]] = defaultdict(lambda: defaultdict(list))
    with (world / "events.csv").open() as f:
        for row in csv.DictReader(f):
            by_user[row["user_id"]][row["request_id"]].append(row)
    sessions = max(by_user.values(), key=len)
    newest = sorted(sessions.values(), key=lambda rows: int(rows[0]["ts"]))[-SESSIONS_POSTED:]
    return newest, newest[-1][0]["item_id"]


@pytest.fixture(scope="module")
def console(
    search_trained: Path, search_world: Path, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Console]:
    sessions, evil_item = user_sessions(search_world)
    tmp = tmp_path_factory.mktemp("console")
    run, root = tmp / "run", tmp / "bundles"
    shutil.copytree(search_trained, run)
    meta = json.loads((run / ITEM_META_FILE).read_text())
    meta["titles"][meta["item_ids"].index(evil_item)] = EVIL_TITLE
    (run / ITEM_META_FILE).write_text(json.dumps(meta))
    for _ in range(2):  # versions 1 and 2: something to pin
        run_cli("publish", "--run", str(run), "--bundles", str(root))

    events: list[dict[str, Any]] = []
    for n, rows in enumerate(sessions):
        for row in rows:
            event: dict[str, Any] = {key: row[key] for key in ("item_id", "action", "scene")}
            event.update(user_id=USER, ts=int(row["ts"]), request_id=f"s{n}")
            if row["query"]:
                event["query"] = row["query"]
            events.append(event)
    last_ts: int = max(event["ts"] for event in events)
    search = {"user_id": USER, "scene": "search", "request_id": "evil-search", "query": EVIL_QUERY}
    events.append({**search, "item_id": evil_item, "action": "click", "ts": last_ts + 60})
    env = {"NSP_CONSOLE_ENABLED": "1", "NSP_ADMIN_TOKEN": ADMIN_TOKEN}
    with serve_process(root, redis_url, env=env, ready_timeout=90, client_timeout=30) as client:
        assert client.post("/v1/events", json={"events": events}).status_code == 202
        yield Console(client, evil_item, as_of=last_ts + 3600)


@pytest.fixture(scope="module")
def driver() -> Iterator[WebDriver]:
    browser = headless_chromium()
    try:
        yield browser
    finally:
        browser.quit()


def row_ids(driver: WebDriver, container: str) -> list[str]:
    """The item ids of the rows under the element matching ``container``, in page order."""
    found: list[str] = driver.execute_script(
        "const c = document.querySelector(arguments[0]);"
        "return c ? [...c.querySelectorAll('tr[data-item-id]')].map(r => r.dataset.itemId) : [];",
        container,
    )
    return found


def rendered_lists(driver: WebDriver) -> dict[str, list[str]]:
    names = [
        card.get_attribute("data-list") or "" for card in driver.find_elements(By.CSS_SELECTOR, "[data-list]")
    ]
    return {name: row_ids(driver, f'[data-list="{name}"]') for name in names}


def rendered_sessions(driver: WebDriver) -> list[tuple[str, list[str]]]:
    sessions: list[list[Any]] = driver.execute_script(
        "return [...document.querySelectorAll('[data-role=sessions] [data-request-id]')].map(s =>"
        "  [s.dataset.requestId, [...s.querySelectorAll('tr[data-item-id]')].map(r => r.dataset.itemId)]);"
    )
    return [(request_id, items) for request_id, items in sessions]


def follow(driver: WebDriver, click: Any) -> None:
    """Click something that changes the route, and wait for the new route to render."""
    before = driver.execute_script("return window.location.hash")
    click()
    WebDriverWait(driver, 10).until(lambda d: d.execute_script("return window.location.hash") != before)
    wait_rendered(driver)


def no_script_ran(driver: WebDriver) -> None:
    assert driver.execute_script("return window.__xss === undefined"), "injected markup ran"
    assert driver.find_elements(By.CSS_SELECTOR, "main img, main script") == []


def test_user_view_shows_what_the_api_answers(console: Console, driver: WebDriver) -> None:
    open_view(driver, console.base_url, "#/user")
    form = driver.find_element(By.ID, "user-form")
    form.find_element(By.NAME, "user_id").send_keys(USER)
    form.find_element(By.NAME, "as_of").send_keys(str(console.as_of))
    Select(form.find_element(By.NAME, "exclude_seen")).select_by_value("false")  # history shows seen items
    follow(driver, form.find_element(By.CSS_SELECTOR, "button[type=submit]").click)

    api_sessions = console.client.get(f"/v1/users/{USER}/sessions", params={"limit": 20}).json()["sessions"]
    expected_sessions = [(s["request_id"], [i["item_id"] for i in s["items"]]) for s in api_sessions]
    assert len(expected_sessions) == SESSIONS_POSTED + 1
    assert rendered_sessions(driver) == expected_sessions  # newest first, items in stored order

    expected = console.lists(exclude_seen=False)
    assert len(expected) >= 3, f"too few channels answered to compare: {list(expected)}"
    assert rendered_lists(driver) == expected

    # Titles come from the bundle's metadata; ids stay visible; the user's own items are marked.
    merged = console.recall(k=20, exclude_seen=False, include=["meta"])
    first = driver.find_element(By.CSS_SELECTOR, "[data-list=merged] tr[data-item-id] a")
    assert first.text == (merged["items"][0]["meta"]["title"] or merged["items"][0]["item_id"])
    seen = {item for _, items in expected_sessions for item in items}
    marked = driver.execute_script(
        "return [...document.querySelectorAll('[data-list] tr.seen')].map(r => r.dataset.itemId)"
    )
    assert set(marked) == {item for lst in expected.values() for item in lst if item in seen} and marked


def test_a_search_link_shows_the_search_answer(console: Console, driver: WebDriver) -> None:
    route = f"#/user?user_id={urllib.parse.quote(USER, safe='')}&as_of={console.as_of}"
    open_view(driver, console.base_url, route)
    query = next(
        s["query"]
        for s in console.client.get(f"/v1/users/{USER}/sessions").json()["sessions"]
        if s["request_id"] == "evil-search"
    )
    links = driver.find_elements(By.CSS_SELECTOR, ".links a")
    link = next((a for a in links if a.text == f"search “{query}”"), None)
    assert link is not None, [a.text for a in links]
    follow(driver, link.click)

    lists = rendered_lists(driver)
    assert lists == console.lists(scene="search", query=query)
    assert {"channel:bm25", "channel:dense"} <= set(lists)
    assert "scenario search" in driver.find_element(By.CSS_SELECTOR, "[data-role=recall-summary]").text
    no_script_ran(driver)


def test_markup_in_a_title_or_query_renders_as_text(console: Console, driver: WebDriver) -> None:
    route = f"#/user?user_id={urllib.parse.quote(USER, safe='')}"
    open_view(driver, console.base_url, route)
    rows = driver.find_elements(
        By.CSS_SELECTOR, f'[data-role=sessions] tr[data-item-id="{console.evil_item}"] a'
    )
    assert rows and all(row.text == EVIL_TITLE for row in rows)
    queries = [q.text for q in driver.find_elements(By.CSS_SELECTOR, "[data-role=sessions] .query")]
    assert any("<b>red</b> <img src=x onerror=window.__xss=3>" in q for q in queries), queries
    no_script_ran(driver)

    open_view(driver, console.base_url, f"#/item/{console.evil_item}")
    assert driver.find_element(By.CSS_SELECTOR, "[data-role=item-title]").text == EVIL_TITLE
    item = console.client.get(f"/v1/items/{console.evil_item}").json()
    neighbours = row_ids(driver, "[data-role=neighbours]")
    assert neighbours == [n["item_id"] for n in item["neighbours"]] and neighbours
    no_script_ran(driver)


def test_admin_buttons_need_the_token(console: Console, driver: WebDriver) -> None:
    assert console.served()["version"] == 2
    open_view(driver, console.base_url, "#/bundle")
    driver.execute_script("sessionStorage.clear()")
    open_view(driver, console.base_url, "#/latency")  # re-render the bundle view with no token
    open_view(driver, console.base_url, "#/bundle")

    driver.find_element(By.CSS_SELECTOR, "[data-action=pin-1]").click()
    result = WebDriverWait(driver, 10).until(
        lambda d: d.find_element(By.CSS_SELECTOR, "[data-role=admin-result].error[data-done=pin-1]")
    )
    assert "401" in result.text and "unauthorized" in result.text
    served = console.served()
    assert served["version"] == 2 and served["pinned"] is False

    token = driver.find_element(By.NAME, "admin-token")
    token.send_keys(ADMIN_TOKEN)
    driver.find_element(By.CSS_SELECTOR, "[data-action=pin-1]").click()
    done = WebDriverWait(driver, 10).until(
        lambda d: d.find_element(By.CSS_SELECTOR, "[data-role=admin-result].ok[data-done=pin-1]")
    )
    assert "serving bundle 1 (pinned)" in done.text
    assert driver.find_element(By.CSS_SELECTOR, "[data-role=pin-state]").text == "pinned to 1"
    served = console.served()
    assert served["version"] == 1 and served["pinned"] is True
    swaps = driver.find_elements(By.CSS_SELECTOR, "[data-role=swaps] tbody tr")
    assert swaps and re.search(r"\bpin\b.*\b2\b.*\b1\b.*swapped", swaps[0].text), swaps[0].text
    # The token stays in this tab: session storage, never local storage or a cookie.
    assert driver.execute_script("return [localStorage.length, document.cookie]") == [0, ""]

    driver.find_element(By.CSS_SELECTOR, "[data-action=unpin]").click()
    done = WebDriverWait(driver, 10).until(
        lambda d: d.find_element(By.CSS_SELECTOR, "[data-role=admin-result].ok[data-done=unpin]")
    )
    assert "serving bundle 2" in done.text
    served = console.served()
    assert served["version"] == 2 and served["pinned"] is False


def test_latency_view_reads_the_services_histograms(console: Console, driver: WebDriver) -> None:
    console.lists()  # some recalls through every channel
    open_view(driver, console.base_url, "#/latency")
    shown = {
        row.get_attribute("data-series"): [cell.text for cell in row.find_elements(By.TAG_NAME, "td")]
        for row in driver.find_elements(By.CSS_SELECTOR, "[data-role=latency-channels] tr[data-series]")
    }
    expected = channel_percentiles(console.client.get("/metrics").text)
    assert set(shown) == set(expected) and len(shown) >= 3
    for channel, (count, quantiles) in expected.items():
        cells = shown[channel]
        assert int(cells[0]) == count
        for text, value in zip(cells[2:], quantiles, strict=True):
            assert abs(float(text.removesuffix(" ms")) - value * 1000) <= 0.051, (channel, text, value)
    bars = driver.find_elements(By.CSS_SELECTOR, "[data-role=latency-channels] + svg rect.bar")
    assert len(bars) == 3 * len(shown) + 3  # a bar per percentile per channel, and the legend


def channel_percentiles(metrics: str) -> dict[str, tuple[int, list[float]]]:
    """Per channel: observations and p50/p90/p99 by Prometheus's histogram_quantile rule."""
    buckets: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for family in text_string_to_metric_families(metrics):
        if family.name == "nsp_channel_duration_seconds":
            for sample in family.samples:
                if sample.name.endswith("_bucket"):
                    buckets[sample.labels["channel"]].append((float(sample.labels["le"]), sample.value))
    out = {}
    for channel, points in buckets.items():
        points.sort()
        total = points[-1][1]
        if total:
            out[channel] = (int(total), [histogram_quantile(q, points) for q in (0.5, 0.9, 0.99)])
    return out


def histogram_quantile(q: float, points: list[tuple[float, float]]) -> float:
    rank = q * points[-1][1]
    lower, below = 0.0, 0.0
    for upper, cumulative in points:
        if cumulative >= rank:
            if upper == float("inf"):
                return lower
            return lower + (upper - lower) * (rank - below) / (cumulative - below)
        lower, below = upper, cumulative
    raise AssertionError("no bucket reaches the rank")
