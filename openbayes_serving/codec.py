"""Decode request bodies, negotiate Accept, encode values and frame stream chunks.

Pure functions: bytes and values in, bytes and values out; nothing here sends. Bodies
are JSON or MessagePack by Content-Type (every alias of 0.5.0), answers JSON or
MessagePack by Accept. What a result becomes as a whole answer is ``results``'s table.
"""

from __future__ import annotations

import base64
import enum
import re
import threading
from functools import lru_cache
from typing import Any

import msgpack
import orjson

from .errors import BadRequestError, BadResultError, NotAcceptableError


class BodyKind(enum.Enum):
    """How a request body is parsed, from its Content-Type."""

    JSON = "json"
    MSGPACK = "msgpack"
    RAW = "raw"


class Format(enum.Enum):
    """How a structured result is encoded, from Accept."""

    JSON = "application/json"
    MSGPACK = "application/msgpack"


JSON_TYPE = "application/json"
MSGPACK_TYPE = "application/msgpack"
TEXT_TYPE = "text/plain; charset=utf-8"
NDJSON_TYPE = "application/x-ndjson"
SSE_TYPE = "text/event-stream"
SSE_PING = b": ping\n\n"  # an SSE comment: readers skip it, proxies see bytes
_SSE_LINE_END = re.compile(r"\r\n|\r|\n")
OCTET_TYPE = "application/octet-stream"

_MSGPACK_SUBTYPES = frozenset({"msgpack", "x-msgpack", "vnd.msgpack", "vnd.messagepack"})
_JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
_SCALARS = (type(None), bool, int, float)


@lru_cache(maxsize=256)
def body_kind(content_type: str | None) -> BodyKind:
    """Classify a Content-Type header: JSON, one of the MessagePack aliases, or raw."""
    if not content_type:
        return BodyKind.RAW
    mime = content_type.split(";", 1)[0].strip().lower()
    if not mime.startswith("application/"):
        return BodyKind.RAW
    subtype = mime[len("application/") :]
    if subtype == "json":
        return BodyKind.JSON
    if subtype in _MSGPACK_SUBTYPES:
        return BodyKind.MSGPACK
    return BodyKind.RAW


def decode_structured(body: bytes, kind: BodyKind) -> Any:
    """Parse a JSON or MessagePack body.

    Raises:
        BadRequestError: the body does not parse.
    """
    if kind is BodyKind.JSON:
        try:
            value = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise BadRequestError(f"request body is not valid JSON: {exc}") from None
        if body.count(b"[") + body.count(b"{") > MAX_DEPTH:  # else it cannot nest that deep
            _check_answerable(value, body)
        return value
    try:
        # Lengths are bounded by the body size (msgpack's defaults for unpackb), so a
        # small body cannot declare a huge container.
        value = msgpack.unpackb(body, raw=False, ext_hook=_refuse_ext)
    except BadRequestError:
        raise
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise BadRequestError(f"request body is not valid MessagePack: {exc}") from None
    except Exception as exc:  # msgpack raises bare Exceptions for some bad data
        raise BadRequestError(f"request body is not valid MessagePack: {exc}") from None
    _check_answerable(value, body)  # Timestamps and bytes keys decode, but JSON has neither
    return value


# What a body may hold is what an answer can hold: a predictor that returns (part of) its
# input must never meet an encoder that refuses it. orjson encodes at most 254 levels
# (MessagePack 511); bodies get half of that, so an answer that wraps one still encodes.
MAX_DEPTH = 128
_ENCODER_DEPTH = 254


def _refuse_ext(code: int, data: bytes) -> Any:
    raise BadRequestError(
        f"request body holds a MessagePack extension type ({code}), which is not supported"
    )


def _probe_default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        return None  # bytes are answered (base64 in JSON): only their type matters here
    raise TypeError(f"it holds a MessagePack {type(value).__name__}, which is not supported")


def _check_answerable(value: Any, body: bytes) -> None:
    """Refuse a decoded body that an answer could not hold (too deep, or of odd types).

    orjson walks it in C: the value, inside enough lists that it fails past MAX_DEPTH
    levels, is encoded and dropped (bytes as null). Without the lists when the body is too
    short to nest that deep; each thread keeps its chain of lists, built once.
    """
    chain = None
    if len(body) > MAX_DEPTH:
        chain = getattr(_chains, "chain", None) or _new_chain()
        chain[1][0] = value
    try:
        orjson.dumps(
            value if chain is None else chain[0],
            default=_probe_default,
            option=orjson.OPT_NON_STR_KEYS,
        )
    except orjson.JSONEncodeError as exc:
        if isinstance(exc.__cause__, TypeError):
            reason = str(exc.__cause__)  # a Timestamp (the one extension msgpack decodes)
        elif "ecursion" in str(exc):
            reason = f"it nests deeper than {MAX_DEPTH} levels"
        else:
            reason = "its map keys must be strings"  # bytes keys: JSON has no such key
        raise BadRequestError(f"request body cannot be answered: {reason}") from None
    finally:
        if chain is not None:
            chain[1][0] = None


_chains = threading.local()


def _new_chain() -> tuple[list[Any], list[Any]]:
    """``_ENCODER_DEPTH - MAX_DEPTH`` nested lists: (the outermost, the innermost)."""
    inner: list[Any] = [None]
    outer = inner
    for _ in range(_ENCODER_DEPTH - MAX_DEPTH - 1):
        outer = [outer]
    _chains.chain = (outer, inner)
    return outer, inner


def decode_json_param(body: bytes, content_type: str | None) -> Any:
    """The value of a ``json`` parameter: the body must be JSON or MessagePack."""
    kind = body_kind(content_type)
    if kind is BodyKind.RAW:
        raise BadRequestError(
            "request body must be JSON or MessagePack: send Content-Type: application/json "
            f"or application/msgpack (got {content_type or 'no Content-Type'})"
        )
    return decode_structured(body, kind)


def decode_payload_param(body: bytes, content_type: str | None) -> Any:
    """The value of a ``payload`` parameter: parsed when structured, else raw bytes."""
    kind = body_kind(content_type)
    if kind is BodyKind.RAW:
        return body
    return decode_structured(body, kind)


# Media ranges of Accept, by specificity (RFC 9110 12.5.1): a more specific range that
# matches a format decides its quality, so "*/*, application/json;q=0" refuses JSON.
_RANGES: dict[str, tuple[int, tuple[Format, ...]]] = {
    "*/*": (0, (Format.JSON, Format.MSGPACK)),
    "application/*": (1, (Format.JSON, Format.MSGPACK)),
    "application/json": (2, (Format.JSON,)),
    **{f"application/{sub}": (2, (Format.MSGPACK,)) for sub in _MSGPACK_SUBTYPES},
}


def _quality(params: str) -> float:
    for param in params.split(";"):
        key, _, value = param.partition("=")
        if key.strip().lower() == "q":
            try:
                return float(value)
            except ValueError:
                return 0.0
    return 1.0


@lru_cache(maxsize=512)
def negotiate(accept: str | None) -> Format:
    """Pick JSON or MessagePack from an Accept header (RFC 9110 section 12.5.1).

    Each format takes the quality of the most specific range that matches it (an exact
    type beats ``application/*``, which beats ``*/*``; equally specific: the highest q);
    the MessagePack aliases all name MessagePack. The highest quality wins, then the
    more specific match, then the range listed first, then JSON. q=0 refuses a format.
    No header means JSON.

    Raises:
        NotAcceptableError: Accept allows neither.
    """
    if not accept or not accept.strip():
        return Format.JSON
    matches: dict[Format, tuple[int, float, int]] = {}  # specificity, quality, -index
    for index, part in enumerate(accept.split(",")):
        mime, _, params = part.partition(";")
        found = _RANGES.get(mime.strip().lower())
        if found is None:
            continue
        specificity, formats = found
        match = (specificity, _quality(params), -index)
        for fmt in formats:
            if fmt not in matches or match[:2] > matches[fmt][:2]:
                matches[fmt] = match
    ranked = sorted(
        ((quality, specificity, at, fmt is Format.JSON), fmt)
        for fmt, (specificity, quality, at) in matches.items()
        if quality > 0
    )
    if ranked:
        return ranked[-1][1]
    raise NotAcceptableError(
        f"cannot answer with {accept!r}: this endpoint answers application/json "
        "or application/msgpack"
    )


def _json_default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(value).decode("ascii")
    return _common_default(value)


def _msgpack_default(value: Any) -> Any:
    if isinstance(value, memoryview):
        return value.tobytes()
    return _common_default(value)


def _common_default(value: Any) -> Any:
    if hasattr(value, "tolist") and hasattr(value, "dtype"):
        return value.tolist()  # numpy arrays and scalars orjson does not take natively
    if isinstance(value, (set, frozenset)):
        return list(value)
    raise TypeError(f"{type(value).__name__} cannot be encoded")


def encode_json(value: Any) -> bytes:
    """JSON with bytes as base64 strings and non-ASCII text unescaped."""
    try:
        return orjson.dumps(value, default=_json_default, option=_JSON_OPTIONS)
    except orjson.JSONEncodeError as exc:
        raise BadResultError(
            f"predict() returned a value that is not JSON-serialisable: {exc}"
        ) from None


def encode_msgpack(value: Any) -> bytes:
    """MessagePack with bytes kept binary."""
    try:
        return msgpack.packb(value, default=_msgpack_default)  # type: ignore[no-any-return,unused-ignore]
    except (TypeError, ValueError, OverflowError) as exc:
        raise BadResultError(
            f"predict() returned a value that is not MessagePack-serialisable: {exc}"
        ) from None


def sniff_bytes(value: bytes) -> str:
    """The content type of a bytes result: PNG, JPEG, or octet-stream."""
    if value.startswith(b"\x89PNG"):
        return "image/png"
    if value.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    return OCTET_TYPE


def is_structured(value: Any) -> bool:
    """True for values encoded as JSON or MessagePack."""
    return isinstance(value, (dict, list, tuple, *_SCALARS)) or (
        hasattr(value, "dtype") and hasattr(value, "tolist")
    )


def stream_content_type(first: Any, sse: bool) -> str:
    """The content type of a stream, chosen from its first chunk."""
    if sse:
        return SSE_TYPE
    if isinstance(first, str):
        return TEXT_TYPE
    if isinstance(first, (bytes, bytearray, memoryview)):
        return OCTET_TYPE
    return NDJSON_TYPE


def frame_chunk(chunk: Any, sse: bool, event_id: int | None = None) -> bytes:
    """One stream chunk on the wire: raw text/bytes, an NDJSON line, or an SSE event.

    An SSE event carries ``id: event_id`` when one is given; each line of its text is a
    ``data:`` line (a CR, CRLF or LF in the chunk ends a line, as SSE readers split them,
    so a chunk can never forge a field or end its event early).
    """
    if sse:
        if isinstance(chunk, (bytes, bytearray, memoryview)):
            text = bytes(chunk).decode("utf-8", "replace")
        elif isinstance(chunk, str):
            text = chunk
        else:
            text = encode_json(chunk).decode("utf-8")
        lines = _SSE_LINE_END.split(text) if "\r" in text else text.split("\n")
        head = "" if event_id is None else f"id: {event_id}\n"
        return (head + "".join(f"data: {line}\n" for line in lines) + "\n").encode("utf-8")
    if isinstance(chunk, str):
        return chunk.encode("utf-8")
    if isinstance(chunk, (bytes, bytearray, memoryview)):
        return bytes(chunk)
    return encode_json(chunk) + b"\n"


def sse_error(message: str, event_id: int | None = None) -> bytes:
    """The SSE event that ends a stream whose generator raised (with ``id:`` when given)."""
    head = b"" if event_id is None else b"id: %d\n" % event_id
    return head + b"event: error\ndata: " + encode_json({"error": message}) + b"\n\n"


def wants_sse(accept: str | None) -> bool:
    """True when the client asks for Server-Sent Events."""
    return bool(accept) and SSE_TYPE in accept.lower()  # type: ignore[union-attr]
