"""Real `redis-server` processes a test owns: one on a free port that can be killed, hung and
restarted on the same port, or three started as a Redis Cluster."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
import redis
from cli_helpers import free_port

REDIS_SERVER = shutil.which("redis-server")
REDIS_CLI = shutil.which("redis-cli")


def need_redis_server() -> None:
    if REDIS_SERVER is None or REDIS_CLI is None:
        pytest.skip("redis-server / redis-cli are not installed")


class RedisServer:
    """`redis-server` with ``args`` on ``port``, its files in ``directory``; ``start`` waits until
    it answers PING (through ``client_args`` for TLS or a password)."""

    def __init__(self, directory: Path, args: Sequence[str] = (), *, port: int | None = None) -> None:
        need_redis_server()
        self.port = port if port is not None else free_port()
        self.directory = directory
        self.args = list(args)
        self.process: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, *, ping_url: str | None = None, **client_args: object) -> None:
        assert REDIS_SERVER is not None
        command = [
            REDIS_SERVER,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.directory),
        ]
        command += ["--daemonize", "no", "--save", "", "--logfile", str(self.directory / "redis.log")]
        self.process = subprocess.Popen(
            [*command, *self.args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        client = redis.Redis.from_url(ping_url or self.url, socket_timeout=0.5, **client_args)
        deadline = time.monotonic() + 10
        try:
            while True:
                try:
                    if client.ping():
                        return
                except redis.RedisError:
                    pass
                if self.process.poll() is not None or time.monotonic() > deadline:
                    log = (self.directory / "redis.log").read_text(errors="replace")[-2000:]
                    raise AssertionError(f"redis-server on port {self.port} did not start:\n{log}")
                time.sleep(0.05)
        finally:
            client.close()

    def kill(self) -> None:
        """SIGKILL: a crash, no shutdown save."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=10)
        self.process = None

    def pause(self) -> None:
        """SIGSTOP: a hung server that still accepts TCP connections but never answers."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None


@contextmanager
def running(server: RedisServer, **start_args: object) -> Iterator[RedisServer]:
    try:
        server.start(**start_args)
        yield server
    finally:
        server.stop()


@contextmanager
def redis_cluster(directory: Path, masters: int = 3) -> Iterator[list[RedisServer]]:
    """``masters`` cluster-mode servers joined into one cluster (no replicas), state ok."""
    assert REDIS_CLI is not None
    with ExitStack() as stack:
        nodes = []
        for i in range(masters):
            node_dir = directory / f"node{i}"
            port = free_port()
            args = ["--cluster-enabled", "yes", "--cluster-config-file", str(node_dir / f"nodes-{port}.conf")]
            # The bus port defaults to port + 10000, too high for most free ports.
            args += ["--cluster-port", str(free_port())]
            args += ["--appendonly", "no", "--cluster-node-timeout", "2000"]
            nodes.append(stack.enter_context(running(RedisServer(node_dir, args, port=port))))
        addresses = [f"127.0.0.1:{node.port}" for node in nodes]
        subprocess.run(
            [REDIS_CLI, "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=30,
        )
        deadline = time.monotonic() + 20
        for node in nodes:
            client = redis.Redis(port=node.port, socket_timeout=1)
            try:
                while client.execute_command("CLUSTER INFO").get("cluster_state") != "ok":
                    assert time.monotonic() < deadline, "the cluster never reached cluster_state:ok"
                    time.sleep(0.1)
            finally:
                client.close()
        yield nodes
