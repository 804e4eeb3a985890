"""`make run`'s serving half for real: `nsprecall demo` on an existing bundle starts its own
redis-server, seeds it, prints a curl that works, and takes that redis-server down with it."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from cli_helpers import CLI, ROOT, free_port


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server on PATH")
def test_demo_prints_a_working_curl_and_cleans_up(bundle_root: Path, world: Path, tmp_path: Path) -> None:
    (tmp_path / "demo").mkdir()
    shutil.copytree(world, tmp_path / "demo" / "data")
    shutil.copytree(bundle_root / "1", tmp_path / "bundles" / "1")
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "NSP_REDIS_URL")}
    port = free_port()
    args = [*CLI, "demo", "--demo-dir", str(tmp_path / "demo"), "--bundles", str(tmp_path / "bundles")]
    process = subprocess.Popen(
        [*args, "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + 120
        line = ""
        while time.monotonic() < deadline and "curl" not in line:
            line = process.stdout.readline()
        assert "curl" in line, "demo never printed its curl"
        command = shlex.split(line.strip())
        url = command[command.index("-X") + 2]
        body = command[command.index("-d") + 1]
        response = httpx.post(
            url, content=body, headers={"content-type": "application/json"}, timeout=10
        ).json()
        assert response["source"] == "model" and response["bundle_version"] == 1
        assert len(response["items"]) == 10
        redis_children = subprocess.run(
            ["pgrep", "-P", str(process.pid), "redis-server"], capture_output=True
        )
        child_pids = [int(p) for p in redis_children.stdout.split()]
        assert len(child_pids) == 1, "demo should run a private redis-server"
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=20)
    time.sleep(0.5)
    for pid in child_pids:
        assert (
            not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()
        )
