"""``POST /``: one prediction from the request's body to the answer.

Admission first, from the request's head alone: the model is ready (or the request waits
for it to load), the queue has a place, and the bodies held in memory leave room for
this one; a request refused here costs no body read and no parsing. Then the body
(bounded in size and time), the injected arguments, preprocess, predict on a model
thread, postprocess, and the answer (``results``). Errors propagate to the app's
boundary, which answers them through ``error_map``.
"""

from __future__ import annotations

import time
from typing import Any

from .errors import OverloadedError
from .lifecycle import Lifecycle
from .metrics import Metrics
from .pipeline import PredictCall
from .request import Request, Send
from .responses import Responder
from .results import send_result


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

    async def __call__(self, request: Request, send: Send) -> int:
        """Answer one prediction request; returns the status sent."""
        self._metrics.in_flight.inc()
        try:
            return await self._predict(request, send)
        finally:
            self._metrics.in_flight.dec()

    async def _predict(self, request: Request, send: Send) -> int:
        lifecycle = self._lifecycle
        await lifecycle.until_loaded(request.deadline, request.timeout)
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
            await request.read_body(self._max_body)
            value: Any = pipeline.resolve_args(request)
            if pipeline.has_preprocess:
                started = time.perf_counter()
                value = await pipeline.preprocess(value, request)
                self._metrics.observe_stage("preprocess", time.perf_counter() - started)
            result = await dispatcher.submit(PredictCall(value, request, admission=admission))
            return await self._answer(result, request, send)
        finally:
            lifecycle.withdraw(admission)
            self._held -= size

    def _body_size(self, request: Request) -> int:
        """What the body will hold in memory: its declared length, else the most allowed."""
        length = request.content_length
        if length is not None and length.isdigit():
            return min(int(length), self._max_body)
        return self._max_body

    async def _answer(self, result: Any, request: Request, send: Send) -> int:
        pipeline = self._lifecycle.pipeline
        assert pipeline is not None
        if pipeline.has_postprocess:
            started = time.perf_counter()
            result = await pipeline.postprocess(result)
            self._metrics.observe_stage("postprocess", time.perf_counter() - started)
        return await send_result(result, request, send, self._out, pipeline.offload, self._details)
