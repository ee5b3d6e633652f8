"""Hand predict calls from the event loop to the model threads and bring results back.

The bridge between asyncio and the scheduler's threads: one future per request, a deadline
(``request_timeout``, or the client's ``X-Request-Timeout`` when smaller) with its loop
timer, and one loop wake-up per group of results.
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
from .request import Request
from .scheduler import Job, Scheduler
from .streams import STREAMED, Channel, StreamStart

logger = logging.getLogger(__name__)


class Dispatcher:
    """Submits predict calls from the event loop and awaits their results.

    One event loop per dispatcher: the first ``submit`` binds it.
    """

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
        completions = self._completions
        if completions is None:
            loop = asyncio.get_running_loop()
            completions = self._completions = _Completions(loop, self._on_late_fatal)
        request = call.request
        if request.deadline <= time.monotonic():
            raise request.deadline_error("request did not reach predict")
        pending = _Pending(completions, request)
        call.open_stream = pending.open_stream
        pending.job = self.scheduler.submit(
            call, pending.on_done, request.deadline, request, call.admission
        )
        timer = completions.loop.call_later(
            request.deadline - time.monotonic(), pending.expire, self.scheduler
        )
        try:
            return await pending.future
        finally:
            timer.cancel()


class _Pending:
    """One submitted call: its future, and how it ends (a result, a stream, its deadline)."""

    __slots__ = ("completions", "request", "future", "job")

    def __init__(self, completions: _Completions, request: Request) -> None:
        self.completions = completions
        self.request = request
        self.future: asyncio.Future[Any] = completions.loop.create_future()
        self.job: Job | None = None

    def on_done(self, result: Any, error: BaseException | None) -> None:
        """A model thread: predict returned (or raised, or the job never ran)."""
        if result is not STREAMED:
            if error is not None and isinstance(error, QueueTimeoutError):
                # the scheduler's 504: the request's own names the deadline that applied
                error = self.request.deadline_error("request did not start")
            self.completions.settle(self.future, result, error)

    def open_stream(self) -> Channel:
        """A model thread: predict streams; the request gets the channel at once."""
        loop = self.completions.loop
        event = asyncio.Event()
        channel = Channel(functools.partial(loop.call_soon_threadsafe, event.set))
        self.completions.settle(self.future, StreamStart(channel, event), None)
        return channel

    def expire(self, scheduler: Scheduler) -> None:
        """The loop: the deadline passed first; 504, and the job leaves the queue."""
        if self.future.done():
            return
        if self.job is not None:
            scheduler.cancel(self.job)
        request = self.request
        logger.warning(
            "request timed out after %.1fs (%s): answered 504",
            request.timeout,
            request.deadline_source,
        )
        self.future.set_exception(request.deadline_error("request did not finish"))


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
        self.loop = loop
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
            self.loop.call_soon_threadsafe(self._drain)

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
