"""What a prediction becomes on the wire: status, headers and body, or a stream.

=====================  =====================================================
predict() returns      the answer
=====================  =====================================================
dict / list / tuple    JSON, or MessagePack when Accept prefers it (else 406)
None, bool, int,       the same JSON or MessagePack value
float, numpy values
str                    ``text/plain; charset=utf-8`` (Accept is not consulted)
bytes                  ``image/png`` / ``image/jpeg`` when sniffed, else
                       ``application/octet-stream``
flask.Response         run as the WSGI application it is (any WSGI callable)
a generator            a stream (see ``streams``): str/bytes raw, dicts as NDJSON,
                       SSE when Accept asks for ``text/event-stream``
=====================  =====================================================

The one owner of this table: a new result type is a change here alone.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, Callable

from . import codec
from .errors import BadResultError
from .request import Request, Send
from .responses import Responder
from .streams import DEFAULT_OPTIONS, StreamOptions, StreamStart, send_stream

Offload = Callable[..., Awaitable[Any]]


def encode_value(value: Any, accept: str | None) -> tuple[bytes, str]:
    """The body and content type of a result that is neither a stream nor WSGI.

    Raises:
        NotAcceptableError: a structured result and an Accept that allows neither format.
        BadResultError: a value of a type that cannot be answered; the message lists types.
    """
    if type(value) is dict or type(value) is list:  # the commonest results, first
        if codec.negotiate(accept) is codec.Format.MSGPACK:
            return codec.encode_msgpack(value), codec.MSGPACK_TYPE
        return codec.encode_json(value), codec.JSON_TYPE
    if isinstance(value, str):
        return value.encode("utf-8"), codec.TEXT_TYPE
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        return data, codec.sniff_bytes(data)
    if codec.is_structured(value):
        if codec.negotiate(accept) is codec.Format.MSGPACK:
            return codec.encode_msgpack(value), codec.MSGPACK_TYPE
        return codec.encode_json(value), codec.JSON_TYPE
    raise BadResultError(
        f"predict() returned {type(value).__name__}, which cannot be answered. Return a "
        "dict, list, tuple, str, bytes, number, None, numpy value, flask.Response or a generator."
    )


async def send_result(
    result: Any,
    request: Request,
    send: Send,
    out: Responder,
    offload: Offload,
    details: bool,
    streams: StreamOptions = DEFAULT_OPTIONS,
) -> int:
    """Send what predict (or postprocess) returned; returns the status sent.

    ``offload`` runs a blocking call off the event loop (a returned WSGI response);
    ``streams`` says how a stream is sent (SSE heartbeat, metrics).
    """
    if isinstance(result, StreamStart):
        return await send_stream(send, request, result, out, details, streams)
    if callable(result):
        from . import flask_compat  # Flask loads only for predictors that use it

        if flask_compat.is_wsgi_response(result):
            status, headers, data = await offload(
                flask_compat.run_wsgi_response, result, request.environ()
            )
            return await out.respond(send, request, status, data, None, headers)
    data, content_type = encode_value(result, request.accept)
    return await out.respond(send, request, 200, data, content_type)
