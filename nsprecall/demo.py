"""``make run``: a demo world, a trained bundle, a session store, and the service on top.

Each step is skipped when its output exists, so a second ``make run`` starts serving at once.
The session store is the first that is available: ``REDIS_URL``/``NSP_REDIS_URL`` if set, else
a private ``redis-server`` started here (stopped on exit), else the in-memory store. The retrieval
console is on at ``/ui``; its admin buttons take ``NSP_ADMIN_TOKEN`` when set, else a random token
made here and printed with the console's address.
"""

from __future__ import annotations

import csv
import ctypes
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pydantic import SecretStr

from index.bundle import latest_version

log = logging.getLogger(__name__)

DEMO_USERS = 3000
DEMO_ITEMS = 5000
DEMO_DAYS = 30
SEED_USERS = 1000  # users whose history is loaded into the store at start


INTENTS_FILE = "search_intents.csv"  # written by the search world; marks a demo world with search


def build_bundle(demo_dir: Path, bundle_root: Path) -> None:
    from model_export.publish import publish
    from model_export.search_world import generate_search_world
    from model_export.synth import SynthConfig
    from model_export.train import TrainConfig, run
    from nsprecall.cli import print_quality

    data = demo_dir / "data"
    fresh = not (data / INTENTS_FILE).is_file()  # none yet, or a world from before search
    if fresh:
        log.info("generating the demo world (with search sessions) into %s", data)
        shutil.rmtree(data, ignore_errors=True)
        generate_search_world(SynthConfig(n_users=DEMO_USERS, n_items=DEMO_ITEMS, n_days=DEMO_DAYS), data)
    if latest_version(bundle_root) is not None and not fresh:
        return
    log.info("training the demo model and its channels (about 30 minutes on 2 cores, the first time only)")
    summary = run(data / "events.csv", data / "catalog.csv", demo_dir / "run", TrainConfig())
    print_quality(summary)
    publish(demo_dir / "run", bundle_root)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def local_redis(work_dir: Path) -> Iterator[str | None]:
    """Yield a Redis URL: the configured one, a private redis-server, or None (in-memory)."""
    configured = os.environ.get("NSP_REDIS_URL") or os.environ.get("REDIS_URL")
    if configured:
        yield configured
        return
    binary = shutil.which("redis-server")
    if binary is None:
        log.warning("no REDIS_URL and no redis-server on PATH: using the in-memory session store")
        yield None
        return
    port = _free_port()
    work_dir.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(work_dir.resolve()),
        ],
        stdout=subprocess.DEVNULL,
        preexec_fn=_die_with_parent,
    )
    try:
        _wait_for_port(port)
        log.info("started a local redis-server on 127.0.0.1:%d (stopped on exit)", port)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(timeout=10)


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the demo process dies, even by a signal that skips
    ``finally`` (uvicorn re-raises SIGTERM after its graceful shutdown)."""
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"redis-server did not open port {port}")


def pick_demo_user(events: Path, seed_users: int) -> str:
    """The most active of the users that get seeded (the first ``seed_users`` in the file)."""
    counts: Counter[str] = Counter()
    with events.open() as f:
        for row in csv.DictReader(f):
            user = row["user_id"]
            if user in counts or len(counts) < seed_users:
                counts[user] += 1
    return counts.most_common(1)[0][0]


def pick_demo_query(intents: Path) -> str:
    """The most frequent search query of the demo world (a head query: every channel knows it)."""
    with intents.open() as f:
        counts = Counter(row["query"] for row in csv.DictReader(f) if row["query"])
    return counts.most_common(1)[0][0] if counts else "running shoes"


def _announce_when_ready(port: int, user_id: str, query: str, token_note: str) -> None:
    base = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            with urllib.request.urlopen(f"{base}/readyz", timeout=1) as response:
                if response.status == 200:
                    break
        except OSError:
            time.sleep(0.5)
    recommend = json.dumps({"user_id": user_id, "k": 10, "scene": "homepage"})
    search = json.dumps({"user_id": user_id, "k": 10, "scene": "search", "query": query})
    curl = f"curl -s -X POST {base}/v1/recall -H 'content-type: application/json' -d"
    print(
        "\nnsp-recall is serving. Try a recommendation and a search request:\n"
        f"  {curl} '{recommend}'\n"
        f"  {curl} '{search}'\n"
        f"The retrieval console: {base}/ui (admin token: {token_note})\n",
        flush=True,
    )


def run_demo(demo_dir: Path, bundle_root: Path, port: int = 8000) -> None:
    from service.server import serve
    from service.settings import Settings

    events, intents = demo_dir / "data" / "events.csv", demo_dir / "data" / INTENTS_FILE
    if latest_version(bundle_root) is None or not intents.is_file():
        build_bundle(demo_dir, bundle_root)
    user_id = pick_demo_user(events, SEED_USERS)
    query = pick_demo_query(intents)
    token = os.environ.get("NSP_ADMIN_TOKEN")
    token_note = "$NSP_ADMIN_TOKEN"  # a token the operator chose is not echoed
    if not token:
        token = token_note = secrets.token_urlsafe(24)
    with local_redis(demo_dir / "redis") as redis_url:
        settings = Settings(
            bundle_root=bundle_root,
            port=port,
            redis_url=SecretStr(redis_url) if redis_url else None,
            console_enabled=True,
            admin_token=SecretStr(token),
        )
        announce = (port, user_id, query, token_note)
        threading.Thread(target=_announce_when_ready, args=announce, daemon=True).start()
        serve(settings, seed_events=events, seed_users=SEED_USERS)
