"""The request path's view of the predictor: inject, preprocess, predict, postprocess.

Built once per process from the ``PredictorSpec`` and the instances. It decides how
each stage runs: preprocess and postprocess awaited when they are coroutines, else on
the pre/post thread pool (outside the predict limit); predict on a model thread, through
the callable that ``runner`` returns for each instance. A stage that asks for
``cancelled`` gets the request's (``Request.cancelled``): preprocess through injection,
predict and postprocess as a keyword beside the value they take.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, Callable

from . import inject
from .predictor import PredictorSpec
from .request import Request
from .scheduler import Admission
from .streams import STREAMED, Channel, is_stream, pump


@dataclass(eq=False)
class PredictCall:
    """What a model thread gets for one request."""

    value: Any  # the kwargs of predict, or the result of preprocess
    request: Request
    open_stream: Callable[[], Channel] | None = None  # set by the dispatcher
    admission: Admission | None = None  # the queue place taken from the request's head


class Pipeline:
    """Resolve a request's arguments and run the stages around predict."""

    def __init__(self, spec: PredictorSpec, instances: list[Any], pool: Executor) -> None:
        self.spec = spec
        self.instances = instances
        self._pool = pool
        self._resolvers = tuple(
            (param, inject.REQUEST_RESOLVERS[name]) for param, name in spec.request_params
        )
        first = instances[0]
        self._preprocess: Callable[..., Any] | None = (
            first.preprocess if spec.has_preprocess else None
        )
        self._postprocess: Callable[..., Any] | None = (
            first.postprocess if spec.has_postprocess else None
        )
        self.cancellable = spec.asks_cancelled  # a Cancelled per request, and its watcher

    @property
    def has_preprocess(self) -> bool:
        """True when the predictor has a preprocess stage."""
        return self._preprocess is not None

    @property
    def has_postprocess(self) -> bool:
        """True when the predictor has a postprocess stage."""
        return self._postprocess is not None

    def resolve_args(self, request: Request) -> dict[str, Any]:
        """The injected arguments for predict (or preprocess). BadRequestError -> 400."""
        return {param: resolve(request) for param, resolve in self._resolvers}

    async def offload(self, func: Callable[..., Any], *args: Any) -> Any:
        """Run a blocking call on the pre/post pool, in this request's context."""
        call = functools.partial(contextvars.copy_context().run, func, *args)
        return await asyncio.get_running_loop().run_in_executor(self._pool, call)

    async def preprocess(self, args: dict[str, Any], request: Request) -> Any:
        """Run the preprocess stage: awaited when async, else on the pool."""
        assert self._preprocess is not None
        if self.spec.preprocess_is_async:
            return await self._preprocess(**args)
        return await self.offload(self._run_preprocess, args, request)

    async def postprocess(self, result: Any, request: Request) -> Any:
        """Run the postprocess stage: awaited when async, else on the pool."""
        postprocess = self._postprocess
        assert postprocess is not None
        asks = self.spec.postprocess_cancelled
        if asks is not None:
            postprocess = functools.partial(postprocess, **{asks: request.cancelled})
        if self.spec.postprocess_is_async:
            return await postprocess(result)
        return await self.offload(postprocess, result)

    def _run_preprocess(self, args: dict[str, Any], request: Request) -> Any:
        assert self._preprocess is not None
        if self.spec.uses_flask:
            from . import flask_compat  # Flask loads only for predictors that use it

            with flask_compat.request_context(request.environ()):
                return self._preprocess(**args)
        return self._preprocess(**args)

    def runner(self, instance: Any) -> Callable[[Any], Any]:
        """The callable a model thread bound to ``instance`` runs for each job (or batch)."""
        predict = instance.predict
        spec = self.spec
        names = [param for param, _ in spec.request_params]
        asks = spec.predict_cancelled  # set only when predict takes preprocess's result

        def invoke(call: PredictCall) -> Any:
            if asks is not None:
                result = predict(call.value, **{asks: call.request.cancelled})
            else:
                result = predict(call.value) if spec.has_preprocess else predict(**call.value)
            if is_stream(result):
                assert call.open_stream is not None
                pump(result, call.open_stream())
                return STREAMED
            return result

        def in_flask_context(call: PredictCall) -> Any:
            with flask_compat.request_context(call.request.environ()):
                return invoke(call)

        def run_batch(calls: list[PredictCall]) -> Any:
            if asks is not None:
                cancelled = [call.request.cancelled for call in calls]
                return predict([call.value for call in calls], **{asks: cancelled})
            if spec.has_preprocess:
                return predict([call.value for call in calls])
            return predict(**{name: [call.value[name] for call in calls] for name in names})

        if spec.batch is not None:
            return run_batch
        if spec.uses_flask:
            from . import flask_compat  # Flask loads only for predictors that use it

            return in_flask_context
        return invoke
