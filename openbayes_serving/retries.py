"""How the client retries: urllib3's ``Retry`` bounded by each call's deadline.

Imported when a ``Client`` is made (it loads requests and urllib3). A call retries what
gave no result: a connection that could not be made (nothing was sent) and a 503 (the
runtime answers 503 before predict runs: queue full, model loading, draining; after it
started only when it produced nothing: a device out of memory, a drain that ran out of
``graceful_timeout``). A reset connection, a read timeout or any other status is never
retried: predict may have run to its end. It waits as ``Retry-After`` says, else backs
off exponentially, at most
``max_retries`` times, and never starts a retry that its deadline would not let finish:
each call sets that deadline (``deadline``) around its request, and each attempt tells the
server the time then left in ``X-Request-Timeout`` (``TimeLeft``).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import time
from collections.abc import Iterator
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import MaxRetryError, ResponseError
from urllib3.util.retry import Retry

logger = logging.getLogger(__name__)

TIMEOUT_HEADER = "X-Request-Timeout"
BACKOFF_FACTOR = 0.5  # without Retry-After: 0 s, then 1 s, 2 s, 4 s... between attempts
RETRIED_STATUS = frozenset({503})
RETRIED_METHODS = frozenset({"GET", "HEAD", "POST"})


# The deadline (time.monotonic()) of the call in progress on this thread, if it has one.
_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar("deadline", default=None)


@contextlib.contextmanager
def deadline(at: float | None) -> Iterator[None]:
    """Retry the requests made inside the block only while ``at`` (monotonic) allows."""
    token = _DEADLINE.set(at)
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def format_seconds(seconds: float) -> str:
    """A duration as ``X-Request-Timeout`` carries it: a decimal number, at most 3 places."""
    return f"{max(seconds, 0.001):.3f}".rstrip("0").rstrip(".")


class TimeLeft(str):
    """``X-Request-Timeout``'s value: the seconds left before a deadline, when it is sent.

    A ``str`` to requests, which checks header values as it prepares a request; the bytes
    on the wire come from ``encode``, which http.client calls on every attempt urllib3
    makes, so a retry tells the server the time left then, not at the first attempt.
    """

    deadline: float

    def __new__(cls, at: float) -> TimeLeft:
        """The value for a call whose deadline is ``at`` (``time.monotonic()``)."""
        value = super().__new__(cls, format_seconds(at - time.monotonic()))
        value.deadline = at
        return value

    def encode(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        """The seconds left now, encoded."""
        return format_seconds(self.deadline - time.monotonic()).encode(encoding, errors)


class DeadlineRetry(Retry):
    """urllib3's ``Retry`` that gives up rather than wait past the call's deadline.

    Before each retry it compares the wait (``Retry-After``, else the backoff) with the
    time left; a wait that would not end before the deadline ends the call instead.
    """

    RETRY_AFTER_STATUS_CODES = RETRIED_STATUS  # the only status retried, with or without it

    def increment(
        self,
        method: str | None = None,
        url: str | None = None,
        response: Any = None,
        error: Exception | None = None,
        _pool: Any = None,
        _stacktrace: Any = None,
    ) -> DeadlineRetry:
        """The next state, as urllib3's; MaxRetryError when the wait would pass the deadline."""
        retry = super().increment(
            method=method,
            url=url,
            response=response,
            error=error,
            _pool=_pool,
            _stacktrace=_stacktrace,
        )
        at = _DEADLINE.get()
        left = None if at is None else at - time.monotonic()
        wait = retry.wait_before_next(response)
        if left is not None and wait >= left:
            reason = error or ResponseError(
                f"no retry: waiting {wait:g}s would pass the deadline ({max(left, 0):.2f}s left)"
            )
            raise MaxRetryError(_pool, url, reason) from reason
        cause = f"HTTP {response.status}" if response is not None else type(error).__name__
        logger.debug("%s %s: %s, retrying in %.2fs", method, url, cause, wait)
        return retry

    def wait_before_next(self, response: Any = None) -> float:
        """Seconds ``sleep`` will wait: ``Retry-After`` when the answer has one, else backoff."""
        if self.respect_retry_after_header and response is not None:
            after = self.get_retry_after(response)
            if after:
                return float(after)
        return float(self.get_backoff_time())


def retry_policy(max_retries: int) -> DeadlineRetry:
    """At most ``max_retries`` retries of refused connections and 503 answers.

    A connection error after the request was sent (reset, read timeout) is never
    retried: the server may have run it. A 503 left after the last retry is returned as
    the answer, not raised.
    """
    return DeadlineRetry(
        total=max_retries,
        connect=max_retries,
        read=False,
        status=max_retries,
        other=0,
        allowed_methods=RETRIED_METHODS,
        status_forcelist=RETRIED_STATUS,
        backoff_factor=BACKOFF_FACTOR,
        raise_on_status=False,
        respect_retry_after_header=True,
    )


def retrying_session(max_retries: int) -> requests.Session:
    """A requests Session whose HTTP and HTTPS requests retry by ``retry_policy``."""
    session = requests.Session()
    adapter = HTTPAdapter(max_retries=retry_policy(max_retries))
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session
