"""Where one recall's time goes: py-spy samples (every thread: the event loop and the CPU pool)
over many requests of one shape through the real app (ASGI, in process), real Redis, the
1M-item bundle of ``bench/serving.py``.

    python bench/request_profile.py --label after [--history 500 --k 100]

Writes ``docs/benchmarks/request_profile_<label>.svg`` (a flame graph) and ``….md`` (the
functions with the most samples, own and inclusive, as a share of all samples). Run with
``NSP_PROFILE_TREE=<tree>`` it profiles that tree's code with that tree's store layout
(``bench/request_curves.py`` serves a baseline the same way). py-spy attaches to this process,
so it needs ptrace rights (root, or ``kernel.yama.ptrace_scope`` 0).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

if tree := os.environ.get("NSP_PROFILE_TREE"):
    sys.path.insert(0, tree)  # that tree's service and index, imported before serving.py's path

import httpx
import numpy as np
import redis

from service.app import create_app
from service.settings import Settings
from service.store import RedisSessionStore

from request_curves import STORE_CAP, make_users  # isort: skip
from serving import REDIS_URL, Popularity, bundle_root  # isort: skip

OUT = Path(__file__).resolve().parent.parent / "docs" / "benchmarks"
PREFIX = "nspprofile"


async def profile(args: argparse.Namespace) -> dict[str, float]:
    users = make_users([args.history], args.users, Popularity(args.items))[args.history]
    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(match=f"{PREFIX}:*"):
        client.delete(key)
    client.close()
    store = RedisSessionStore(REDIS_URL, key_prefix=PREFIX, max_events=STORE_CAP, timeout_s=10.0)
    for events in users.values():
        await store.append(events)
    await store.close()
    settings = Settings(
        bundle_root=bundle_root(args.items, 64, "clustered", 100, True),
        redis_url=REDIS_URL,
        store_key_prefix=PREFIX,
        store_max_events=STORE_CAP,
        log_level="warning",
    )
    app = create_app(settings)
    names = list(users)
    bodies = [
        {"user_id": names[i % len(names)], "k": args.k, "exclude_seen": True} for i in range(args.requests)
    ]
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://nsp") as http,
    ):
        for body in bodies[:50]:  # warm-up: first-call costs out of the profile
            (await http.post("/v1/recall", json=body)).raise_for_status()
        timings = {}
        for output in ("flamegraph", "raw"):
            path = OUT / f"request_profile_{args.label}.{'svg' if output == 'flamegraph' else 'txt'}"
            with sampling(path, output, args.rate):
                started = time.perf_counter()
                for body in bodies:
                    (await http.post("/v1/recall", json=body)).raise_for_status()
                timings[output] = 1000 * (time.perf_counter() - started) / len(bodies)
    return timings


class sampling:
    """py-spy recording this process while the block runs."""

    def __init__(self, path: Path, output: str, rate: int) -> None:
        self._command = [
            str(Path(sys.executable).with_name("py-spy")), "record", "--pid", str(os.getpid()),
            "--rate", str(rate), "--format", output, "--output", str(path), "--nonblocking",
        ]  # fmt: skip
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> None:
        self._process = subprocess.Popen(self._command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(2.0)  # attached and sampling

    def __exit__(self, *exc: object) -> None:
        assert self._process is not None
        self._process.send_signal(signal.SIGINT)
        _, err = self._process.communicate(timeout=120)
        if self._process.returncode not in (0, -signal.SIGINT):
            raise RuntimeError(f"py-spy failed: {err.decode()[-500:]}")


def table(raw: Path, top: int) -> tuple[int, list[tuple[str, float, float]]]:
    """(samples, [(function, own share, inclusive share)]) from py-spy's collapsed stacks; the
    sampler's own frames (this module's loop) are left out of the own shares as idle."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = [
            frame.split(" (")[0] + " (" + frame.split(" (")[-1].split(":")[0].rsplit("/", 1)[-1] + ")"
            for frame in stack.split(";")
        ]
        n = int(count)
        total += n
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    rows = [(name, own[name] / total, inclusive[name] / total) for name, _ in own.most_common(top)]
    return total, rows


def report(args: argparse.Namespace, timings: dict[str, float]) -> str:
    samples, rows = table(OUT / f"request_profile_{args.label}.txt", args.top)
    lines = [
        f"# Request profile: {args.label}",
        "",
        f"{args.requests} recalls (history {args.history} events, k={args.k}, exclude_seen) through the "
        f"app in one process, twice under py-spy at {args.rate} Hz (every thread, idle time left "
        f"out): {timings['flamegraph']:.2f} / {timings['raw']:.2f} ms a request while sampled; "
        f"{samples} samples in the table's run. Flame graph: request_profile_{args.label}.svg.",
        "",
        "| function (file) | own | inclusive |",
        "| --- | ---: | ---: |",
        *(f"| `{name}` | {own:.1%} | {inclusive:.1%} |" for name, own, inclusive in rows),
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--label", required=True)
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--history", type=int, default=500)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--rate", type=int, default=500, help="py-spy samples per second")
    args = parser.parse_args()
    np.random.seed(0)
    OUT.mkdir(parents=True, exist_ok=True)
    timings = asyncio.run(profile(args))
    text = report(args, timings)
    (OUT / f"request_profile_{args.label}.md").write_text(text)
    (OUT / f"request_profile_{args.label}.txt").unlink()  # the raw stacks: large, summarised above
    print(text)


if __name__ == "__main__":
    main()
