"""The locust load mix (loadtest/locustfile.py) through its runner (loadtest/run.py, what `make
loadtest` runs), briefly, against a real `nsprecall serve` on a real bundle and Redis: no
request may fail, and the CSV stats must be written with every request type in them."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

from cli_helpers import ROOT, serve_process

SEED_USERS = 40
REQUEST_NAMES = {"recall known", "recall unknown", "recall cold", "events"}


def test_a_short_load_run_has_no_failures(
    bundle_root: Path, world: Path, redis_url: str, tmp_path: Path
) -> None:
    bundles = tmp_path / "bundles"
    shutil.copytree(bundle_root / "1", bundles / "1")
    out = tmp_path / "loadtest"
    seed = ["--seed-events", str(world / "events.csv"), "--seed-users", str(SEED_USERS)]
    with serve_process(bundles, redis_url, *seed, log_path=tmp_path / "server.log") as client:
        env = {
            **os.environ,
            "LOADTEST_EVENTS": str(world / "events.csv"),
            "LOADTEST_SEED_USERS": str(SEED_USERS),
        }
        env.pop("LOADTEST_HOST", None)
        command = [
            sys.executable,
            str(ROOT / "loadtest" / "run.py"),
            "--host",
            str(client.base_url).rstrip("/"),
        ]
        command += ["--time", "8s", "--users", "4", "--spawn-rate", "4", "--out", str(out)]
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    with (out / "nsp_stats.csv").open(newline="") as f:
        rows = {row["Name"]: row for row in csv.DictReader(f)}
    assert REQUEST_NAMES | {"Aggregated"} <= set(rows)
    for name in REQUEST_NAMES | {"Aggregated"}:
        assert int(rows[name]["Request Count"]) > 0, name
        assert int(rows[name]["Failure Count"]) == 0, name
    assert (out / "nsp_failures.csv").is_file() and (out / "nsp_stats_history.csv").is_file()
