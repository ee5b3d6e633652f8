"""Call a running openbayes-serving predictor over HTTP: predict, stream, health, readiness.

Built on ``requests`` and ``msgpack`` (with ``retries`` and ``answers``, nothing else
from the package), so any program can use it:
``Client("http://127.0.0.1:25252").predict(json={"text": "hi"})``.

Each call has a deadline, its ``timeout``: predict and stream send the time left as
``X-Request-Timeout`` (the server answers 504 rather than work past it), and a call
retries connections that were refused and 503 answers (``retries``) only while that
deadline allows.
"""

from __future__ import annotations

import json as jsonlib
import logging
import mimetypes
import time
from collections.abc import Mapping
from typing import IO, TYPE_CHECKING, Any, Union

from msgpack import packb

from .answers import (
    JSON_TYPE,
    MSGPACK_TYPE,
    NDJSON_TYPE,
    OCTET_TYPE,
    SSE_TYPE,
    ChunkStream,
    decode,
    predict_error,
)

if TYPE_CHECKING:  # imported when a Client is made: importing the package stays light
    import requests

logger = logging.getLogger(__name__)

# How much longer than its deadline a call waits for the answer: the server's 504 (which
# says which deadline applied) must arrive before the client gives up on its own.
ANSWER_GRACE = 1.0

Timeout = Union[float, tuple[float, float], None]
RawBody = Union[bytes, bytearray, IO[bytes]]


class Client:
    """A connection to one predictor server, kept alive between calls.

    Args:
        url: The server's base URL, such as ``http://127.0.0.1:25252``. ``predict`` and
            ``stream`` POST to it; ``health`` and ``ready`` GET ``/healthz`` and ``/readyz``
            under it.
        timeout: The deadline of each call in seconds, retries included (each call may
            give its own). ``predict`` and ``stream`` send the time left as
            ``X-Request-Timeout``: the server answers 504 once it passes (for a stream:
            once it passes before the stream starts) and never runs a request that waited
            that long. The client waits ``ANSWER_GRACE`` (1 s) longer for each connection
            and each read (for a stream: each chunk), in case the server does not answer
            504 itself. A ``(connect, read)`` pair sets the connection timeout apart;
            ``None`` waits forever and retries without a deadline.
        api_key: Sent as ``Authorization: Bearer KEY`` when the server requires a key.
        max_retries: How many times a call is sent again after a refused connection or a
            503, waiting as ``Retry-After`` says (else 0 s, 1 s, 2 s...), never past the
            deadline. Only what gave no result is retried (a 503 follows a started predict
            only when it produced nothing: out of memory, a drain cut short); a reset
            connection, a timeout or any other status is not: predict may have run to its
            end. 0 sends each call once.
    """

    def __init__(
        self,
        url: str,
        timeout: Timeout = 60,
        api_key: str | None = None,
        max_retries: int = 3,
    ) -> None:
        if max_retries < 0:
            raise ValueError("max_retries must be 0 or more")
        self.url = url
        self.timeout = timeout
        self.max_retries = max_retries
        from .retries import retrying_session  # loads requests: only when a Client is made

        self.session = retrying_session(max_retries)
        if api_key is not None:
            self.session.headers["Authorization"] = f"Bearer {api_key}"

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections of the underlying session."""
        self.session.close()

    def predict(
        self,
        json: Any = None,
        data: RawBody | None = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        msgpack: bool = False,
        content_type: str | None = None,
        timeout: Timeout = None,
    ) -> Any:
        """Send one request and return the decoded answer.

        Args:
            json: A value sent as JSON (or MessagePack with ``msgpack=True``).
            data: Raw bytes or a binary file object, sent as they are; give their type in
                ``content_type`` (default: guessed from a file's name, else
                ``application/octet-stream``). Not together with ``json``.
            params: Query string parameters, passed to the predictor as ``params``.
            headers: Extra request headers; they win over the ones set here.
            msgpack: Send ``json`` as MessagePack and ask for a MessagePack answer.
            content_type: The Content-Type of the body, overriding the default.
            timeout: This call's deadline, as the client's ``timeout`` (None: that one).

        Returns:
            The answer decoded by its Content-Type: JSON and MessagePack -> the value
            (dict, list, ...); ``text/*`` -> ``str``; NDJSON and SSE streams -> a list of
            their chunks, as ``stream`` yields them; anything else (images) -> ``bytes``.

        Raises:
            PredictError: The server answered 4xx or 5xx (503 after the retries, 504 when
                the deadline passed on the server).
            ValueError: Both ``json`` and ``data`` were given.
            requests.RequestException: The request did not get an answer.
        """
        accept = MSGPACK_TYPE if msgpack else JSON_TYPE
        body = _encode_body(json, data, msgpack, content_type)
        headers = {"Accept": accept, **(headers or {})}
        response = self._post(body, params, headers, timeout, stream=False)
        if response.status_code >= 400:
            raise predict_error(response)
        return decode(response)

    def stream(
        self,
        json: Any = None,
        data: RawBody | None = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        msgpack: bool = False,
        content_type: str | None = None,
        sse: bool = False,
        timeout: Timeout = None,
    ) -> ChunkStream:
        """Send one request and iterate over the answer's chunks as they arrive.

        The request is sent, and its status checked, before this returns. Close the
        stream (or use it in a ``with`` block) to leave early; the server then stops the
        predictor's generator.

        Args:
            json: As in ``predict``.
            data: As in ``predict``.
            params: As in ``predict``.
            headers: As in ``predict``.
            msgpack: Send ``json`` as MessagePack.
            content_type: As in ``predict``.
            sse: Ask for Server-Sent Events (``Accept: text/event-stream``) instead of NDJSON.
            timeout: This call's deadline, as the client's ``timeout`` (None: that one):
                it bounds the wait until the stream starts, and each wait for a chunk.

        Returns:
            An iterator of chunks: dicts (or other JSON values) for NDJSON lines; for SSE,
            the data of each event, parsed when it is a JSON object or array, else ``str``;
            ``str`` pieces of a ``text/*`` stream; ``bytes`` pieces of a binary stream. An
            answer that is not a stream (plain JSON, for example) gives one decoded chunk.

        Raises:
            PredictError: The server answered 4xx or 5xx, or (while iterating) an SSE
                stream ended with an ``error`` event.
            ValueError: Both ``json`` and ``data`` were given.
            requests.RequestException: The request did not get an answer.
        """
        structured = MSGPACK_TYPE if msgpack else JSON_TYPE
        accept = f"{SSE_TYPE if sse else NDJSON_TYPE}, {structured};q=0.9"
        body = _encode_body(json, data, msgpack, content_type)
        headers = {"Accept": accept, **(headers or {})}
        response = self._post(body, params, headers, timeout, stream=True)
        if response.status_code >= 400:
            with response:
                raise predict_error(response)
        return ChunkStream(response)

    def health(self, timeout: Timeout = None) -> bool:
        """True when ``GET /healthz`` answers 200: the process is alive.

        A refused connection or a 503 is tried again (``max_retries``, within ``timeout``,
        None: the client's), so a server that is starting gets the time to answer.
        """
        return _probe(
            self.session,
            f"{self.url.rstrip('/')}/healthz",
            self.timeout if timeout is None else timeout,
        )

    def ready(self, timeout: Timeout = None) -> bool:
        """True when ``GET /readyz`` answers 200: the model is loaded and not draining.

        Retried as ``health`` is: False comes after ``max_retries`` waits (about 3 s by
        default); ``Client(max_retries=0)`` looks once.
        """
        return _probe(
            self.session,
            f"{self.url.rstrip('/')}/readyz",
            self.timeout if timeout is None else timeout,
        )

    def _post(
        self,
        body: tuple[Any, str | None],
        params: Any,
        headers: dict[str, str],
        timeout: Timeout,
        stream: bool,
    ) -> requests.Response:
        """POST the body; ``headers`` (the caller's included) win over ours."""
        from .retries import TIMEOUT_HEADER, TimeLeft, deadline

        data, content_type = body
        seconds, wait = _timeouts(self.timeout if timeout is None else timeout)
        at = None if seconds is None else time.monotonic() + seconds
        ours: dict[str, str] = {} if at is None else {TIMEOUT_HEADER: TimeLeft(at)}
        if content_type:
            ours["Content-Type"] = content_type
        with deadline(at):
            response = self.session.post(
                self.url,
                data=data,
                params=params,
                headers={**ours, **headers},
                timeout=wait,
                stream=stream,
            )
        ms = response.elapsed.total_seconds() * 1000  # until the headers arrived
        rid = response.headers.get("X-Request-Id")
        logger.debug("POST %s: %d in %.1f ms (request %s)", self.url, response.status_code, ms, rid)
        return response


def _probe(session: Any, url: str, timeout: Timeout) -> bool:
    """GET ``url`` within ``timeout`` (retries included): True for a 200."""
    import requests

    from .retries import deadline

    seconds, wait = _timeouts(timeout)
    at = None if seconds is None else time.monotonic() + seconds
    try:
        with deadline(at), session.get(url, timeout=wait) as response:
            return bool(response.status_code == 200)
    except (requests.ConnectionError, requests.Timeout) as exc:
        logger.debug("GET %s failed: %s", url, exc)
        return False


def _timeouts(timeout: Timeout) -> tuple[float | None, Timeout]:
    """A call's deadline in seconds, and the (connect, read) timeouts that back it up."""
    if timeout is None:
        return None, None
    if isinstance(timeout, tuple):
        connect, read = timeout
        return float(read), (connect, read + ANSWER_GRACE)
    return float(timeout), float(timeout) + ANSWER_GRACE


def _encode_body(
    json: Any, data: RawBody | None, msgpack: bool, content_type: str | None
) -> tuple[Any, str | None]:
    """The body to send and its content type (``content_type`` wins when given)."""
    if json is not None and data is not None:
        raise ValueError("give either json or data, not both")
    if json is not None and msgpack:
        return packb(json, use_bin_type=True), content_type or MSGPACK_TYPE
    if json is not None:
        text = jsonlib.dumps(json, ensure_ascii=False, separators=(",", ":"))
        return text.encode("utf-8"), content_type or JSON_TYPE
    if data is not None:
        return data, content_type or _guess_type(data)
    return None, content_type


def _guess_type(data: RawBody) -> str:
    name = getattr(data, "name", None)
    guessed = mimetypes.guess_type(name)[0] if isinstance(name, str) else None
    return guessed or OCTET_TYPE
