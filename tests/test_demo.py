"""`make run`'s serving half for real: `nsprecall demo` on an existing bundle starts its own
redis-server, seeds it, prints a recommendation and a search curl that work and the console's
address with an admin token that works, and takes that redis-server down with it."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from cli_helpers import CLI, ROOT, free_port


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server on PATH")
def test_demo_prints_working_curls_and_cleans_up(
    search_bundle_root: Path, search_world: Path, tmp_path: Path
) -> None:
    (tmp_path / "demo").mkdir()
    shutil.copytree(search_world, tmp_path / "demo" / "data")
    shutil.copytree(search_bundle_root / "1", tmp_path / "bundles" / "1")
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "NSP_REDIS_URL", "NSP_ADMIN_TOKEN")}
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
        curls: list[str] = []
        console = ""
        while time.monotonic() < deadline and not (len(curls) == 2 and console):
            line = process.stdout.readline()
            if "curl" in line:
                curls.append(line)
            elif "console" in line:
                console = line
        assert len(curls) == 2, "demo never printed its two curls"
        recommend, search = (answer(line) for line in curls)
        assert recommend["source"] == "model" and recommend["bundle_version"] == 1
        assert len(recommend["items"]) == 10 and recommend["scenario"] == "recommendation"
        assert search["scenario"] == "search" and len(search["items"]) == 10
        assert {"bm25", "dense"} <= set(search["answered_channels"])
        assert any({"bm25", "dense"} & set(item["channels"]) for item in search["items"])
        base = shlex.split(curls[0])[shlex.split(curls[0]).index("-X") + 2].rsplit("/v1/", 1)[0]
        summary = httpx.get(f"{base}/v1/bundle", timeout=10).json()
        assert summary["query_pieces"] > 0 and summary["text"]["bm25"] and summary["text"]["dense"]
        assert "search:exclude_seen" in summary["channels"]["fusion"]
        # The console is on, with a fresh admin token printed beside its address.
        found = re.search(r"(http://\S+/ui) \(admin token: (\S+)\)", console)
        assert found, f"no console address in {console!r}"
        page = httpx.get(found.group(1), timeout=10)
        assert page.status_code == 200 and "console.js" in page.text
        admin = f"{base}/v1/admin/bundle"
        assert httpx.get(admin, timeout=10).status_code == 401
        authorized = httpx.get(admin, headers={"Authorization": f"Bearer {found.group(2)}"}, timeout=10)
        assert authorized.status_code == 200 and authorized.json()["version"] == 1
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


def answer(curl_line: str) -> dict[str, Any]:
    """Run a printed curl command's request with httpx."""
    command = shlex.split(curl_line.strip())
    url = command[command.index("-X") + 2]
    body = command[command.index("-d") + 1]
    response = httpx.post(url, content=body, headers={"content-type": "application/json"}, timeout=10)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result
