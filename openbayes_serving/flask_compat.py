"""Flask bridging: a flask.Request for ``request``, Flask's globals, returned Responses.

The only module on the request path that imports Flask or werkzeug. A predictor that
asks for none of this pays nothing for it: each helper runs only when needed.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from typing import Any
from urllib.parse import parse_qsl

from flask import Flask, Request, Response
from werkzeug.datastructures import Headers, ImmutableMultiDict
from werkzeug.exceptions import HTTPException

RawHeaders = Iterable[tuple[bytes, bytes]]

_app = Flask("openbayes_serving")
_app.json.ensure_ascii = False  # type: ignore[attr-defined]
_app.json.sort_keys = False  # type: ignore[attr-defined]
# Form fields may be as large as the body: max_body_size already bounds it (413 before
# any of this runs). Werkzeug 3.1 caps non-file fields at 500 kB, which 0.5.0 did not.
_app.config["MAX_FORM_MEMORY_SIZE"] = None


def make_args(query_string: bytes) -> ImmutableMultiDict[str, str]:
    """Query arguments as Flask's ``request.args`` holds them."""
    return ImmutableMultiDict(parse_qsl(query_string.decode("latin-1"), keep_blank_values=True))


def make_headers(raw: RawHeaders) -> Headers:
    """Request headers as a case-insensitive werkzeug ``Headers``."""
    return Headers([(k.decode("latin-1").title(), v.decode("latin-1")) for k, v in raw])


def build_environ(scope: dict[str, Any], body: bytes) -> dict[str, Any]:
    """A WSGI environ for an ASGI HTTP scope whose body has been read."""
    server = scope.get("server") or ("localhost", 80)
    client = scope.get("client") or ("", 0)
    environ: dict[str, Any] = {
        "REQUEST_METHOD": scope["method"],
        "SCRIPT_NAME": scope.get("root_path", "").encode("utf-8").decode("latin-1"),
        "PATH_INFO": scope["path"].encode("utf-8").decode("latin-1"),
        "QUERY_STRING": scope.get("query_string", b"").decode("latin-1"),
        "SERVER_NAME": str(server[0]),
        "SERVER_PORT": str(server[1]),
        "SERVER_PROTOCOL": "HTTP/" + scope.get("http_version", "1.1"),
        "REMOTE_ADDR": str(client[0]),
        "REMOTE_PORT": str(client[1]),
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scope.get("scheme", "http"),
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    for raw_name, raw_value in scope.get("headers", ()):
        name = raw_name.decode("latin-1").upper().replace("-", "_")
        value = raw_value.decode("latin-1")
        if name == "CONTENT_TYPE":
            environ["CONTENT_TYPE"] = value
            continue
        if name == "CONTENT_LENGTH":
            continue
        key = "HTTP_" + name
        environ[key] = f"{environ[key]},{value}" if key in environ else value
    return environ


def make_request(environ: dict[str, Any]) -> Request:
    """A real ``flask.Request`` over the same HTTP request.

    Its form limits follow ``max_body_size``: a field may be as large as the body, which
    was read whole and held to ``max_body_size`` before this request was made.
    """
    environ["wsgi.input"].seek(0)
    request = Request(environ)
    request.max_content_length = None
    request.max_form_memory_size = max(int(environ.get("CONTENT_LENGTH") or 0), 1)
    return request


def request_context(environ: dict[str, Any]) -> AbstractContextManager[Any]:
    """A Flask request context, for predictors that use ``flask.request`` or ``jsonify``."""
    environ["wsgi.input"].seek(0)
    return _app.request_context(environ)


def is_wsgi_response(value: Any) -> bool:
    """True for a flask.Response or any other callable WSGI application."""
    return isinstance(value, Response) or (
        callable(value) and not isinstance(value, (type, Iterator))
    )


def run_wsgi_response(
    response: Any, environ: dict[str, Any]
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """Run a returned WSGI application and collect its status, headers and body."""
    started: list[Any] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        started[:] = [status, headers]
        return lambda data: chunks.append(data)

    chunks: list[bytes] = []
    environ["wsgi.input"].seek(0)
    with _app.request_context(environ):
        iterable = response(environ, start_response)
        try:
            chunks.extend(iterable)
        finally:
            if hasattr(iterable, "close"):
                iterable.close()
    status, headers = started
    raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers]
    return int(status.split(" ", 1)[0]), raw, b"".join(chunks)


def http_exception_status(exc: BaseException) -> tuple[int, str] | None:
    """Status and description when a predictor raised werkzeug's ``abort()``."""
    if isinstance(exc, HTTPException) and exc.code is not None:
        return exc.code, exc.description or exc.name
    return None
