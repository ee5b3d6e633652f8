"""The one mapping from an exception to an HTTP answer: status, JSON body, headers.

Every place that answers an error (the app's boundary, a stream's last chunk, the
protocol's refusals of a bad head) asks ``error_answer``; it is the only place that
decides what production hides. Pure: it logs nothing and changes nothing; the answer
says how the caller should log it and whether the server must now stop.
"""

from __future__ import annotations

import sys
import traceback
from dataclasses import dataclass
from typing import Any, Callable

from . import errors

Headers = tuple[tuple[bytes, bytes], ...]


@dataclass(frozen=True)
class ErrorAnswer:
    """What to send for an exception, and what the caller must do besides."""

    status: int
    body: dict[str, Any]
    headers: Headers = ()
    log: str | None = None  # None, "error" (the message) or "exception" (with traceback)
    fatal: bool = False  # the server must drain and exit (UnrecoverableError)
    send: bool = True  # False when nobody is left to answer (the client left)

    @property
    def message(self) -> str:
        """The body's ``error`` text."""
        return str(self.body.get("error", ""))


Rule = Callable[[BaseException, str, bool], ErrorAnswer]


def _serving(exc: BaseException, request_id: str, details: bool) -> ErrorAnswer:
    assert isinstance(exc, errors.ServingError)
    quiet = isinstance(exc, (errors.OverloadedError, errors.QueueTimeoutError))
    headers = tuple((k.encode("latin-1"), v.encode("latin-1")) for k, v in exc.headers.items())
    log = "error" if exc.status_code >= 500 and not quiet else None
    return ErrorAnswer(exc.status_code, exc.payload, headers, log)


def _internal(exc: BaseException, request_id: str, details: bool) -> ErrorAnswer:
    body: dict[str, Any] = {"error": "internal server error", "request_id": request_id}
    return ErrorAnswer(500, _with_traceback(body, exc, details), log="exception")


def _bad_result(exc: BaseException, request_id: str, details: bool) -> ErrorAnswer:
    body = {"error": str(exc), "request_id": request_id}
    return ErrorAnswer(500, _with_traceback(body, exc, details), log="error")


def _unrecoverable(exc: BaseException, request_id: str, details: bool) -> ErrorAnswer:
    message = f"unrecoverable error: {exc}" if details else "unrecoverable error"
    body = {"error": message, "request_id": request_id}
    return ErrorAnswer(500, _with_traceback(body, exc, details), log="exception", fatal=True)


def _out_of_memory(exc: BaseException, request_id: str, details: bool) -> ErrorAnswer:
    body = {"error": "out of device memory: retry later, or send a smaller input"}
    body["request_id"] = request_id
    headers = ((b"retry-after", b"1"),)
    return ErrorAnswer(503, _with_traceback(body, exc, details), headers, log="exception")


def _is_out_of_memory(exc: BaseException) -> bool:
    """Torch's (CUDA or other device) out-of-memory error, recognised without importing torch."""
    kind = type(exc)
    return kind.__name__ == "OutOfMemoryError" and kind.__module__.split(".")[0] == "torch"


def _client_gone(exc: BaseException, request_id: str, details: bool) -> ErrorAnswer:
    return ErrorAnswer(499, {"error": "the client left"}, send=False)


# Every exception class of errors.py, by name: a test fails when one is missing. An
# exception is answered by the rule of the first class of its MRO found here.
RULES: dict[type[BaseException], Rule] = {
    errors.ServingError: _serving,
    errors.BadRequestError: _serving,
    errors.UnauthorizedError: _serving,
    errors.NotFoundError: _serving,
    errors.MethodNotAllowedError: _serving,
    errors.NotAcceptableError: _serving,
    errors.RequestTimeoutError: _serving,
    errors.PayloadTooLargeError: _serving,
    errors.HeadTooLargeError: _serving,
    errors.OverloadedError: _serving,
    errors.QueueTimeoutError: _serving,
    errors.BadResultError: _bad_result,
    errors.ClientGone: _client_gone,
    errors.UnrecoverableError: _unrecoverable,
    # Start-up errors never reach a request; if one does, it is a bug like any other.
    errors.StartupError: _internal,
    errors.PredictorError: _internal,
    errors.SettingsError: _internal,
}


def error_answer(exc: BaseException, request_id: str = "-", details: bool = False) -> ErrorAnswer:
    """The answer for ``exc``; ``details`` (local mode) adds messages and tracebacks."""
    for cls in type(exc).__mro__:
        rule = RULES.get(cls)
        if rule is not None:
            return rule(exc, request_id, details)
    if _is_out_of_memory(exc):
        return _out_of_memory(exc, request_id, details)
    if "werkzeug" in sys.modules:  # else nothing can have raised werkzeug's abort()
        from . import flask_compat

        http = flask_compat.http_exception_status(exc)
        if http is not None:
            return ErrorAnswer(http[0], {"error": http[1]})
    return _internal(exc, request_id, details)


def _with_traceback(body: dict[str, Any], exc: BaseException, details: bool) -> dict[str, Any]:
    if details:
        body["traceback"] = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return body
