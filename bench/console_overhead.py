"""What the retrieval console costs ``/v1/recall`` when nobody uses it: the serving benchmark's
bundle and users, two real ``nsprecall serve`` processes side by side, one with the console off
(the default) and one with it on, driven request by request in alternation.

    .venv/bin/python bench/console_overhead.py [--items 1000000] [--requests 1500] [--rounds 3]

1. The bundle is ``bench/serving.py``'s (published once through the real publish path and
   cached under ``var/bench/serving/``: 1M items by default, an untrained 64-d encoder, an i2i
   table, no search side); users with 20 sessions each are written to a real Redis as there.
2. Three servers load the same bundle: ``NSP_CONSOLE_ENABLED`` false, false again (the
   control: how much two identical processes differ) and true, everything else equal. All are
   up for the whole run, so they share the machine alike.
3. One client, one connection per server, closed loop: each request (a random user, ``k``) is
   sent to every server back to back, the order rotating from one request to the next, so
   drift and noise from the shared two cores fall on all. ``--rounds`` rounds of
   ``--requests`` requests; p50/p90/p99 per round and pooled, and the on/off p50 ratio per
   round, which is this run's noise.

Writes ``docs/benchmarks/console.{json,md,png}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from benchlib import free_port, latency_summary, provenance

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from serving import (  # noqa: E402
    Popularity,
    build_bundle,
    bundle_root,
    make_events,
    seed_redis,
    start_server,
)

from index.features import Event  # noqa: E402
from index.i2i import I2IParams  # noqa: E402

log = logging.getLogger("bench.console_overhead")

OUT = ROOT / "docs" / "benchmarks"
# The second "off" process is the control: two identical processes differ by this much.
VARIANTS = {
    "console off (default)": "false",
    "console off, second process": "false",
    "console on, unused": "true",
}
OFF, CONTROL, ON = VARIANTS


def drive(ports: dict[str, int], users: int, k: int, requests: int, seed: int) -> dict[str, list[float]]:
    """Seconds per request for each variant, over the same ``requests`` requests."""
    rng = random.Random(seed)
    clients = {
        name: httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) for name, port in ports.items()
    }
    latencies: dict[str, list[float]] = {name: [] for name in ports}
    names = list(ports)
    try:
        for i in range(requests):
            body = {"user_id": f"u{rng.randrange(users)}", "k": k}
            shift = i % len(names)
            for name in names[shift:] + names[:shift]:
                started = time.perf_counter()
                response = clients[name].post("/v1/recall", json=body)
                elapsed = time.perf_counter() - started
                if response.status_code != 200 or len(response.json()["items"]) != k:
                    raise RuntimeError(f"{name}: {response.status_code} {response.text[:200]}")
                latencies[name].append(elapsed)
    finally:
        for client in clients.values():
            client.close()
    return latencies


def measure(bundles: Path, args: argparse.Namespace) -> dict[str, Any]:
    servers, ports = [], {}
    try:
        for name, enabled in VARIANTS.items():
            port = free_port()
            servers.append(start_server(bundles, port, {"NSP_CONSOLE_ENABLED": enabled}))
            ports[name] = port
        on = ports[ON]
        if httpx.get(f"http://127.0.0.1:{on}/ui", timeout=10).status_code != 200:
            raise RuntimeError("the console-on server does not serve /ui")
        drive(ports, args.users, args.k, 200, seed=0)  # warm-up: connections, caches, allocator
        rounds = []
        pooled_raw: dict[str, list[float]] = {name: [] for name in ports}
        for r in range(args.rounds):
            latencies = drive(ports, args.users, args.k, args.requests, seed=r + 1)
            rounds.append({name: latency_summary(values) for name, values in latencies.items()})
            log.info("round %d: %s", r + 1, json.dumps(rounds[-1]))
            for name, values in latencies.items():
                pooled_raw[name].extend(values)
        pooled = {name: latency_summary(values) for name, values in pooled_raw.items()}
        return {"rounds": rounds, "pooled": pooled}
    finally:
        for server in servers:
            server.terminate()
            server.wait(30)


async def seed_users(users: dict[str, list[Event]]) -> None:
    store = await seed_redis(users)
    await store.close()


def write_report(results: dict[str, Any]) -> str:
    c, run = results["config"], results["provenance"]
    lines = [
        "# Serving: what the console costs when unused",
        "",
        f"Generated by `bench/console_overhead.py`; do not edit by hand. Run of {run['generated_at']} "
        f"at commit {run['commit']}{' with uncommitted changes' if run['dirty'] else ''}. "
        f"`bench/serving.py`'s bundle: {c['items']:,} items, dim {c['dim']}, no search side; "
        f"{c['users']} users with {c['sessions']} sessions each in a real Redis; k = {c['k']}, every "
        "channel the bundle carries (nsp, history, i2i, popular), seen items excluded (the default). "
        "Three real `nsprecall serve` processes on the same bundle: two with the console off (the "
        "second one measures how much two identical processes differ) and one with it on "
        "(`NSP_CONSOLE_ENABLED`), all up for the whole run; one client sends each request to all "
        "three, back to back, the order rotating, one connection per server, "
        f"{c['rounds']} rounds of {c['requests']} requests after 200 warm-up requests. "
        "Machine: 2 CPUs shared by both servers and the client.",
        "",
        "| variant | "
        + " | ".join(f"round {i + 1} p50 / p99 ms" for i in range(c["rounds"]))
        + " | pooled p50 | p90 | p99 ms |",
        "|---|" + "---|" * c["rounds"] + "---|---|---|",
    ]
    for name in VARIANTS:
        per_round = " | ".join(
            f"{r[name]['p50_ms']:.3f} / {r[name]['p99_ms']:.3f}" for r in results["rounds"]
        )
        p = results["pooled"][name]
        lines.append(f"| {name} | {per_round} | {p['p50_ms']:.3f} | {p['p90_ms']:.3f} | {p['p99_ms']:.3f} |")
    lines.append("")
    for label, name in (("console on / off", ON), ("control: second off process / off", CONTROL)):
        ratios = [r[name]["p50_ms"] / r[OFF]["p50_ms"] for r in results["rounds"]]
        pooled = results["pooled"][name]["p50_ms"] / results["pooled"][OFF]["p50_ms"]
        per_round = ", ".join(f"{ratio:.3f}x" for ratio in ratios)
        lines.append(f"- p50 {label}: **{pooled:.3f}x** pooled ({per_round} per round)")
    lines += [
        "",
        "The control row is the noise floor of this comparison: two processes with identical "
        "settings differ by that much. The console is a router added after the API's routes: a "
        "`/v1/recall` request matches before reaching it, and no middleware or background task "
        "comes with it.",
    ]
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.8))
    rounds = results["rounds"]
    width = 0.27
    for offset, name in zip((-width, 0.0, width), VARIANTS, strict=True):
        xs = [i + offset for i in range(len(rounds))]
        ax.bar(xs, [r[name]["p50_ms"] for r in rounds], width, label=f"{name} p50")
        ax.scatter(xs, [r[name]["p99_ms"] for r in rounds], marker="_", s=300, color="black")
    ax.set_xticks(range(len(rounds)), [f"round {i + 1}" for i in range(len(rounds))])
    ax.set_ylabel("ms per /v1/recall (bar p50, tick p99)")
    ax.set_title("/v1/recall with the console off and on (unused), same run")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--k", type=int, default=200)
    parser.add_argument("--requests", type=int, default=1500, help="requests per round, each to both servers")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out-dir", type=Path, default=OUT)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    run = provenance()
    neighbours = I2IParams().neighbours
    popularity = Popularity(args.items)
    bundles = bundle_root(args.items, args.dim, "clustered", neighbours, search=False)
    # serving.py's defaults (i2i sweep up to 200 neighbours, 4M engaged rows): the same cached bundle.
    build_bundle(bundles, args.items, args.dim, "clustered", popularity, neighbours, 200, 4_000_000, False)
    asyncio.run(seed_users(make_events(args.users, args.sessions, popularity)))
    results = {
        "provenance": run,
        "config": vars(args) | {"out_dir": str(args.out_dir)},
        **measure(bundles, args),
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "console.json").write_text(json.dumps(results, indent=2, default=str))
    report = write_report(results)
    (args.out_dir / "console.md").write_text(report + "\n")
    plot(results, args.out_dir / "console.png")
    print(report)


if __name__ == "__main__":
    main()
