"""Call a predictor in-process, through the same app the server runs, with no server.

For users' own tests and for ``openbayes-serving predict``::

    from openbayes_serving.testing import LocalClient

    def test_echo():
        with LocalClient(Predictor) as client:
            assert client.post(json={"x": 1}).json() == {"x": 1}
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

import msgpack
import orjson

from .settings import environ_snapshot, resolve_settings


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nothing listens on right now (for tests and benchmarks)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def http_scope(
    method: str, path: str, headers: list[tuple[bytes, bytes]], query_string: bytes = b""
) -> dict[str, Any]:
    """The ASGI scope of an HTTP request from 127.0.0.1, as a server would pass it."""
    return {
        "type": "http",
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": query_string,
        "headers": headers,
        "client": ("127.0.0.1", 0),
        "server": ("127.0.0.1", 0),
    }


class LocalResponse:
    """What the app answered: status, headers (lower-case names), body."""

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status_code = status
        self.headers = headers
        self.body = body

    @property
    def content_type(self) -> str:
        """The answer's Content-Type."""
        return self.headers.get("content-type", "")

    def json(self) -> Any:
        """The body decoded from JSON or MessagePack, by its content type."""
        if "msgpack" in self.content_type:
            return msgpack.unpackb(self.body, raw=False)
        return orjson.loads(self.body)

    @property
    def text(self) -> str:
        """The body decoded as UTF-8."""
        return self.body.decode("utf-8")


class LocalClient:
    """Build the app for ``predictor_cls`` in this process and send it requests.

    Keyword arguments are settings, as for ``serv.run``.

    Raises:
        StartupError: the class breaks the convention or its ``__init__`` fails.
    """

    def __init__(self, predictor_cls: type, **settings: Any) -> None:
        from .app import load_app  # the app loads only for a LocalClient
        from .predictor import inspect_predictor

        resolved = resolve_settings(settings, [], environ_snapshot())
        self.app = load_app(inspect_predictor(predictor_cls, resolved), resolved)
        self._loop = asyncio.new_event_loop()

    def __enter__(self) -> LocalClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the model threads."""
        self.app.lifecycle.shutdown()
        self._loop.close()

    def post(
        self,
        json: Any = None,
        data: bytes | None = None,
        *,
        content_type: str | None = None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, Any] | None = None,
        msgpack_body: bool = False,
    ) -> LocalResponse:
        """POST / with a JSON (or MessagePack) value, or raw bytes."""
        if json is not None:
            data = msgpack.packb(json) if msgpack_body else orjson.dumps(json)
            content_type = content_type or (
                "application/msgpack" if msgpack_body else "application/json"
            )
        all_headers = dict(headers or {})
        if content_type:
            all_headers["content-type"] = content_type
        return self.request("POST", "/", data or b"", all_headers, params)

    def get(self, path: str = "/", headers: Mapping[str, str] | None = None) -> LocalResponse:
        """GET a path (/, /healthz, /readyz, /metrics)."""
        return self.request("GET", path, b"", dict(headers or {}), None)

    def request(
        self,
        method: str,
        path: str,
        body: bytes,
        headers: Mapping[str, str],
        params: Mapping[str, Any] | None,
    ) -> LocalResponse:
        """Send one request through the ASGI app and collect the whole answer."""
        return self._loop.run_until_complete(self._call(method, path, body, headers, params))

    async def _call(
        self,
        method: str,
        path: str,
        body: bytes,
        headers: Mapping[str, str],
        params: Mapping[str, Any] | None,
    ) -> LocalResponse:
        raw = [(k.lower().encode("latin-1"), str(v).encode("latin-1")) for k, v in headers.items()]
        raw.append((b"content-length", str(len(body)).encode()))
        scope = http_scope(method, path, raw, urlencode(params or {}, doseq=True).encode())
        sent: list[dict[str, Any]] = []
        done = asyncio.Event()
        given = False

        async def receive() -> dict[str, Any]:
            nonlocal given
            if not given:
                given = True
                return {"type": "http.request", "body": body, "more_body": False}
            await done.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await self.app(scope, receive, send)
        done.set()
        start = sent[0]
        out_headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in start["headers"]}
        data = b"".join(m.get("body", b"") for m in sent[1:])
        return LocalResponse(start["status"], out_headers, data)
