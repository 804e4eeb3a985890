"""Recall load for the end-to-end tests: client threads posting ``/v1/recall`` back to back
against a real server until stopped, every answer recorded (``RecallLoad``)."""

from __future__ import annotations

import dataclasses
import itertools
import random
import threading
from typing import Any

import httpx


@dataclasses.dataclass
class Answer:
    thread: int
    k: int
    status: int | None  # None: no response at all
    body: dict[str, Any] | str  # the JSON answer, else the text or the transport error

    @property
    def version(self) -> int | None:
        """The bundle version the answer reports, if it is a recall answer."""
        return self.body.get("bundle_version") if isinstance(self.body, dict) else None


class RecallLoad:
    """``threads`` clients until the ``with`` block ends. Three requests in four are for one of
    ``users`` (the model path when they have history), the fourth for a new cold user (the
    fallback); k is 10 or 50, the scene homepage or search."""

    def __init__(self, base_url: str, users: list[str], threads: int = 3) -> None:
        self._base_url = base_url
        self._users = users
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.answers: list[Answer] = []
        self._threads = [threading.Thread(target=self._run, args=(n,)) for n in range(threads)]

    def __enter__(self) -> RecallLoad:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def __len__(self) -> int:
        with self._lock:
            return len(self.answers)

    def count(self, version: int) -> int:
        """Answers so far that came from bundle ``version``."""
        with self._lock:
            return sum(1 for a in self.answers if a.version == version)

    def _run(self, thread: int) -> None:
        rng = random.Random(thread)
        with httpx.Client(base_url=self._base_url, timeout=30) as client:
            for n in itertools.count():
                if self._stop.is_set():
                    return
                user = rng.choice(self._users) if n % 4 else f"cold-{thread}-{n}"
                k = rng.choice((10, 50))
                payload = {"user_id": user, "k": k, "scene": rng.choice(("homepage", "search"))}
                try:
                    response = client.post("/v1/recall", json=payload)
                    answer = Answer(thread, k, response.status_code, _json_or_text(response))
                except httpx.HTTPError as exc:
                    answer = Answer(thread, k, None, f"{type(exc).__name__}: {exc}")
                with self._lock:
                    self.answers.append(answer)


def _json_or_text(response: httpx.Response) -> dict[str, Any] | str:
    try:
        body: dict[str, Any] = response.json()
    except ValueError:
        return response.text
    return body
