"""The request bodies the scenarios send, and one POST to check an answer."""

from __future__ import annotations

import http.client
import json
import random
from dataclasses import dataclass

from .constants import HOST, MLP_SIZES


@dataclass(frozen=True)
class Body:
    """A request body with its content type and the Accept header to send."""

    name: str
    data: bytes
    content_type: str
    accept: str = "application/json"

    def headers(self) -> dict[str, str]:
        """The request headers that go with this body."""
        return {"Content-Type": self.content_type, "Accept": self.accept}


def make_bodies() -> dict[str, Body]:
    """Every body by name: the echo dict, one MLP row as JSON and MessagePack, a small dict."""
    import msgpack

    gen = random.Random(1)
    row = {"x": [round(gen.gauss(0.0, 1.0), 4) for _ in range(MLP_SIZES[0])]}
    echo = {"model": "echo", "id": 12345, "values": [1, 2, 3], "ok": True}
    as_json = json.dumps(row, separators=(",", ":")).encode()
    return {
        "echo": Body("echo", json.dumps(echo).encode(), "application/json"),
        "row_json": Body("row_json", as_json, "application/json"),
        "row_msgpack": Body(
            "row_msgpack", msgpack.packb(row), "application/msgpack", "application/msgpack"
        ),
        "small": Body("small", json.dumps({"id": 1}).encode(), "application/json"),
    }


BODIES: dict[str, Body] = {}  # filled by the command line before any scenario runs


def post(port: int, body: Body, path: str = "/", timeout: float = 10.0) -> tuple[int, bytes]:
    """POST ``body`` to ``path`` and return the status and the answer."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("POST", path, body=body.data, headers=body.headers())
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()
