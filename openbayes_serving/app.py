"""create_app(spec, settings) -> the ASGI app: lifecycle, routes, predict path, error mapping.

The model is built after the fork, on a loader thread started by the ASGI lifespan, so
``/healthz`` answers while it loads and ``/readyz`` answers 503 until it is ready.
"""

from __future__ import annotations

import asyncio
import contextvars
import enum
import functools
import hmac
import logging
import sys
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from . import codec
from .dispatch import Dispatcher
from .errors import (
    ClientGone,
    MethodNotAllowedError,
    NotFoundError,
    OverloadedError,
    PayloadTooLargeError,
    PredictorError,
    QueueTimeoutError,
    RequestTimeoutError,
    ServingError,
    UnauthorizedError,
    UnrecoverableError,
)
from .inject import HttpRequest
from .metrics import Metrics
from .predictor import Pipeline, PredictCall, PredictorSpec, build_instance
from .responses import (
    REQUEST_ID,
    Receive,
    RequestInfo,
    Responder,
    Send,
    StreamStart,
    guess_type,
    preflight,
    ui_file,
)
from .scheduler import Scheduler
from .settings import Settings

logger = logging.getLogger(__name__)

GREETING = {"message": "The service works: POST a request to this address to run a prediction."}


class Health(enum.Enum):
    """Where the serving process stands."""

    STARTING = "starting"
    READY = "ready"
    DRAINING = "draining"
    FAILED = "failed"


class ServingApp:
    """The ASGI application serving one predictor."""

    def __init__(
        self,
        spec: PredictorSpec,
        settings: Settings,
        on_fatal: Callable[[int, bool], None] | None = None,
        metrics_dir: str | None = None,
    ) -> None:
        self.spec = spec
        self.settings = settings
        self.health = Health.STARTING
        self.metrics = Metrics(metrics_dir)
        self.pipeline: Pipeline | None = None
        self.scheduler: Scheduler | None = None
        self.dispatcher: Dispatcher | None = None
        self._on_fatal = on_fatal or (lambda code, drain: None)
        self._pool = ThreadPoolExecutor(
            max_workers=settings.preprocess_threads, thread_name_prefix="pre-post"
        )
        self._out = Responder(settings.cors_origins, show_details=settings.is_local)
        self._api_key = settings.api_key.encode() if settings.api_key else None
        self.load_error: PredictorError | None = None

    # ---- lifecycle -------------------------------------------------------------------

    def load(self) -> None:
        """Build every instance and start the model threads (on the loader thread)."""
        started = time.monotonic()
        try:
            instances = [build_instance(self.spec, self.settings, d) for d in self.settings.devices]
        except PredictorError as exc:
            self._fail_to_load(exc)
            return
        except Exception as exc:  # a bug below the predictor: still one line, still exit 3
            logger.exception("building the model failed")
            self._fail_to_load(PredictorError(f"building the model failed: {exc}"))
            return
        self.pipeline = Pipeline(self.spec, instances)
        self.scheduler = Scheduler(
            [self.pipeline.runner(instance) for instance in instances],
            concurrency=self.settings.predict_concurrency,
            max_queue=self.settings.max_queue,
            batch=self.spec.batch,
        )
        self.scheduler.on_batch = self.metrics.observe_batch
        self.scheduler.on_timing = self.metrics.observe_timing
        self.scheduler.start()
        self.dispatcher = Dispatcher(self.scheduler, self.settings.request_timeout)
        self.metrics.set_load_time(time.monotonic() - started)
        if self.spec.has_run:
            for instance in instances:
                threading.Thread(
                    target=self._background, args=(instance.run,), name="predictor-run", daemon=True
                ).start()
        self.health = Health.READY
        logger.info(
            "%s ready in %.2fs (%d instance(s) on %s, predict_concurrency %d%s)",
            self.spec.name,
            time.monotonic() - started,
            len(instances),
            ", ".join(self.settings.devices),
            self.settings.predict_concurrency,
            f", batch {self.spec.batch.max_batch_size}" if self.spec.batch else "",
        )

    def _fail_to_load(self, exc: PredictorError) -> None:
        logger.error("%s", exc)
        self.load_error = exc
        self.health = Health.FAILED
        self._on_fatal(3, False)

    def _background(self, run: Callable[[], Any]) -> None:
        try:
            run()
        except Exception:
            logger.exception("%s.run() raised", self.spec.name)
            if self.settings.is_production:
                logger.error("exiting so that the platform restarts the server")
                self.health = Health.FAILED
                self._on_fatal(4, True)

    def start_draining(self) -> None:
        """Readiness goes false; requests already accepted still finish."""
        if self.health is Health.READY:
            self.health = Health.DRAINING
            logger.info("draining: finishing requests in flight")

    def shutdown(self) -> None:
        """Stop the model threads once the server has drained."""
        if self.scheduler is not None:
            self.scheduler.close(self.settings.graceful_timeout)
        self._pool.shutdown(wait=False)

    # ---- ASGI --------------------------------------------------------------------------

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        """The ASGI entry: HTTP requests and the lifespan."""
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                threading.Thread(target=self.load, name="loader", daemon=True).start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await asyncio.get_running_loop().run_in_executor(None, self.shutdown)
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        ctx = RequestInfo(scope["headers"])
        token = REQUEST_ID.set(ctx.request_id)
        started = time.perf_counter()
        status = 500
        try:
            status = await self._route(scope, receive, send, ctx)
        except ClientGone:
            status = 499  # nobody to answer
        except Exception as exc:
            status = await self._send_error(send, ctx, exc)
        finally:
            self.metrics.observe_request(scope["path"], status, time.perf_counter() - started)
            if self.metrics.is_multiprocess and self.scheduler is not None:
                # Every worker keeps its own gauge current: a scrape reaches only one.
                self.metrics.queue_depth.set(self.scheduler.queue_depth)
            REQUEST_ID.reset(token)

    async def _route(
        self, scope: dict[str, Any], receive: Receive, send: Send, ctx: RequestInfo
    ) -> int:
        method, path = scope["method"], scope["path"]
        if method == "OPTIONS":
            return await self._out.respond(send, ctx, 204, b"", None, preflight(scope["headers"]))
        if path == "/":
            if method == "POST":
                self._authorize(ctx)
                return await self._predict(scope, receive, send, ctx)
            if method in ("GET", "HEAD"):
                if ctx.accept and "text/html" in ctx.accept:
                    return await self._out.respond(
                        send, ctx, 200, ui_file("index.html"), "text/html; charset=utf-8"
                    )
                return await self._out.respond(
                    send, ctx, 200, codec.encode_json(GREETING), codec.JSON_TYPE
                )
            raise MethodNotAllowedError(f"{method} / is not allowed: use GET or POST")
        if method not in ("GET", "HEAD"):
            raise MethodNotAllowedError(f"{method} {path} is not allowed")
        if path == "/healthz":
            ok = self.health is not Health.FAILED
            return await self._out.json(
                send, ctx, 200 if ok else 503, {"status": self.health.value}
            )
        if path == "/readyz":
            ready = self.health is Health.READY
            return await self._out.json(
                send, ctx, 200 if ready else 503, {"status": self.health.value}
            )
        if path == "/metrics":
            self._authorize(ctx)
            body = self.metrics.render(self.scheduler.queue_depth if self.scheduler else 0)
            return await self._out.respond(
                send, ctx, 200, body, "text/plain; version=0.0.4; charset=utf-8"
            )
        if path.startswith("/ui/"):
            return await self._out.respond(send, ctx, 200, ui_file(path[4:]), guess_type(path))
        raise NotFoundError(f"no route for {path}: POST / to predict")

    def _authorize(self, ctx: RequestInfo) -> None:
        if self._api_key is None:
            return
        given = b""
        if ctx.auth is not None:
            name, value = ctx.auth
            given = (
                value[7:] if name == b"authorization" and value[:7].lower() == b"bearer " else value
            )
        if not hmac.compare_digest(given, self._api_key):
            raise UnauthorizedError("missing or wrong API key: send Authorization: Bearer <key>")

    async def _read_body(self, receive: Receive, ctx: RequestInfo) -> bytes:
        limit = self.settings.max_body_size
        if (
            ctx.content_length is not None
            and ctx.content_length.isdigit()
            and int(ctx.content_length) > limit
        ):
            raise PayloadTooLargeError(f"request body is larger than {limit} bytes")
        # A client that stalls while sending its body must not hold the request forever:
        # a timer cancels the read after request_timeout (no task per request).
        task = asyncio.current_task()
        assert task is not None
        expired: list[bool] = []
        timer = asyncio.get_running_loop().call_later(
            self.settings.request_timeout, _expire, task, expired
        )
        try:
            chunks = []
            size = 0
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise ClientGone
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLargeError(f"request body is larger than {limit} bytes")
                chunks.append(chunk)
                if not message.get("more_body"):
                    return chunks[0] if len(chunks) == 1 else b"".join(chunks)
        except asyncio.CancelledError:
            # The loop may run a timer slightly before its due time, so ask the timer
            # itself whether it fired rather than comparing clocks.
            if not expired:
                raise  # cancelled by the server, not by the timer
            raise RequestTimeoutError(
                f"the request body did not arrive within {self.settings.request_timeout:g}s"
            ) from None
        finally:
            timer.cancel()

    async def _offload(self, func: Callable[..., Any], *args: Any) -> Any:
        call = functools.partial(contextvars.copy_context().run, func, *args)
        return await asyncio.get_running_loop().run_in_executor(self._pool, call)

    async def _predict(
        self, scope: dict[str, Any], receive: Receive, send: Send, ctx: RequestInfo
    ) -> int:
        self.metrics.in_flight.inc()
        try:
            return await self._run_pipeline(scope, receive, send, ctx)
        finally:
            self.metrics.in_flight.dec()

    async def _run_pipeline(
        self, scope: dict[str, Any], receive: Receive, send: Send, ctx: RequestInfo
    ) -> int:
        if self.health is not Health.READY or self.pipeline is None or self.dispatcher is None:
            reason = (
                "the model is loading"
                if self.health is Health.STARTING
                else "the server is shutting down"
            )
            raise OverloadedError(f"not ready: {reason}", retry_after=1)
        deadline = time.monotonic() + self.settings.request_timeout
        pipeline, spec = self.pipeline, self.spec
        body = await self._read_body(receive, ctx)
        request = HttpRequest(scope, body, ctx.content_type, ctx.accept)
        value: Any = pipeline.resolve_args(request)
        if pipeline.preprocess is not None:
            started = time.perf_counter()
            if spec.preprocess_is_async:
                value = await pipeline.preprocess(**value)
            else:
                value = await self._offload(pipeline.run_preprocess, value, request)
            self.metrics.observe_stage("preprocess", time.perf_counter() - started)
        result = await self.dispatcher.submit(
            PredictCall(value, request, None), deadline, _connection(receive)
        )
        if isinstance(result, StreamStart):
            return await self._out.stream(send, receive, ctx, result)
        if pipeline.postprocess is not None:
            started = time.perf_counter()
            if spec.postprocess_is_async:
                result = await pipeline.postprocess(result)
            else:
                result = await self._offload(pipeline.postprocess, result)
            self.metrics.observe_stage("postprocess", time.perf_counter() - started)
        if callable(result):
            from . import flask_compat  # Flask loads only for predictors that use it

            if flask_compat.is_wsgi_response(result):
                status, headers, data = await self._offload(
                    flask_compat.run_wsgi_response, result, request.environ()
                )
                return await self._out.respond(send, ctx, status, data, None, headers)
        data, content_type = codec.encode_result(result, ctx.accept)
        return await self._out.respond(send, ctx, 200, data, content_type)

    async def _send_error(self, send: Send, ctx: RequestInfo, exc: Exception) -> int:
        """The single mapping from exceptions to HTTP answers."""
        if isinstance(exc, ServingError):
            if exc.status_code >= 500 and not isinstance(exc, (OverloadedError, QueueTimeoutError)):
                logger.error("answered %d: %s", exc.status_code, exc.message)
            extra = [(k.encode(), v.encode()) for k, v in exc.headers.items()]
            return await self._out.json(send, ctx, exc.status_code, exc.payload, extra)
        if "werkzeug" in sys.modules:  # else nothing can have raised werkzeug's abort()
            from . import flask_compat

            http = flask_compat.http_exception_status(exc)
            if http is not None:
                return await self._out.json(send, ctx, http[0], {"error": http[1]})
        body: dict[str, Any] = {"error": "internal server error", "request_id": ctx.request_id}
        if isinstance(exc, UnrecoverableError):
            logger.error("unrecoverable error: %s; draining and exiting", exc, exc_info=exc)
            body["error"] = (
                f"unrecoverable error: {exc}" if self.settings.is_local else "unrecoverable error"
            )
            self.health = Health.FAILED
            self._on_fatal(4, True)
        elif isinstance(exc, TypeError) and "predict() returned" in str(exc):
            logger.error("%s", exc)
            body["error"] = str(exc)
        else:
            logger.exception("predict failed")
        if self.settings.is_local:
            body["traceback"] = "".join(
                traceback.format_exception(type(exc), exc, exc.__traceback__)
            )
        return await self._out.json(send, ctx, 500, body)


def _connection(receive: Receive) -> Any:
    """The server's object for this request with a ``disconnected`` flag, if it has one.

    uvicorn's ``receive`` is a method of its request cycle, which sets ``disconnected``
    when the connection drops; a queued job whose client has gone is then dropped
    instead of run. Other ASGI servers give None: their jobs always run.
    """
    cycle = getattr(receive, "__self__", None)
    return cycle if isinstance(getattr(cycle, "disconnected", None), bool) else None


def _expire(task: asyncio.Task[Any], expired: list[bool]) -> None:
    expired.append(True)
    task.cancel()


def create_app(
    spec: PredictorSpec,
    settings: Settings,
    on_fatal: Callable[[int, bool], None] | None = None,
    metrics_dir: str | None = None,
) -> ServingApp:
    """The ASGI app for one predictor; the model loads when the lifespan starts."""
    return ServingApp(spec, settings, on_fatal, metrics_dir)
