"""``make loadtest``: run loadtest/locustfile.py headless for a bounded time and write its CSV
stats, against ``--host`` (or ``LOADTEST_HOST``) or, with neither, against a local
``nsprecall demo`` started here (it builds the demo bundle first if there is none) and
stopped afterwards. Exits with locust's status: non-zero when any request failed."""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCUSTFILE = ROOT / "loadtest" / "locustfile.py"
CSV_PREFIX = "nsp"
DEMO_READY_TIMEOUT_S = 900.0  # the first demo trains its bundle (minutes on two cores)


def locust_command(host: str, run_time: str, users: int, spawn_rate: float, out: Path) -> list[str]:
    return [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
        "--host", host, "--users", str(users), "--spawn-rate", str(spawn_rate),
        "--run-time", run_time, "--stop-timeout", "5", "--only-summary",
        "--csv", str(out / CSV_PREFIX),
    ]  # fmt: skip


def ready(host: str) -> bool:
    try:
        with urllib.request.urlopen(f"{host}/readyz", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def start_demo(port: int, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    host = f"http://127.0.0.1:{port}"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "nsprecall.cli", "demo", "--port", str(port)],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    print(f"starting nsprecall demo on {host} (log: {log}); the first run trains its bundle", flush=True)
    deadline = time.monotonic() + DEMO_READY_TIMEOUT_S
    while not ready(host):
        if process.poll() is not None or time.monotonic() > deadline:
            process.terminate()
            sys.exit(f"the demo service did not become ready; see {log}")
        time.sleep(1)
    return process, host


def summary(out: Path) -> str:
    with (out / f"{CSV_PREFIX}_stats.csv").open(newline="") as f:
        rows = {row["Name"]: row for row in csv.DictReader(f)}
    total = rows["Aggregated"]
    lines = [f"{'request':16}{'count':>8}{'failed':>8}{'p50 ms':>8}{'p99 ms':>8}"]
    for name, row in rows.items():
        lines.append(
            f"{name:16}{row['Request Count']:>8}{row['Failure Count']:>8}{row['50%']:>8}{row['99%']:>8}"
        )
    lines.append(f"{total['Requests/s']} requests/s; CSV stats in {out}/{CSV_PREFIX}_*.csv")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default=os.environ.get("LOADTEST_HOST") or None)
    parser.add_argument("--time", default=os.environ.get("LOADTEST_TIME", "60s"), help="e.g. 60s, 5m")
    parser.add_argument("--users", type=int, default=int(os.environ.get("LOADTEST_USERS", "20")))
    parser.add_argument("--spawn-rate", type=float, default=5.0)
    parser.add_argument("--out", type=Path, default=ROOT / "var" / "loadtest")
    parser.add_argument("--demo-port", type=int, default=8000)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    demo = None
    host = args.host
    if host is None:
        demo, host = start_demo(args.demo_port, args.out / "demo.log")
    try:
        command = locust_command(host, args.time, args.users, args.spawn_rate, args.out)
        done = subprocess.run(command, cwd=ROOT, check=False)
    finally:
        if demo is not None:
            demo.terminate()
            demo.wait(timeout=30)
    if (args.out / f"{CSV_PREFIX}_stats.csv").is_file():
        print(summary(args.out))
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
