"""``POST /``: one prediction from the request's body to the answer.

Readiness, then the body (bounded in size and time), the injected arguments,
preprocess, predict on a model thread, postprocess, and the answer (``results``).
Errors propagate to the app's boundary, which answers them through ``error_map``.
"""

from __future__ import annotations

import time
from typing import Any

from .errors import OverloadedError
from .lifecycle import Health, Lifecycle
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

    async def __call__(self, request: Request, send: Send) -> int:
        """Answer one prediction request; returns the status sent."""
        self._metrics.in_flight.inc()
        try:
            return await self._predict(request, send)
        finally:
            self._metrics.in_flight.dec()

    async def _predict(self, request: Request, send: Send) -> int:
        lifecycle = self._lifecycle
        pipeline, dispatcher = lifecycle.pipeline, lifecycle.dispatcher
        if lifecycle.health is not Health.READY or pipeline is None or dispatcher is None:
            reason = (
                "the model is loading"
                if lifecycle.health is Health.STARTING
                else "the server is shutting down"
            )
            raise OverloadedError(f"not ready: {reason}", retry_after=1)
        await request.read_body(self._max_body)
        value: Any = pipeline.resolve_args(request)
        if pipeline.has_preprocess:
            started = time.perf_counter()
            value = await pipeline.preprocess(value, request)
            self._metrics.observe_stage("preprocess", time.perf_counter() - started)
        result = await dispatcher.submit(PredictCall(value, request))
        if pipeline.has_postprocess:
            started = time.perf_counter()
            result = await pipeline.postprocess(result)
            self._metrics.observe_stage("postprocess", time.perf_counter() - started)
        return await send_result(result, request, send, self._out, pipeline.offload, self._details)
