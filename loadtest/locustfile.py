"""A pre-sale-day load mix for nsp-recall: recalls for known, unknown and cold users at several
k and scenes, and event ingestion, each checked against the API contract (docs/api.md).

Run it with ``make loadtest`` (headless, bounded, CSV under var/loadtest/), or by hand:

    locust -f loadtest/locustfile.py --headless --host http://127.0.0.1:8000 \\
        --users 20 --spawn-rate 5 --run-time 60s --csv var/loadtest/nsp

Environment:
- ``LOADTEST_EVENTS``: the event log whose users were seeded into the service (``nsprecall
  serve --seed-events``); default ``var/demo/data/events.csv`` (what ``make run`` seeds). Its
  first ``LOADTEST_SEED_USERS`` (default 1000) distinct users are the known users, its items
  and scenes the ones events and recalls use. Without the file: users ``u0``…, items ``i0``….
- ``LOADTEST_K``: comma-separated k values (default ``10,50,100,200``).

Request names in the stats: ``recall known``, ``recall unknown`` (never-seen ids: must be the
popularity fallback), ``recall cold`` (ids with only a few events, ingested by this run) and
``events``. Tags: ``recall``, ``events``.
"""

from __future__ import annotations

import csv
import os
import random
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from locust import FastHttpUser, between, tag, task

ACTIONS = ("exposure", "exposure", "exposure", "click", "click", "cart", "pay")
SOURCES = {"model", "cache", "fallback"}


@dataclass(frozen=True)
class World:
    known_users: list[str]
    items: list[str]
    scenes: list[str]


def load_world(path: Path, seed_users: int) -> World:
    """The first ``seed_users`` distinct users of the log, with every item and scene in it."""
    if not path.is_file():
        return World([f"u{i}" for i in range(seed_users)], [f"i{i}" for i in range(1000)], ["default"])
    users: dict[str, None] = {}
    items: set[str] = set()
    scenes: set[str] = set()
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            if len(users) < seed_users:
                users.setdefault(row["user_id"])
            items.add(row["item_id"])
            scenes.add(row["scene"])
    return World(list(users), sorted(items), sorted(scenes | {"default"}))


WORLD = load_world(
    Path(os.environ.get("LOADTEST_EVENTS", "var/demo/data/events.csv")),
    int(os.environ.get("LOADTEST_SEED_USERS", "1000")),
)
K_VALUES = [int(k) for k in os.environ.get("LOADTEST_K", "10,50,100,200").split(",")]


class RecallClient(FastHttpUser):
    """One ranking-service caller: mostly recalls for users with history, some for new ones."""

    wait_time = between(0.05, 0.25)

    def on_start(self) -> None:
        self.cold_users: list[str] = []  # ids this client created and gave a few events

    def _recall(self, name: str, user_id: str, expect_fallback: bool = False) -> None:
        k = random.choice(K_VALUES)
        excluded = random.sample(WORLD.items, min(5, len(WORLD.items))) if random.random() < 0.2 else []
        body = {
            "user_id": user_id,
            "k": k,
            "scene": random.choice(WORLD.scenes),
            "exclude_item_ids": excluded,
        }
        with self.client.post("/v1/recall", json=body, name=name, catch_response=True) as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}: {response.text[:200]}")
                return
            answer = response.json()
            returned = {item["item_id"] for item in answer["items"]}
            # Exactly k items: the catalogs this runs against hold far more than k + exclusions.
            if len(answer["items"]) != k or len(returned) != k:
                response.failure(f"asked for {k} distinct items, got {len(answer['items'])}")
            elif answer["source"] not in SOURCES:
                response.failure(f"unknown source {answer['source']!r}")
            elif expect_fallback and answer["source"] != "fallback":
                response.failure(f"an unknown user got source={answer['source']}")
            elif returned & set(excluded):
                response.failure("an excluded item was returned")

    @tag("recall")
    @task(12)
    def recall_known(self) -> None:
        self._recall("recall known", random.choice(WORLD.known_users))

    @tag("recall")
    @task(2)
    def recall_unknown(self) -> None:
        self._recall("recall unknown", f"unknown-{uuid.uuid4().hex[:12]}", expect_fallback=True)

    @tag("recall")
    @task(2)
    def recall_cold(self) -> None:
        if not self.cold_users:
            self.ingest_events()
        self._recall("recall cold", random.choice(self.cold_users))

    @tag("events")
    @task(4)
    def ingest_events(self) -> None:
        """One page view: a few exposures and maybe a click, for a known or a new (cold) user."""
        if random.random() < 0.3 or not self.cold_users:
            user = f"cold-{uuid.uuid4().hex[:12]}"
            self.cold_users = [*self.cold_users[-49:], user]
        else:
            user = random.choice(WORLD.known_users)
        request_id = uuid.uuid4().hex
        now = int(time.time())
        scene = random.choice(WORLD.scenes)
        events = [
            {
                "user_id": user,
                "item_id": item,
                "action": random.choice(ACTIONS),
                "scene": scene,
                "ts": now,
                "request_id": request_id,
            }
            for item in random.sample(WORLD.items, min(random.randint(1, 6), len(WORLD.items)))
        ]
        with self.client.post(
            "/v1/events", json={"events": events}, name="events", catch_response=True
        ) as response:
            if response.status_code != 202:
                response.failure(f"HTTP {response.status_code}: {response.text[:200]}")
            elif response.json().get("accepted") != len(events):
                response.failure(f"accepted {response.json().get('accepted')} of {len(events)}")
