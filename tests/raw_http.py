"""HTTP/1.1 over a plain socket, for tests that need what a client library hides: a request left
half-sent (in flight on the server), a body announced but never sent, chunked uploads."""

from __future__ import annotations

import http.client
import json
import socket
from dataclasses import dataclass
from typing import Any


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def port_of(base_url: str) -> int:
    return int(base_url.rsplit(":", 1)[1])


def send_head(port: int, path: str, headers: dict[str, str], timeout: float = 10) -> socket.socket:
    """Connects and sends a POST's request line and headers only."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in headers.items())]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    return sock


def start_json_post(port: int, path: str, payload: object, sent: int = 1) -> tuple[socket.socket, bytes]:
    """A JSON POST with only its first ``sent`` body bytes sent: the server holds it in flight.
    Returns the socket and the rest of the body (send it with ``sock.sendall``)."""
    body = json.dumps(payload).encode()
    sock = send_head(port, path, {"Content-Type": "application/json", "Content-Length": str(len(body))})
    sock.sendall(body[:sent])
    return sock, body[sent:]


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def read_answer(sock: socket.socket) -> Answer:
    response = http.client.HTTPResponse(sock)
    response.begin()
    body = response.read()
    headers = {k.lower(): v for k, v in response.getheaders()}
    return Answer(response.status, headers, body)
