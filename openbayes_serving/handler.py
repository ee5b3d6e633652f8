"""``POST /``: one prediction from the request's body to the answer.

Admission first, from the request's head alone: the model is ready (or the request waits
for it to load), the queue has a place, and the bodies held in memory leave room for
this one; a request refused here costs no body read and no parsing. Then the body
(bounded in size and time), the injected arguments, preprocess, predict on a model
thread, postprocess, and the answer (``results``). Errors propagate to the app's
boundary, which answers them through ``error_map``.

For a predictor that asks for ``cancelled`` (and only then) a request also gets its
``Cancelled``, a task that sets it when the client hangs up and a timer that sets it at
the deadline; once it is set the request is answered as cancelled (499 unsent, or 504)
whatever the stages returned.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from .dispatch import Dispatcher
from .errors import (
    BadRequestError,
    ClientGone,
    OverloadedError,
    QueueTimeoutError,
    UnrecoverableError,
)
from .lifecycle import Lifecycle
from .metrics import Metrics
from .pipeline import Pipeline, PredictCall
from .request import Cancelled, Request, Send
from .responses import Responder
from .results import send_result
from .scheduler import Admission
from .streams import StreamOptions, StreamStart


class PredictHandler:
    """Serves ``POST /`` for one predictor."""

    def __init__(
        self, lifecycle: Lifecycle, metrics: Metrics, out: Responder, details: bool
    ) -> None:
        self._lifecycle = lifecycle
        self._metrics = metrics
        self._out = out
        self._details = details
        self._max_body = lifecycle.settings.max_body_size
        self._body_budget = lifecycle.settings.body_memory
        self._held = 0  # bytes of admitted bodies (declared, or max_body_size if not)
        self._streams = StreamOptions(
            heartbeat=lifecycle.settings.stream_heartbeat,
            on_first_chunk=metrics.observe_first_chunk,
            on_end=metrics.observe_stream_chunks,
        )

    async def __call__(self, request: Request, send: Send) -> int:
        """Answer one prediction request; returns the status sent."""
        metrics, lifecycle = self._metrics, self._lifecycle
        metrics.enter()
        try:
            if request.header_error is not None:
                raise BadRequestError(request.header_error)
            if not lifecycle.serving:  # the model may still be loading: wait for it
                await lifecycle.until_loaded(request)
            pipeline, dispatcher = lifecycle.pipeline, lifecycle.dispatcher
            if not lifecycle.serving or pipeline is None or dispatcher is None:
                reason = (
                    "the model failed to load"
                    if lifecycle.load_error is not None
                    else "the server is shutting down"
                )
                raise OverloadedError(f"not ready: {reason}", retry_after=1)
            size = self._body_size(request)
            if self._held and self._held + size > self._body_budget:
                raise OverloadedError(
                    f"server overloaded: {self._held >> 20} MiB of request bodies already held"
                )
            admission = lifecycle.admit()
            self._held += size
            try:
                if request.take_body(self._max_body) is None:  # still coming: read it
                    await request.read_body(self._max_body)
                compute = self._cancellable if pipeline.cancellable else self._compute
                result = await compute(request, pipeline, dispatcher, admission)
                return await send_result(
                    result, request, send, self._out, pipeline.offload, self._details, self._streams
                )
            finally:
                lifecycle.withdraw(admission)
                self._held -= size
        finally:
            metrics.leave()
            cancelled = request.cancelled
            if cancelled is not None and cancelled.reason is not None:
                metrics.observe_cancelled(cancelled.reason)

    def _body_size(self, request: Request) -> int:
        """What the body will hold in memory: its declared length, else the most allowed."""
        length = request.content_length
        if length is not None and length.isdigit():
            return min(int(length), self._max_body)
        return self._max_body

    async def _compute(
        self, request: Request, pipeline: Pipeline, dispatcher: Dispatcher, admission: Admission
    ) -> Any:
        """Injection, preprocess, predict, postprocess: what the answer is made of."""
        value: Any = pipeline.resolve_args(request)
        if pipeline.has_preprocess:
            started = time.perf_counter()
            value = await pipeline.preprocess(value, request)
            self._metrics.observe_stage("preprocess", time.perf_counter() - started)
        result = await dispatcher.submit(PredictCall(value, request, admission=admission))
        if pipeline.has_postprocess:
            started = time.perf_counter()
            result = await pipeline.postprocess(result, request)
            self._metrics.observe_stage("postprocess", time.perf_counter() - started)
        return result

    async def _cancellable(
        self, request: Request, pipeline: Pipeline, dispatcher: Dispatcher, admission: Admission
    ) -> Any:
        """``_compute`` with the request's ``Cancelled``, set on hang-up or at the deadline.

        The watcher and the timer last until the result is ready; a stream's own watcher
        then takes over (``streams``). A request cancelled by then is answered as such.
        """
        cancelled = request.cancelled = Cancelled()
        watcher = asyncio.ensure_future(request.watch_disconnect())
        timer = asyncio.get_running_loop().call_later(
            request.deadline - time.monotonic(), cancelled.cancel, Cancelled.DEADLINE
        )
        try:
            result = await self._compute(request, pipeline, dispatcher, admission)
        except QueueTimeoutError:
            cancelled.cancel(Cancelled.DEADLINE)  # answered 504 while predict still runs
            raise
        except Exception as exc:
            if cancelled.reason is None or isinstance(exc, UnrecoverableError):
                raise  # a fatal error stays fatal, cancelled or not
            raise _cancelled_error(request, cancelled) from exc  # raised because cancelled
        finally:
            watcher.cancel()
            timer.cancel()
        if cancelled.reason is not None and not isinstance(result, StreamStart):
            raise _cancelled_error(request, cancelled)
        return result


def _cancelled_error(request: Request, cancelled: Cancelled) -> Exception:
    """How a cancelled request ends: nothing sent to a client that left, else 504."""
    if cancelled.reason == Cancelled.DISCONNECT:
        return ClientGone()
    return request.deadline_error("request did not finish")
