"""The synthetic world generator: files, invariants of the event log, and the behaviour that
makes the data worth training a sequential recommender on."""

from __future__ import annotations

import csv
import itertools
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest

from model_export.synth import ACTIONS, DAY, DAY0_TS, SCENES, SynthConfig, generate

SMALL = SynthConfig(n_users=300, n_items=1000, n_categories=30, n_days=10, seed=7)
# More visits per user so that a 10-day window has enough clicks per user to measure.
BUSY = replace(SMALL, visits_per_day=1.0, seed=11)


@dataclass
class World:
    config: SynthConfig
    counts: dict[str, int]
    events_header: list[str]
    catalog_header: list[str]
    events: list[dict[str, str]]
    catalog: dict[str, dict[str, str]]

    def rows(self, action: str | None = None, scene: str | None = None) -> list[dict[str, str]]:
        return [
            e
            for e in self.events
            if (action is None or e["action"] == action) and (scene is None or e["scene"] == scene)
        ]

    def day(self, event: dict[str, str]) -> int:
        return (int(event["ts"]) - DAY0_TS) // DAY


def _read(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
        return list(reader.fieldnames or []), rows


def _build(config: SynthConfig, out: Path) -> World:
    counts = generate(config, out, progress=False)
    events_header, events = _read(out / "events.csv")
    catalog_header, catalog_rows = _read(out / "catalog.csv")
    return World(
        config, counts, events_header, catalog_header, events, {r["item_id"]: r for r in catalog_rows}
    )


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return _build(SMALL, tmp_path_factory.mktemp("small"))


@pytest.fixture(scope="module")
def busy_world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return _build(BUSY, tmp_path_factory.mktemp("busy"))


def _files(out: Path) -> tuple[bytes, bytes]:
    return (out / "catalog.csv").read_bytes(), (out / "events.csv").read_bytes()


def test_same_seed_gives_identical_files_and_other_seed_does_not(tmp_path: Path) -> None:
    config = replace(SMALL, n_users=120, n_items=400, n_days=4)
    generate(config, tmp_path / "a", progress=False)
    generate(config, tmp_path / "b", progress=False)
    generate(replace(config, seed=config.seed + 1), tmp_path / "c", progress=False)
    a, b, c = _files(tmp_path / "a"), _files(tmp_path / "b"), _files(tmp_path / "c")
    assert a == b
    assert a[0] != c[0]
    assert a[1] != c[1]


def test_counts_match_the_files(world: World) -> None:
    assert world.counts["events"] == len(world.events)
    assert world.counts["items"] == len(world.catalog) == SMALL.n_items
    assert world.counts["sessions"] == len({e["request_id"] for e in world.events})
    assert world.counts["users"] == len({e["user_id"] for e in world.events})
    # A usable world: most users are active and sessions have several exposures each.
    assert world.counts["users"] > 0.6 * SMALL.n_users
    assert 5 <= len(world.rows("exposure")) / world.counts["sessions"] <= 12


def test_headers_and_vocabularies(world: World) -> None:
    assert world.events_header == ["user_id", "item_id", "ts", "action", "scene", "request_id"]
    assert world.catalog_header == ["item_id", "category", "price", "title", "brand", "colour", "first_day"]
    assert {e["action"] for e in world.events} == set(ACTIONS)
    assert {e["scene"] for e in world.events} == set(SCENES)
    for e in world.events[:5000]:
        assert re.fullmatch(r"u\d+", e["user_id"])
        assert re.fullmatch(r"i\d+", e["item_id"])
        assert re.fullmatch(r"r\d+", e["request_id"])
    for item_id, row in world.catalog.items():
        assert re.fullmatch(r"i\d+", item_id)
        assert re.fullmatch(r"c\d+", row["category"])
        assert re.fullmatch(r"\d+\.\d\d", row["price"]) and float(row["price"]) > 0
        assert re.fullmatch(r"[a-z-]+( [a-z-]+){2,}", row["title"])
        assert row["brand"] and row["colour"]
        assert 0 <= int(row["first_day"]) < SMALL.n_days


def test_catalog_has_new_items_and_they_get_exposed(world: World) -> None:
    first_day = {i: int(r["first_day"]) for i, r in world.catalog.items()}
    new = {i for i, d in first_day.items() if 0 < d < SMALL.n_days - 1}
    assert 0.15 * SMALL.n_items < len(new) < 0.45 * SMALL.n_items
    exposed = {e["item_id"] for e in world.rows("exposure")}
    assert len(new & exposed) > 0.5 * len(new)


def test_events_sorted_by_ts_within_the_period(world: World) -> None:
    ts = np.array([int(e["ts"]) for e in world.events])
    assert np.all(np.diff(ts) >= 0)
    assert ts[0] >= DAY0_TS
    # Visits that start before midnight of the last day may run a little past it, not more.
    assert ts[-1] < DAY0_TS + SMALL.n_days * DAY + 6 * 3600


def test_each_request_belongs_to_one_user_scene_and_moment(world: World) -> None:
    users: dict[str, set[str]] = defaultdict(set)
    scenes: dict[str, set[str]] = defaultdict(set)
    span: dict[str, list[int]] = {}
    for e in world.events:
        users[e["request_id"]].add(e["user_id"])
        scenes[e["request_id"]].add(e["scene"])
        t = int(e["ts"])
        lo_hi = span.setdefault(e["request_id"], [t, t])
        lo_hi[0], lo_hi[1] = min(lo_hi[0], t), max(lo_hi[1], t)
    assert all(len(u) == 1 for u in users.values())
    assert all(len(s) == 1 for s in scenes.values())
    assert max(hi - lo for lo, hi in span.values()) < 3 * 3600
    exposures = Counter((e["request_id"], e["item_id"]) for e in world.rows("exposure"))
    assert max(exposures.values()) == 1, "an item is exposed at most once per request"


def test_events_reference_catalog_items_after_their_arrival(world: World) -> None:
    for e in world.events:
        item = world.catalog.get(e["item_id"])
        assert item is not None, e
        assert world.day(e) >= int(item["first_day"]), e


def test_action_cascade(world: World) -> None:
    first_seen: dict[tuple[str, str, str], int] = {}
    for e in world.events:
        key = (e["request_id"], e["item_id"], e["action"])
        first_seen.setdefault(key, int(e["ts"]))
    previous = {"click": "exposure", "cart": "click", "pay": "cart"}
    deeper = Counter(e["action"] for e in world.events if e["action"] in previous)
    assert min(deeper.values()) > 20, "the world should contain every kind of deeper action"
    for (request, item, action), ts in first_seen.items():
        if action in previous:
            parent = first_seen.get((request, item, previous[action]))
            assert parent is not None, (request, item, action)
            assert parent < ts, "a deeper action comes after the one it depends on"


def _rates(world: World) -> dict[str, dict[str, float]]:
    counts = Counter((e["scene"], e["action"]) for e in world.events)
    return {
        s: {
            "ctr": counts[s, "click"] / counts[s, "exposure"],
            "cart": counts[s, "cart"] / max(counts[s, "click"], 1),
            "pay": counts[s, "pay"] / max(counts[s, "cart"], 1),
        }
        for s in SCENES
    }


def test_scenes_have_different_engagement(busy_world: World) -> None:
    rates = _rates(busy_world)
    assert rates["search"]["ctr"] > 1.5 * rates["homepage"]["ctr"]
    assert rates["cart"]["ctr"] == max(r["ctr"] for r in rates.values())
    assert rates["cart"]["pay"] == max(r["pay"] for r in rates.values())
    assert rates["search"]["pay"] > rates["homepage"]["pay"]


def test_scenes_expose_different_kinds_of_items(busy_world: World) -> None:
    category = {i: r["category"] for i, r in busy_world.catalog.items()}
    per_request: dict[str, list[str]] = defaultdict(list)
    scene_of: dict[str, str] = {}
    for e in busy_world.rows("exposure"):
        per_request[e["request_id"]].append(category[e["item_id"]])
        scene_of[e["request_id"]] = e["scene"]

    def mean_distinct(scene: str) -> float:
        return float(np.mean([len(set(c)) for r, c in per_request.items() if scene_of[r] == scene]))

    # Search is about one category; homepage mixes interests, popular and random items.
    assert mean_distinct("search") == 1.0
    assert mean_distinct("homepage") > 2.5

    # A detail page shows items of the category of something the user clicked before it.
    clicked_categories: dict[str, set[str]] = defaultdict(set)
    detail_total = detail_related = 0
    for e in busy_world.events:
        if e["action"] == "click":
            clicked_categories[e["user_id"]].add(category[e["item_id"]])
        elif e["action"] == "exposure" and e["scene"] == "detail":
            detail_total += 1
            detail_related += category[e["item_id"]] in clicked_categories[e["user_id"]]
    assert detail_total > 100
    assert detail_related / detail_total > 0.95


def test_scene_follows_the_previous_request(busy_world: World) -> None:
    """Detail pages come after clicks, cart pages after cart events: the scene is predictable."""
    by_user: dict[str, list[tuple[int, str, set[str]]]] = defaultdict(list)
    requests: dict[str, tuple[str, int, str, set[str]]] = {}
    for e in busy_world.events:
        r = requests.setdefault(e["request_id"], (e["user_id"], int(e["ts"]), e["scene"], set()))
        r[3].add(e["action"])
    for user, ts, scene, actions in requests.values():
        by_user[user].append((ts, scene, actions))
    after: dict[str, Counter[str]] = defaultdict(Counter)
    for sessions in by_user.values():
        sessions.sort(key=lambda s: s[0])
        for (_, _, prev_actions), (_, scene, _) in itertools.pairwise(sessions):
            prev = "cart" if "cart" in prev_actions else "click" if "click" in prev_actions else "none"
            after[prev][scene] += 1

    def share(prev: str, scene: str) -> float:
        return after[prev][scene] / sum(after[prev].values())

    assert share("click", "detail") > 2 * share("none", "detail")
    assert share("cart", "cart") > 3 * share("none", "cart")


def test_time_of_day_and_activity_are_uneven(busy_world: World) -> None:
    hours = Counter((int(e["ts"]) - DAY0_TS) % DAY // 3600 for e in busy_world.rows("exposure"))
    night = sum(hours[h] for h in (2, 3, 4))
    evening = sum(hours[h] for h in (19, 20, 21))
    assert evening > 8 * night
    sessions = Counter(e["user_id"] for e in busy_world.rows("exposure"))
    per_user = np.array(list(sessions.values()))
    assert per_user.max() > 4 * np.median(per_user)


def test_recent_categories_predict_future_clicks_better_than_popularity(busy_world: World) -> None:
    category = {i: r["category"] for i, r in busy_world.catalog.items()}
    split_day = BUSY.n_days - 3
    history: dict[str, Counter[str]] = defaultdict(Counter)
    future: dict[str, set[str]] = defaultdict(set)
    popularity: Counter[str] = Counter()
    for e in busy_world.rows("click"):
        c = category[e["item_id"]]
        if busy_world.day(e) < split_day:
            history[e["user_id"]][c] += 1
            popularity[c] += 1
        else:
            future[e["user_id"]].add(c)
    top_k = 3
    global_top = {c for c, _ in popularity.most_common(top_k)}
    personal_hits, popular_hits = [], []
    for user, targets in future.items():
        if not history[user]:
            continue
        personal = {c for c, _ in history[user].most_common(top_k)}
        personal_hits.append(len(targets & personal) / len(targets))
        popular_hits.append(len(targets & global_top) / len(targets))
    assert len(personal_hits) > 100
    personal_rate, popular_rate = float(np.mean(personal_hits)), float(np.mean(popular_hits))
    assert personal_rate > 0.6
    assert personal_rate > 2 * popular_rate


def test_progress_off_prints_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    generate(replace(SMALL, n_users=50, n_items=200, n_days=2), tmp_path, progress=False)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
