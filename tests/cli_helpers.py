"""Running the real `nsprecall` command line and finding free ports, for integration tests."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "nsprecall.cli"]


def run_cli(*args: str, cwd: Path = ROOT) -> str:
    done = subprocess.run([*CLI, *args], cwd=cwd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"nsprecall {args[0]} failed:\n{done.stderr[-3000:]}"
    return done.stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
