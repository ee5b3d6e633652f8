"""Exceptions raised by the runtime and by predictors.

Exception
├── ServingError             answered with status_code and JSON {**payload, "error": message}
│   ├── BadRequestError      400: the body does not parse, or has the wrong type
│   ├── NotAcceptableError   406: Accept allows neither JSON nor MessagePack
│   ├── UnauthorizedError    401: api_key is set and the request does not carry it
│   ├── NotFoundError        404: no route has this path
│   ├── MethodNotAllowedError 405: the route exists, not for this method
│   ├── RequestTimeoutError  408: the head or body did not arrive within request_timeout
│   ├── PayloadTooLargeError 413: the body is larger than max_body_size
│   ├── HeadTooLargeError    431: the request line and headers are too large
│   ├── OverloadedError      503 + Retry-After: the predict queue is full, or not ready
│   └── QueueTimeoutError    504: the request could not finish within request_timeout
├── BadResultError           500: predict() returned what cannot be answered (its message is shown)
├── ClientGone               the client left before its answer: nothing is sent
├── UnrecoverableError       500, then readiness goes false, in-flight work drains, exit non-zero
└── StartupError             the server cannot start; the message says what to fix
    ├── PredictorError       the Predictor class breaks the convention
    └── SettingsError        a setting has a bad value
"""

from __future__ import annotations

from typing import Any


class ServingError(Exception):
    """Raise from predict() to answer with ``status_code`` and a JSON body.

    The body is ``{**payload, "error": message}``, as in openbayes-serving 0.5.0.
    """

    status_code = 400

    def __init__(
        self,
        message: str,
        status_code: int | None = None,
        payload: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if status_code is not None:
            self.status_code = status_code
        self.payload = {**(payload or {}), "error": message}
        self.headers: dict[str, str] = {}


class BadRequestError(ServingError):
    """400: the body does not parse, or is not of the type the predictor asks for."""

    status_code = 400


class UnauthorizedError(ServingError):
    """401: the request lacks the API key."""

    status_code = 401


class NotFoundError(ServingError):
    """404: no route has this path."""

    status_code = 404


class MethodNotAllowedError(ServingError):
    """405: the route exists but not for this method."""

    status_code = 405


class NotAcceptableError(ServingError):
    """406: the Accept header allows no representation of the result."""

    status_code = 406


class RequestTimeoutError(ServingError):
    """408: the client did not send its body within ``request_timeout``."""

    status_code = 408


class PayloadTooLargeError(ServingError):
    """413: the body is larger than ``max_body_size``."""

    status_code = 413


class HeadTooLargeError(ServingError):
    """431: the request line and headers are larger than the server takes."""

    status_code = 431


class OverloadedError(ServingError):
    """503: the queue is full, the model is not ready, or the server is draining."""

    status_code = 503

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.headers = {"retry-after": str(retry_after)}


class QueueTimeoutError(ServingError):
    """504: the request did not finish within ``request_timeout``."""

    status_code = 504


class BadResultError(Exception):
    """predict() (or postprocess) returned a value that cannot be answered.

    A mistake in the predictor, not in the request: answered 500 with this message (it
    names the value's type, never its content) in every mode.
    """


class ClientGone(Exception):
    """The client disconnected before its answer: nobody to send it to."""


class UnrecoverableError(Exception):
    """Raise from predict() when the model cannot serve again (a lost GPU, say).

    The request is answered 500, readiness turns false, requests in flight finish and
    the process exits non-zero so that the platform restarts it.
    """


class StartupError(Exception):
    """The server cannot start; the message says what to fix."""


class PredictorError(StartupError):
    """The predictor class breaks the convention."""


class SettingsError(StartupError):
    """A setting has a bad value."""
