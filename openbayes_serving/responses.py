"""Put answers on the wire over ASGI, with the headers every answer carries.

Every answer names its request id and carries the CORS headers; whole answers carry a
Content-Length. What an answer says is decided elsewhere: ``results`` for predictions,
``error_map`` for errors, ``streams`` for streams.
"""

from __future__ import annotations

from typing import Any, Callable

from . import codec
from .error_map import ErrorAnswer
from .request import Headers, Request, Send


class Responder:
    """Builds and sends responses with the headers every answer carries."""

    def __init__(self, cors_origins: tuple[str, ...]) -> None:
        self._cors = _cors_headers(cors_origins)
        self._cors_lines = _cors_lines(self._cors, cors_origins)

    def start(
        self,
        request: Request,
        status: int,
        content_type: str | None,
        extra: Headers | None,
        streaming: bool = False,
    ) -> dict[str, Any]:
        """The http.response.start message: request id, content type, CORS."""
        headers: Headers = [(b"x-request-id", request.request_id.encode("latin-1"))]
        if content_type is not None:
            headers.append((b"content-type", content_type.encode("latin-1")))
        if streaming:
            headers.append((b"cache-control", b"no-cache"))
            headers.append((b"x-accel-buffering", b"no"))
        if extra:
            headers.extend(extra)
        headers.extend(self._cors(request.origin))
        return {"type": "http.response.start", "status": status, "headers": headers}

    async def respond(
        self,
        send: Send,
        request: Request,
        status: int,
        body: bytes,
        content_type: str | None,
        extra: Headers | None = None,
    ) -> int:
        """Send a whole answer with its Content-Length.

        Through this runtime's own uvicorn protocol (``protocol``), an answer whose
        headers are all the runtime's own (a cleaned request id, its content types and
        CORS values; no ``extra``) is written as bytes at once, not as ASGI messages.
        """
        if extra is None:
            write = getattr(getattr(send, "__self__", None), "write_answer", None)
            if write is not None and write(status, self._lines(request, content_type, body), body):
                return status
        start = self.start(request, status, content_type, extra)
        if not any(name == b"content-length" for name, _ in start["headers"]):
            start["headers"].append((b"content-length", str(len(body)).encode()))
        await send(start)
        await send({"type": "http.response.body", "body": body})
        return status

    def _lines(self, request: Request, content_type: str | None, body: bytes) -> bytes:
        """The header lines ``start`` and ``respond`` would send, in their order."""
        rid = request.request_id.encode("latin-1")
        cors = self._cors_lines(request.origin)
        if content_type is None:
            return b"x-request-id: %s\r\n%scontent-length: %d\r\n" % (rid, cors, len(body))
        return b"x-request-id: %s\r\ncontent-type: %s\r\n%scontent-length: %d\r\n" % (
            rid,
            content_type.encode("latin-1"),
            cors,
            len(body),
        )

    async def json(
        self, send: Send, request: Request, status: int, value: Any, extra: Headers | None = None
    ) -> int:
        """Send ``value`` as a JSON answer."""
        return await self.respond(
            send, request, status, codec.encode_json(value), codec.JSON_TYPE, extra
        )

    async def error(self, send: Send, request: Request, answer: ErrorAnswer) -> int:
        """Send an error answer from ``error_map``."""
        return await self.json(send, request, answer.status, answer.body, list(answer.headers))


def _cors_headers(origins: tuple[str, ...]) -> Callable[[bytes | None], Headers]:
    expose = (b"access-control-expose-headers", b"x-request-id, retry-after")
    if not origins:
        return lambda origin: []
    if "*" in origins:
        fixed = [(b"access-control-allow-origin", b"*"), expose]
        return lambda origin: fixed
    allowed = {o.encode("latin-1") for o in origins}

    def headers(origin: bytes | None) -> Headers:
        if origin is not None and origin in allowed:
            return [(b"access-control-allow-origin", origin), (b"vary", b"Origin"), expose]
        return [(b"vary", b"Origin")]

    return headers


def _cors_lines(
    headers: Callable[[bytes | None], Headers], origins: tuple[str, ...]
) -> Callable[[bytes | None], bytes]:
    """``_cors_headers`` as header lines; made once unless they follow the origin."""
    if not origins or "*" in origins:
        fixed = _as_lines(headers(None))
        return lambda origin: fixed
    return lambda origin: _as_lines(headers(origin))


def _as_lines(headers: Headers) -> bytes:
    return b"".join([b"%s: %s\r\n" % header for header in headers])


def preflight(headers: Headers) -> Headers:
    """The answer headers of a CORS preflight request."""
    asked = next((v for k, v in headers if k == b"access-control-request-headers"), b"content-type")
    return [
        (b"access-control-allow-methods", b"GET, POST, OPTIONS"),
        (b"access-control-allow-headers", asked),
        (b"access-control-max-age", b"600"),
    ]
