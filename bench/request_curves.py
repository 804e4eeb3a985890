"""What one recall costs as a user's stored history grows: p50/p99 and the stage breakdown
against history length, k and exclude_seen, at 1M items, as ratios to the bare-framework floor
measured in the same run.

Servers, side by side in one run, each one ``uvicorn`` process on the shared 2 cores:

- ``floor``: ``bench/floor_app.py``, the service's own request model parsed and k items answered
  with orjson; nothing else;
- ``current``: ``nsprecall serve`` from this checkout;
- ``baseline`` (``--baseline REV``): ``nsprecall serve`` from a git worktree of REV, reading the
  session store's layout of that revision (seeded under its own key prefix).

Users: for each history length (events stored per user), ``--users`` users whose sessions hold
10-20 exposures each, a few of them clicked, now and then carted or paid, sessions hours apart;
items drawn from the same power law as ``bench/serving.py``. Every server answers the same
request back to back, the servers' order rotating from request to request, over one kept-alive
connection each (closed loop): a slow spell of the shared machine lands on all alike. The stage
means come from each server's own ``/metrics`` (histogram sums over the configuration's
requests). The open-loop step sends requests at a fixed rate whatever the answers do, and times
each from when it was due (no coordinated omission).

    python bench/request_curves.py [--baseline REV] [--out-name request_curves]

Writes ``docs/benchmarks/<name>.{json,md,png}``. The 1M-item bundle (with BM25 and a dense
two-tower over synthetic titles) is ``bench/serving.py``'s, built once and cached in ``var/``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import http.client
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import redis
from benchlib import ROOT, free_port, latency_summary, provenance, wait_for
from prometheus_client.parser import text_string_to_metric_families
from serving import (
    DAY0_TS,
    REDIS_URL,
    SCENES,
    TITLES_FILE,
    Popularity,
    build_bundle,
    bundle_root,
)

from index.features import Event
from service.store import RedisSessionStore

log = logging.getLogger("request_curves")

OUT = ROOT / "docs" / "benchmarks"
WORK = ROOT / "var" / "bench" / "request_curves"
PREFIX = {"current": "nspcurve", "baseline": "nspcurve_old"}
STORE_CAP = 2000  # events a server keeps per user: the longest history measured
STAGES = "nsp_recall_stage_duration_seconds"
CHANNELS = "nsp_channel_duration_seconds"
JSON = {"content-type": "application/json"}
COLORS = {"floor": "tab:gray", "current": "tab:blue", "baseline": "tab:red"}


# --- users ------------------------------------------------------------------------------------


def make_history(user: str, n_events: int, popularity: Popularity, rng: np.random.Generator) -> list[Event]:
    """``n_events`` events, oldest first, in sessions of 10-20 exposures of which ~15 % are
    clicked (a click is a second event on an exposed item), ~3 % carted and ~1 % paid; sessions
    1-12 hours apart, the newest ending a day before the requests' time."""
    events: list[Event] = []
    sessions: list[list[Event]] = []
    ts = DAY0_TS
    s = 0
    while len(events) < n_events:
        scene = SCENES[int(rng.integers(0, len(SCENES)))]
        request_id = f"{user}-r{s}"
        shown = popularity.sample(rng, int(rng.integers(10, 21))).tolist()
        session = [
            Event(user, f"i{label}", ts + e, "exposure", scene, request_id) for e, label in enumerate(shown)
        ]
        for e, label in enumerate(shown):
            draw = rng.random()
            if draw < 0.15:
                action = "pay" if draw < 0.01 else "cart" if draw < 0.04 else "click"
                session.append(Event(user, f"i{label}", ts + 30 + e, action, scene, request_id))
        sessions.append(session)
        events.extend(session)
        ts += int(rng.integers(3600, 12 * 3600))
        s += 1
    del events[n_events:]
    return events


def make_users(
    lengths: Sequence[int], per_length: int, popularity: Popularity
) -> dict[int, dict[str, list[Event]]]:
    rng = np.random.default_rng(11)
    return {
        length: {
            (user := f"h{length}u{u}"): make_history(user, length, popularity, rng) for u in range(per_length)
        }
        for length in lengths
    }


def seed_current(users: dict[int, dict[str, list[Event]]]) -> None:
    """Through this checkout's own store (whatever its layout)."""

    async def write() -> None:
        store = RedisSessionStore(
            REDIS_URL, key_prefix=PREFIX["current"], max_events=STORE_CAP, timeout_s=10.0
        )
        for by_user in users.values():
            for events in by_user.values():
                await store.append(events)
        await store.close()

    asyncio.run(write())


def seed_legacy(users: dict[int, dict[str, list[Event]]]) -> None:
    """The layout every revision before the session records read: one JSON array per event,
    ``[item_id, ts, action, scene, request_id(, query)]``, newest first in a list per user."""
    client = redis.Redis.from_url(REDIS_URL)
    pipe = client.pipeline(transaction=False)
    for by_user in users.values():
        for user, events in by_user.items():
            key = f"{PREFIX['baseline']}:{{{user}}}:events"
            values = [
                orjson.dumps(
                    [e.item_id, e.ts, e.action, e.scene, e.request_id, *([e.query] if e.query else [])]
                )
                for e in sorted(events, key=lambda e: e.ts)
            ]
            pipe.delete(key)
            pipe.lpush(key, *values)
    pipe.execute()
    client.close()


def make_query(events: list[Event], titles: list[str], rng: np.random.Generator) -> str:
    """1-3 words of the title of an item the user met (items sharing its words are not seen)."""
    title = titles[int(events[int(rng.integers(0, len(events)))].item_id[1:])]
    words = title.split()
    keep = np.sort(rng.choice(len(words), min(len(words), int(rng.integers(1, 4))), replace=False))
    return " ".join(words[j] for j in keep)


# --- servers ----------------------------------------------------------------------------------


@dataclass
class Server:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    metrics: bool  # serves /metrics with the stage histograms


def start(name: str, command: list[str], cwd: Path, env: dict[str, str], port: int, metrics: bool) -> Server:
    log_file = (WORK / f"{name}.log").open("wb")
    process = subprocess.Popen(
        command, cwd=cwd, env={**os.environ, **env}, stdout=log_file, stderr=subprocess.STDOUT
    )
    ready = f"http://127.0.0.1:{port}/readyz"
    wait_for(lambda: httpx.get(ready, timeout=1).status_code == 200, 600, f"{name} readiness", 0.5, process)
    return Server(name, port, process, metrics)


def start_service(name: str, source: Path, bundles: Path, extra: dict[str, str] | None = None) -> Server:
    """``nsprecall serve`` from ``source``; ``name`` picks the key prefix (a variant of
    ``current`` is named ``current <label>``), ``extra`` more settings."""
    port = free_port()
    env = {
        "PYTHONPATH": str(source),  # ahead of the editable install: this tree's modules
        "NSP_REDIS_URL": REDIS_URL,
        "NSP_STORE_KEY_PREFIX": PREFIX[name.split()[0]],
        "NSP_STORE_MAX_EVENTS": str(STORE_CAP),
        "NSP_LOG_LEVEL": "warning",
        **(extra or {}),
    }
    command = [sys.executable, "-m", "nsprecall.cli", "serve", "--bundles", str(bundles), "--port", str(port)]
    return start(name, command, source, env, port, metrics=True)


def start_floor() -> Server:
    port = free_port()
    command = [sys.executable, str(ROOT / "bench" / "floor_app.py"), str(port)]
    return start("floor", command, ROOT, {"PYTHONPATH": str(ROOT)}, port, metrics=False)


def baseline_tree(revision: str) -> Path:
    tree = WORK / "baseline-src"
    if tree.exists():
        subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, check=True)
    subprocess.run(["git", "worktree", "add", "--detach", str(tree), revision], cwd=ROOT, check=True)
    return tree


# --- measuring --------------------------------------------------------------------------------


class Connection:
    """One kept-alive HTTP/1.1 connection; ``post`` returns the seconds the answer took."""

    def __init__(self, port: int) -> None:
        self._connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def post(self, body: bytes) -> float:
        started = time.perf_counter()
        self._connection.request("POST", "/v1/recall", body, {"content-type": "application/json"})
        response = self._connection.getresponse()
        payload = response.read()
        elapsed = time.perf_counter() - started
        if response.status != 200:
            raise RuntimeError(f"{response.status}: {payload[:300]!r}")
        return elapsed

    def close(self) -> None:
        self._connection.close()


def histogram_sums(port: int) -> dict[str, tuple[float, float]]:
    """``stage:<name>`` / ``channel:<name>`` → (sum seconds, count) from a server's /metrics."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    sums: dict[str, tuple[float, float]] = {}
    for family in text_string_to_metric_families(text):
        if family.name not in (STAGES, CHANNELS):
            continue
        kind, label = ("stage", "stage") if family.name == STAGES else ("channel", "channel")
        for sample in family.samples:
            key = f"{kind}:{sample.labels.get(label)}"
            total, count = sums.get(key, (0.0, 0.0))
            if sample.name.endswith("_sum"):
                sums[key] = (sample.value, count)
            elif sample.name.endswith("_count"):
                sums[key] = (total, sample.value)
    return sums


def stage_means(
    before: dict[str, tuple[float, float]], after: dict[str, tuple[float, float]], n: int
) -> dict[str, float]:
    """Mean ms per request of each stage/channel between two scrapes."""
    means = {}
    for key, (total, _) in after.items():
        spent = total - before.get(key, (0.0, 0.0))[0]
        if spent > 0:
            means[key] = 1000.0 * spent / n
    return means


def bodies(
    users: dict[str, list[Event]], k: int, exclude_seen: bool, requests: int, **extra: Any
) -> Iterator[bytes]:
    names = list(users)
    for i in range(requests):
        body: dict[str, Any] = {"user_id": names[i % len(names)], "k": k, "exclude_seen": exclude_seen}
        body.update(
            {key: value(names[i % len(names)]) if callable(value) else value for key, value in extra.items()}
        )
        yield orjson.dumps(body)


def measure(servers: Sequence[Server], requests: Sequence[bytes], warmup: int) -> dict[str, dict[str, Any]]:
    """Every request to every server back to back, the order rotating; per server the latency
    summary and its stage means."""
    connections = {s.name: Connection(s.port) for s in servers}
    for body in requests[:warmup]:
        for server in servers:
            connections[server.name].post(body)
    before = {s.name: histogram_sums(s.port) for s in servers if s.metrics}
    seconds: dict[str, list[float]] = {s.name: [] for s in servers}
    measured = requests[warmup:]
    for i, body in enumerate(measured):
        shift = i % len(servers)
        for server in [*servers[shift:], *servers[:shift]]:
            seconds[server.name].append(connections[server.name].post(body))
    for connection in connections.values():
        connection.close()
    out: dict[str, dict[str, Any]] = {}
    for server in servers:
        summary: dict[str, Any] = latency_summary(seconds[server.name])
        if server.metrics:
            summary["stages"] = stage_means(before[server.name], histogram_sums(server.port), len(measured))
        out[server.name] = summary
    return out


def warm(server: Server, requests: Sequence[bytes]) -> None:
    """Closed-loop requests until the server's memory is resident again: this machine pages out
    memory a process leaves idle for seconds (a server waiting for another's step), and the
    page faults of a 1M-item index would otherwise land in the measured step."""
    connection = Connection(server.port)
    for body in requests:
        connection.post(body)
    connection.close()


async def open_loop(port: int, requests: Sequence[bytes], rate: float) -> dict[str, Any]:
    """``requests`` sent at ``rate`` per second on a schedule, each timed from when it was due."""
    latencies: list[float] = []
    errors: dict[int, int] = {}
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", limits=limits, timeout=30) as client:

        async def one(due: float, body: bytes) -> None:
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                response = await client.post("/v1/recall", content=body, headers=JSON)
                status = response.status_code
            except httpx.TransportError:  # e.g. a kept-alive connection the server closed meanwhile
                status = 0
            if status != 200:
                errors[status] = errors.get(status, 0) + 1
            latencies.append(time.perf_counter() - due)

        start_at = time.perf_counter() + 0.5
        await asyncio.gather(*(one(start_at + i / rate, body) for i, body in enumerate(requests)))
    return {**latency_summary(latencies), "rate": rate, "errors": errors, "seconds": len(requests) / rate}


# --- the run ----------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    WORK.mkdir(parents=True, exist_ok=True)
    popularity = Popularity(args.items)
    bundles = bundle_root(args.items, args.dim, "clustered", 100, True)
    build_bundle(bundles, args.items, args.dim, "clustered", popularity, 100, 200, 4_000_000, True)
    titles = (bundles / TITLES_FILE).read_text().splitlines()
    users = make_users(args.lengths, args.users, popularity)
    rng = np.random.default_rng(12)
    queries = {
        user: make_query(events, titles, rng)
        for by_user in users.values()
        for user, events in by_user.items()
    }
    del titles
    gc.freeze()  # the users' millions of objects: out of the driver's collections (no pauses)
    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    client.close()
    seed_current(users)
    servers = [start_floor(), start_service("current", ROOT, bundles)]
    if args.baseline:
        seed_legacy(users)
        servers.append(start_service("baseline", baseline_tree(args.baseline), bundles))
    for variant in args.open_variants:  # open-loop only: label:ENV=VALUE,...
        label, _, assignments = variant.partition(":")
        extra = dict(pair.split("=", 1) for pair in assignments.split(",") if pair)
        servers.append(start_service(f"current {label}", ROOT, bundles, extra))
    closed = [s for s in servers if s.name in ("floor", "current", "baseline")]
    results: dict[str, Any] = {"recommendation": [], "search": [], "open_loop": {}}
    try:
        per_config = args.requests + args.warmup
        for length in [] if args.open_only else args.lengths:
            for k in args.ks:
                for exclude_seen in (True, False):
                    requests = list(bodies(users[length], k, exclude_seen, per_config))
                    row = {"history": length, "k": k, "exclude_seen": exclude_seen}
                    row["servers"] = measure(closed, requests, args.warmup)
                    log.info("recommendation %s: %s", row_key(row), brief(row["servers"]))
                    results["recommendation"].append(row)
        for length in [] if args.open_only else args.lengths:
            for channel in args.search_channels:
                extra: dict[str, Any] = {"query": queries.__getitem__, "scene": "search"}
                if channel != "merged":
                    extra["channels"] = [channel]
                requests = list(bodies(users[length], args.search_k, True, per_config, **extra))
                row = {"history": length, "k": args.search_k, "exclude_seen": True, "channel": channel}
                row["servers"] = measure(closed, requests, args.warmup)
                log.info("search %s %s: %s", channel, row_key(row), brief(row["servers"]))
                results["search"].append(row)
        n = int(args.open_rate * args.open_seconds)
        requests = list(bodies(users[args.open_history], args.open_k, True, n))
        for attempt in range(args.open_rounds):  # the servers' order alternating from round to round
            order = servers[1:] if attempt % 2 == 0 else servers[:0:-1]
            for server in order:
                warm(server, requests[: args.open_warmup])
                step = asyncio.run(open_loop(server.port, requests, args.open_rate))
                log.info("open loop %s round %d: %s", server.name, attempt, step)
                results["open_loop"].setdefault(server.name, []).append(
                    {"history": args.open_history, "k": args.open_k, "round": attempt, **step}
                )
    finally:
        for server in servers:
            server.process.terminate()
        for server in servers:
            server.process.wait(30)
    return results


# --- the report -------------------------------------------------------------------------------


def p50(row: dict[str, Any], server: str) -> float:
    return float(row["servers"][server]["p50_ms"])


def latency_cells(row: dict[str, Any], names: list[str]) -> list[str]:
    """A table row's cells: p50 / p99 of the floor and each server, then each server's p50 over
    the floor's."""
    cells = [
        f"{row['servers'][n]['p50_ms']:.2f} / {row['servers'][n]['p99_ms']:.2f}" for n in ["floor", *names]
    ]
    return cells + [f"{p50(row, n) / p50(row, 'floor'):.1f}x" for n in names]


def find(rows: list[dict[str, Any]], **match: Any) -> dict[str, Any]:
    return next(r for r in rows if all(r.get(key) == value for key, value in match.items()))


def open_loop_section(results: dict[str, Any]) -> list[str]:
    config = results["config"]
    if not results["open_loop"]:
        return []
    lines = [
        "",
        f"## Open loop: {config['open_rate']:g} requests/s for {config['open_seconds']:g} s"
        f" (history {config['open_history']} events, k={config['open_k']}, exclude_seen on)",
        "",
        "Sent on a fixed schedule by an asyncio httpx driver on the same 2 cores, each request timed from"
        " when it was due; each step follows a closed-loop warm-up; servers alternate from round to"
        " round.",
        "",
        "| server | round | p50 | p90 | p99 | max | non-200 |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for name, steps in results["open_loop"].items():
        for step in steps:
            lines.append(
                f"| {name} | {step['round']} | {step['p50_ms']:.1f} | {step['p90_ms']:.1f}"
                f" | {step['p99_ms']:.1f} | {step['max_ms']:.1f} | {step['errors'] or '-'} |"
            )
    return lines


def write_open_report(results: dict[str, Any]) -> str:
    run, config = results["provenance"], results["config"]
    variants = " ".join(config["open_variants"])
    lines = [
        "# Request cost: the open-loop steps alone",
        "",
        f"Generated by `python bench/request_curves.py --open-only --baseline {config['baseline']}"
        f" --open-variants {variants} --out-name {config['out_name']}` at commit {run['commit'][:10]},"
        f" {run['generated_at']}: the same 1M-item bundle and users as request_curves.md, with only"
        " the open-loop steps run (the closed-loop grid before them left out).",
        *open_loop_section(results),
    ]
    return "\n".join(lines) + "\n"


def write_report(results: dict[str, Any]) -> str:
    config, run = results["config"], results["provenance"]
    names = [n for n in ("current", "baseline") if n in results["recommendation"][0]["servers"]]
    lengths, ks = config["lengths"], config["ks"]
    rec = results["recommendation"]
    window = 500 if 500 in lengths else lengths[-1]
    longest = lengths[-1]
    baseline_flag = f" --baseline {config['baseline']}" if config["baseline"] else ""
    lines = [
        "# Request cost against history length",
        "",
        f"Generated by `python bench/request_curves.py{baseline_flag}`"
        f" at commit {run['commit'][:10]}{' (dirty)' if run.get('dirty') == 'true' else ''},"
        f" {run['generated_at']}. {config['items']:,} items (dim {config['dim']}), one uvicorn process"
        " per server on the same 2 shared cores, real Redis; every server answers the same request back"
        " to back (order rotating), one kept-alive connection each, closed loop;"
        f" {config['requests']} measured requests per row after {config['warmup']} warm-up,"
        f" {config['users']} users"
        " per history length (sessions of 10-20 exposures, ~15 % clicked, now and then carted or paid).",
        "",
        "Servers: **floor** — `bench/floor_app.py`, FastAPI parsing the service's own request model and"
        " answering k items with orjson, nothing else; **current** — this checkout (session records +"
        " seen set, bounded read); "
        + (
            f"**baseline** — `nsprecall serve` at {config['baseline']} (one JSON document per event,"
            " the whole"
            " history read and grouped per request, exclusions over-fetched as k + |seen|)."
            if "baseline" in names
            else ""
        ),
        "",
        "Noise: the rows are single runs; repeated runs of this bench moved p50s by ~5-10 % (the shared"
        " machine); the ratios between servers in one row are steadier than the absolute times.",
        "",
        "## The targets",
        "",
        f"The encoder reads 20 sessions; at 10-20 events a session, {window} events is the shortest measured"
        f" history that fills its window. Ratios of p50s measured in the same run:",
        "",
        "| k | exclude_seen | "
        + " | ".join(f"{n}: p50 {longest} / p50 {window} (≤ 1.3)" for n in names)
        + " | "
        + " | ".join(f"{n}: p50 {window} / floor (≤ 2.5)" for n in names)
        + " |",
        "| ---: | --- | " + " | ".join("---:" for _ in names * 2) + " |",
    ]
    for k in ks:
        for exclude in (True, False):
            long, base = (
                find(rec, history=longest, k=k, exclude_seen=exclude),
                find(rec, history=window, k=k, exclude_seen=exclude),
            )
            growth = [f"{p50(long, n) / p50(base, n):.2f}x" for n in names]
            floor = [f"{p50(base, n) / p50(base, 'floor'):.1f}x" for n in names]
            lines.append(f"| {k} | {'on' if exclude else 'off'} | " + " | ".join(growth + floor) + " |")
    lines += [
        "",
        "## Recommendation requests: p50 / p99 ms",
        "",
        "| history events | k | exclude_seen | floor | "
        + " | ".join(names)
        + " | "
        + " | ".join(f"{n} / floor" for n in names)
        + " |",
        "| ---: | ---: | --- | ---: | " + " | ".join("---:" for _ in names * 2) + " |",
    ]
    for row in rec:
        lines.append(
            f"| {row['history']} | {row['k']} | {'on' if row['exclude_seen'] else 'off'} | "
            + " | ".join(latency_cells(row, names))
            + " |"
        )
    lines += [
        "",
        "## Where the time goes (k=100): mean ms per request from each server's own /metrics",
        "",
        "Stages: `session_fetch` (store read and decoding), `encode` (tokens + ONNX), `ann`, `merge`,"
        " `postprocess`; channels run concurrently (their times overlap each other and the stages"
        " inside them), so the columns do not add up to the latency.",
        "",
    ]
    keys = sorted({key for row in rec for n in names for key in row["servers"][n].get("stages", {})})
    lines += [
        "| history | exclude_seen | server | " + " | ".join(key.replace(":", " ") for key in keys) + " |",
        "| ---: | --- | --- | " + " | ".join("---:" for _ in keys) + " |",
    ]
    for row in rec:
        if row["k"] != 100:
            continue
        for n in names:
            stages = row["servers"][n].get("stages", {})
            lines.append(
                f"| {row['history']} | {'on' if row['exclude_seen'] else 'off'} | {n} | "
                + " | ".join(f"{stages.get(key, 0.0):.2f}" for key in keys)
                + " |"
            )
    if results["search"]:
        lines += [
            "",
            f"## Search requests (k={config['search_k']}, exclude_seen on): p50 / p99 ms per channel",
            "",
            "A query of 1-3 words from the title of an item the user met; `channels` names one channel,"
            " `merged` runs every channel the bundle carries (nsp, history, i2i, popular, bm25, dense: this"
            " 1M-item bundle has no sid or gram side, whose training does not fit this machine at 1M).",
            "",
            "| channel | history | floor | "
            + " | ".join(names)
            + " | "
            + " | ".join(f"{n} / floor" for n in names)
            + " |",
            "| --- | ---: | ---: | " + " | ".join("---:" for _ in names * 2) + " |",
        ]
        for row in results["search"]:
            lines.append(
                f"| {row['channel']} | {row['history']} | " + " | ".join(latency_cells(row, names)) + " |"
            )
        lines += ["", f"Growth p50 {longest} / p50 {window} events per search channel:", ""]
        lines += [
            "| channel | " + " | ".join(names) + " |",
            "| --- | " + " | ".join("---:" for _ in names) + " |",
        ]
        for channel in config["search_channels"]:
            long, base = (
                find(results["search"], history=longest, channel=channel),
                find(results["search"], history=window, channel=channel),
            )
            lines.append(
                f"| {channel} | " + " | ".join(f"{p50(long, n) / p50(base, n):.2f}x" for n in names) + " |"
            )
    lines += open_loop_section(results)
    return "\n".join(lines) + "\n"


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    config = results["config"]
    names = [n for n in ("floor", "current", "baseline") if n in results["recommendation"][0]["servers"]]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    for ax, exclude in zip(axes[:2], (True, False), strict=True):
        for name in names:
            for k, style in zip(config["ks"], ("-", "--", ":"), strict=False):
                rows = [r for r in results["recommendation"] if r["k"] == k and r["exclude_seen"] == exclude]
                ax.plot(
                    [r["history"] for r in rows],
                    [p50(r, name) for r in rows],
                    style,
                    color=COLORS[name],
                    marker="o",
                    label=f"{name} k={k}",
                )
        ax.set(
            xscale="log",
            xlabel="stored events per user",
            ylabel="p50 ms",
            title=f"recommendation, exclude_seen {'on' if exclude else 'off'}",
        )
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    for name in names:
        for channel, style in zip(config["search_channels"], ("-", "--", ":", "-."), strict=False):
            rows = [r for r in results["search"] if r["channel"] == channel]
            if rows:
                axes[2].plot(
                    [r["history"] for r in rows],
                    [p50(r, name) for r in rows],
                    style,
                    color=COLORS[name],
                    marker="o",
                    label=f"{name} {channel}",
                )
    axes[2].set(xscale="log", xlabel="stored events per user", ylabel="p50 ms", title="search, per channel")
    axes[2].grid(alpha=0.3)
    axes[2].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def row_key(row: dict[str, Any]) -> str:
    return f"history={row['history']} k={row['k']} exclude_seen={row['exclude_seen']}"


def brief(servers: dict[str, dict[str, Any]]) -> str:
    return ", ".join(f"{name} p50 {s['p50_ms']:.2f} p99 {s['p99_ms']:.2f}" for name, s in servers.items())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument(
        "--lengths", nargs="*", type=int, default=[20, 100, 500, 2000], help="events per user"
    )
    parser.add_argument("--ks", nargs="*", type=int, default=[10, 100, 500])
    parser.add_argument("--users", type=int, default=100, help="users per history length")
    parser.add_argument("--requests", type=int, default=300, help="measured requests per configuration")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--search-k", type=int, default=100)
    parser.add_argument("--search-channels", nargs="*", default=["bm25", "dense", "nsp", "merged"])
    parser.add_argument("--open-rate", type=float, default=200.0)
    parser.add_argument("--open-seconds", type=float, default=20.0)
    parser.add_argument("--open-history", type=int, default=500)
    parser.add_argument("--open-rounds", type=int, default=4, help="open-loop steps per server")
    parser.add_argument("--open-warmup", type=int, default=1000, help="closed-loop requests before a step")
    parser.add_argument(
        "--open-variants",
        nargs="*",
        default=[],
        help="label:ENV=VALUE,... more current servers, open loop only",
    )
    parser.add_argument("--open-only", action="store_true", help="only the open-loop steps")
    parser.add_argument("--open-k", type=int, default=100)
    parser.add_argument(
        "--baseline", help="a git revision to serve beside this checkout (its own store layout)"
    )
    parser.add_argument("--out-name", default="request_curves")
    parser.add_argument("--out-dir", type=Path, default=OUT)
    parser.add_argument("--report-only", action="store_true", help="rewrite the .md and .png from the .json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    out = args.out_dir / f"{args.out_name}.json"
    if args.report_only:
        results = json.loads(out.read_text())
    else:
        results = {"provenance": provenance(), "config": vars(args), **run(args)}
        args.out_dir.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2, default=str))
    if results["config"].get("open_only"):
        (args.out_dir / f"{args.out_name}.md").write_text(write_open_report(results))
    else:
        (args.out_dir / f"{args.out_name}.md").write_text(write_report(results))
        plot(results, args.out_dir / f"{args.out_name}.png")
    log.info("wrote %s and its .md and .png", out)


if __name__ == "__main__":
    main()
