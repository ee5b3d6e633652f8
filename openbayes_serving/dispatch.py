"""Hand predict calls from the event loop to the model threads and bring results back.

The bridge between asyncio and the scheduler's threads: one future per request, a timer
for the request's deadline (``request_timeout``, or the client's ``X-Request-Timeout``
when smaller), and one loop wake-up per group of results.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import time
from typing import Any, Callable

from .errors import QueueTimeoutError, UnrecoverableError
from .pipeline import PredictCall
from .scheduler import Scheduler
from .streams import STREAMED, Channel, StreamStart

logger = logging.getLogger(__name__)


class Dispatcher:
    """Submits predict calls from the event loop and awaits their results."""

    def __init__(
        self, scheduler: Scheduler, on_late_fatal: Callable[[BaseException], None] | None = None
    ) -> None:
        """Submit through ``scheduler``.

        ``on_late_fatal`` hears of an ``UnrecoverableError`` raised by a predict whose
        request was already answered (504): the server must still leave.
        """
        self.scheduler = scheduler
        self._on_late_fatal = on_late_fatal
        self._completions: _Completions | None = None  # made on the event loop

    async def submit(self, call: PredictCall) -> Any:
        """The result of predict for ``call``, or a StreamStart when predict streams.

        The request's deadline bounds the wait; a job whose client has gone before it
        starts raises ``ClientGone`` here instead of running.

        Raises:
            OverloadedError: the queue is full (503).
            QueueTimeoutError: no result before the request's deadline (504); a job still
                queued leaves the queue, a running one is left to finish (its
                ``cancelled``, when it asked, is set by the handler).
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        completions = self._completions
        if completions is None:
            completions = self._completions = _Completions(loop, self._on_late_fatal)

        request = call.request

        def on_done(result: Any, error: BaseException | None) -> None:
            if result is not STREAMED:
                if error is not None and isinstance(error, QueueTimeoutError):
                    # the scheduler's 504: the request's own names the deadline that applied
                    error = request.deadline_error("request did not start")
                completions.settle(future, result, error)

        def open_stream() -> Channel:
            event = asyncio.Event()
            channel = Channel(functools.partial(loop.call_soon_threadsafe, event.set))
            completions.settle(future, StreamStart(channel, event), None)
            return channel

        remaining = request.deadline - time.monotonic()
        if remaining <= 0:
            raise request.deadline_error("request did not reach predict")
        call.open_stream = open_stream
        job = self.scheduler.submit(call, on_done, request.deadline, request, call.admission)

        def expire() -> None:
            if not future.done():
                self.scheduler.cancel(job)
                logger.warning(
                    "request timed out after %.1fs (%s): answered 504",
                    request.timeout,
                    request.deadline_source,
                )
                future.set_exception(request.deadline_error("request did not finish"))

        timer = loop.call_later(remaining, expire)
        try:
            return await future
        finally:
            timer.cancel()


class _Completions:
    """Results handed from model threads to the event loop, one wake-up per group.

    ``call_soon_threadsafe`` writes to the loop's wake-up pipe: once per result is a
    system call per request. Here a thread appends to a deque and wakes the loop only
    when no drain is already scheduled; the drain settles everything queued so far.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        on_late_fatal: Callable[[BaseException], None] | None = None,
    ) -> None:
        self._loop = loop
        self._on_late_fatal = on_late_fatal
        self._items: collections.deque[tuple[asyncio.Future[Any], Any, BaseException | None]]
        self._items = collections.deque()
        self._scheduled = False

    def settle(self, future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
        """Any thread: resolve ``future`` on the loop."""
        self._items.append((future, result, error))
        if not self._scheduled:
            # A drain scheduled twice is harmless; a result never drained is not: the flag
            # is reset before draining, so an append after the reset schedules again.
            self._scheduled = True
            self._loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        self._scheduled = False
        items = self._items
        while items:
            future, result, error = items.popleft()
            if future.done():  # answered 504 already
                if isinstance(error, UnrecoverableError) and self._on_late_fatal is not None:
                    self._on_late_fatal(error)
                continue
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)
