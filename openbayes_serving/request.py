"""One HTTP request as the app sees it: headers read once, its id, its deadline, its body.

A ``Request`` is made for every HTTP request (any route). It carries what the request
path needs from the headers, the request id that every log line and answer names, the
absolute deadline (``time.monotonic``, computed once: the smaller of the client's
``X-Request-Timeout`` and ``request_timeout``), the body reader with its timer, the probe
that says whether the client is still connected, the ``cancelled`` signal of predictors
that ask for it, and the parsed body and WSGI environ, each built on first use.
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import math
import os
import re
import threading
import time
import uuid
from typing import Any, Callable

from . import codec
from .errors import ClientGone, PayloadTooLargeError, QueueTimeoutError, RequestTimeoutError
from .events import PLATFORM_REQUEST_ID

Send = Callable[[dict[str, Any]], Any]
Receive = Callable[[], Any]
Headers = list[tuple[bytes, bytes]]

# The id of the request being served, for log lines (set by the app, read by the logs).
REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")

# Request ids: a random per-process prefix and a counter. Unique across processes and
# restarts without a system call per request (uuid4 reads os.urandom every time).
_id_prefix = uuid.uuid4().hex[:16]
_id_counter = itertools.count(1)


def _new_id_prefix() -> None:
    global _id_prefix, _id_counter
    _id_prefix = uuid.uuid4().hex[:16]
    _id_counter = itertools.count(1)


os.register_at_fork(after_in_child=_new_id_prefix)  # each gunicorn worker its own prefix


def new_request_id() -> str:
    """A fresh request id, such as ``3f9c0a1b2c4d5e6f-1a``."""
    return f"{_id_prefix}-{next(_id_counter):x}"


_UNSET: Any = object()

MAX_REQUEST_ID = 128  # characters of a client's request id that are kept
# What a client's request id may hold: it goes into log lines and answer headers, so
# nothing that could end a line, open a field or forge text (no space, quote or bracket).
_ID_CHARACTERS = frozenset(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.:/+=@"
)
_NOT_ID = bytes(b for b in range(256) if b not in _ID_CHARACTERS)


def clean_request_id(value: bytes) -> str:
    """A client's request id as logged and echoed: its allowed characters, at most 128.

    Empty when nothing is left (a fresh id is then made).
    """
    return value[: MAX_REQUEST_ID * 4].translate(None, _NOT_ID)[:MAX_REQUEST_ID].decode("ascii")


TIMEOUT_HEADER = "X-Request-Timeout"  # the client's deadline, in seconds
SERVER_TIMEOUT = "request_timeout"  # the setting that bounds every request
# A number of seconds as a client may write it: digits, an optional fraction, no exponent.
_SECONDS = re.compile(rb"[0-9]{1,12}(?:\.[0-9]{0,9})?|\.[0-9]{1,9}")


def client_timeout(value: bytes) -> float | None:
    """The seconds an ``X-Request-Timeout`` value gives; None when it is not a positive number."""
    text = value.strip(b" \t")
    if not _SECONDS.fullmatch(text):
        return None
    seconds = float(text)
    return seconds if 0 < seconds < math.inf else None


class Cancelled(threading.Event):
    """Set when a request's client hangs up or its deadline passes; ``reason`` says which.

    What ``predict``, ``preprocess`` and ``postprocess`` get when they ask for
    ``cancelled``: ``is_set()`` to poll, ``wait(timeout)`` to sleep until it is set.
    Nothing is stopped by force: the predictor decides when to return.
    """

    DISCONNECT = "disconnect"
    DEADLINE = "deadline"

    def __init__(self) -> None:
        super().__init__()
        self.reason: str | None = None  # "disconnect" or "deadline", once set

    def cancel(self, reason: str) -> None:
        """Set it, for ``reason``; the first reason given stays."""
        if self.reason is None:
            self.reason = reason
        self.set()


class Request:
    """One HTTP request: facts from its headers, id, deadline, body and connection."""

    __slots__ = (
        "scope",
        "receive",
        "request_id",
        "content_type",
        "accept",
        "origin",
        "content_length",
        "auth",
        "forwarded",
        "timeout",
        "deadline",
        "deadline_source",
        "header_error",
        "cancelled",
        "body",
        "_environ",
        "_parsed",
    )

    def __init__(self, scope: dict[str, Any], receive: Receive, timeout: float) -> None:
        self.scope = scope
        self.receive = receive
        headers = dict(scope["headers"])  # a repeated header: its last value
        get = headers.get
        value = get(b"content-type")
        self.content_type: str | None = None if value is None else value.decode("latin-1")
        value = get(b"accept")
        self.accept: str | None = None if value is None else value.decode("latin-1")
        self.origin: bytes | None = get(b"origin")
        self.content_length: bytes | None = get(b"content-length")
        self.forwarded = b"x-forwarded-for" in headers or b"x-forwarded-proto" in headers
        self.auth: tuple[bytes, bytes] | None = None
        if b"authorization" in headers or b"x-api-key" in headers:
            self.auth = _credentials(scope["headers"])
        self.timeout = timeout  # seconds from arrival to the deadline
        self.deadline_source = SERVER_TIMEOUT  # what set it: the setting or the header
        self.header_error: str | None = None  # a bad X-Request-Timeout (400 on POST /)
        self.cancelled: Cancelled | None = None  # made only for predictors that ask
        self.body = b""
        self._environ: dict[str, Any] | None = None
        self._parsed: Any = _UNSET
        value = get(b"x-request-timeout")
        if value is not None:
            self._client_deadline(value)
        self.deadline = time.monotonic() + self.timeout
        value = get(b"x-request-id")
        given = None if value is None else clean_request_id(value)
        value = get(b"x-openbayes-serving-request-id")
        platform = None if value is None else clean_request_id(value)
        self.request_id: str = given or platform or new_request_id()
        if platform and platform.isdigit():  # ASCII digits only, after cleaning
            PLATFORM_REQUEST_ID.set(int(platform))

    def _client_deadline(self, value: bytes) -> None:
        """Take the client's ``X-Request-Timeout`` when it is the smaller, or note it is bad."""
        seconds = client_timeout(value)
        if seconds is None:
            shown = value[:32].decode("latin-1")
            self.header_error = (
                f"{TIMEOUT_HEADER} must be a positive number of seconds, such as 2.5 "
                f"(got {shown!r})"
            )
        elif seconds < self.timeout:
            self.timeout = seconds
            self.deadline_source = TIMEOUT_HEADER

    def deadline_error(self, what: str) -> QueueTimeoutError:
        """The 504 for a request whose deadline passed: ``what`` did not happen in time.

        The body says which deadline applied (``X-Request-Timeout`` or
        ``request_timeout``) and its seconds.
        """
        return QueueTimeoutError(
            f"{what} within {self.timeout:g}s ({self.deadline_source})",
            payload={"deadline": self.deadline_source, "timeout": self.timeout},
        )

    @property
    def method(self) -> str:
        """The HTTP method."""
        return str(self.scope["method"])

    @property
    def path(self) -> str:
        """The request path, without the query string."""
        return str(self.scope["path"])

    @property
    def disconnected(self) -> bool:
        """True once the server saw the client hang up (False when it cannot tell).

        uvicorn's ``receive`` is a method of its request cycle, which sets
        ``disconnected`` when the connection drops; other ASGI servers (Ray's proxy) do
        not say, and their requests are taken as connected unless the disconnect watcher
        (``watch_disconnect``, for predictors that ask for ``cancelled``) heard it.
        """
        cancelled = self.cancelled
        if cancelled is not None and cancelled.reason == Cancelled.DISCONNECT:
            return True
        cycle = getattr(self.receive, "__self__", None)
        return getattr(cycle, "disconnected", False) is True

    async def watch_disconnect(self) -> None:
        """Set ``cancelled`` when the client hangs up (a task, once the body is read).

        Only for predictors that ask for ``cancelled``: the one reader of ``receive``
        after the body, until the handler cancels it.
        """
        cancelled = self.cancelled
        assert cancelled is not None
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                cancelled.cancel(Cancelled.DISCONNECT)
                return

    def take_body(self, limit: int) -> bytes | None:
        """The whole body at once if the server holds it already (it nearly always does).

        None when it does not (``read_body`` then waits for it), or cannot say.

        Raises:
            PayloadTooLargeError: the body is larger than ``limit``.
        """
        take = getattr(getattr(self.receive, "__self__", None), "take_body", None)
        body = None if take is None else take()
        if body is not None:
            if len(body) > limit:
                raise PayloadTooLargeError(f"request body is larger than {limit} bytes")
            self.body = body
        return body

    async def read_body(self, limit: int) -> bytes:
        """Read the whole body, at most ``limit`` bytes, before the deadline.

        Raises:
            PayloadTooLargeError: the body is (or says it is) larger than ``limit``.
            RequestTimeoutError: the body did not arrive before the deadline.
            ClientGone: the client disconnected while sending it.
        """
        length = self.content_length
        if length is not None and length.isdigit() and int(length) > limit:
            raise PayloadTooLargeError(f"request body is larger than {limit} bytes")
        body = self.take_body(limit)
        if body is not None:
            return body
        # A client that stalls while sending its body must not hold the request forever:
        # a timer cancels the read at the deadline (no task per request).
        task = asyncio.current_task()
        assert task is not None
        expired: list[bool] = []
        timer = asyncio.get_running_loop().call_later(
            self.deadline - time.monotonic(), _expire, task, expired
        )
        try:
            self.body = await _read(self.receive, limit)
            return self.body
        except asyncio.CancelledError:
            # The loop may run a timer slightly before its due time, so ask the timer
            # itself whether it fired rather than comparing clocks.
            if not expired:
                raise  # cancelled by the server, not by the timer
            raise RequestTimeoutError(
                f"the request body did not arrive within {self.timeout:g}s"
            ) from None
        finally:
            timer.cancel()

    def parsed(self, strict: bool) -> Any:
        """The parsed body (``json`` when ``strict``, ``payload`` otherwise), parsed once.

        Raises:
            BadRequestError: the body does not parse, or (strict) is not JSON/MessagePack.
        """
        if self._parsed is _UNSET:
            self._parsed = codec.decode_payload_param(self.body, self.content_type)
        if strict and codec.body_kind(self.content_type) is codec.BodyKind.RAW:
            return codec.decode_json_param(self.body, self.content_type)
        return self._parsed

    def environ(self) -> dict[str, Any]:
        """The WSGI environ of this request (body included), built on first use."""
        if self._environ is None:
            from . import flask_compat  # Flask loads only for predictors that use it

            self._environ = flask_compat.build_environ(self.scope, self.body)
        return self._environ


async def _read(receive: Receive, limit: int) -> bytes:
    """The body's messages from ``receive``, joined (ClientGone if the client leaves)."""
    chunks = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(f"request body is larger than {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body"):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _credentials(headers: Headers) -> tuple[bytes, bytes]:
    """The last ``authorization`` or ``x-api-key`` header: (name, value)."""
    return next(
        (name, value)
        for name, value in reversed(headers)
        if name in (b"authorization", b"x-api-key")
    )


def _expire(task: asyncio.Task[Any], expired: list[bool]) -> None:
    expired.append(True)
    task.cancel()
