"""The ASGI app: the lifespan, the route table, authentication and the error boundary.

The model is built after the fork, on a loader thread started by the ASGI lifespan, so
``/healthz`` answers while it loads and ``/readyz`` answers 503 until it is ready. Every
HTTP request becomes a ``Request``, is routed by the table below, and any exception its
handler raises is answered here through ``error_map``.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import logging
import mimetypes
import re
import threading
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Awaitable, Callable

from . import codec
from .error_map import error_answer
from .errors import MethodNotAllowedError, NotFoundError, UnauthorizedError
from .handler import PredictHandler
from .lifecycle import EXIT_FATAL, Health, Lifecycle, OnFatal
from .metrics import CONTENT_TYPE as METRICS_TYPE
from .metrics import Metrics
from .predictor import PredictorSpec
from .request import REQUEST_ID, Receive, Request, Send
from .responses import Responder, preflight
from .settings import Settings

logger = logging.getLogger(__name__)

GREETING = {"message": "The service works: POST a request to this address to run a prediction."}

Handler = Callable[[Request, Send], Awaitable[int]]


@dataclass(frozen=True)
class Route:
    """One entry of the route table: a method and path, the handler's name, auth."""

    method: str
    path: str  # exact, or a prefix when it ends with "/" and is not "/"
    handler: str  # the name of a ServingApp method taking (request, send)
    auth: bool = False

    @property
    def is_prefix(self) -> bool:
        """True for a route that serves every path under its own."""
        return self.path.endswith("/") and self.path != "/"


ROUTES = (
    Route("POST", "/", "predict", auth=True),
    Route("GET", "/", "greeting"),
    Route("GET", "/healthz", "healthz"),
    Route("GET", "/readyz", "readyz"),
    Route("GET", "/metrics", "metrics_page", auth=True),
    Route("GET", "/ui/example", "example"),
    Route("GET", "/ui/", "ui_file"),
)
ROUTE_LABELS = frozenset(route.path for route in ROUTES if not route.is_prefix)


class ServingApp:
    """The ASGI application serving one predictor."""

    def __init__(
        self,
        spec: PredictorSpec,
        settings: Settings,
        on_fatal: OnFatal | None = None,
        metrics_dir: str | None = None,
    ) -> None:
        self.spec = spec
        self.settings = settings
        self.metrics = Metrics(metrics_dir, ROUTE_LABELS)
        self.lifecycle = Lifecycle(spec, settings, self.metrics, on_fatal)
        self._details = settings.is_local
        self._out = Responder(settings.cors_origins)
        self.predict: Handler = PredictHandler(
            self.lifecycle, self.metrics, self._out, self._details
        )
        self._api_key = settings.api_key.encode() if settings.api_key else None
        # The host's X-Forwarded-* rewrite of a scope (the worker sets uvicorn's), applied
        # to the requests that carry those headers.
        self.forwarded: Callable[[dict[str, Any]], None] | None = None
        self._exact: dict[str, dict[str, Route]] = {}
        for route in ROUTES:
            if not route.is_prefix:
                self._exact.setdefault(route.path, {})[route.method] = route
        self._prefixes = [route for route in ROUTES if route.is_prefix]
        # (method, path) -> (handler, auth) for the exact routes: one lookup per request
        self._direct: dict[tuple[str, str], tuple[Handler, bool]] = {}
        for route in ROUTES:
            if not route.is_prefix:
                for method in (route.method, "HEAD") if route.method == "GET" else (route.method,):
                    self._direct[(method, route.path)] = (getattr(self, route.handler), route.auth)

    # ---- ASGI --------------------------------------------------------------------------

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        """The ASGI entry: an HTTP request, or the lifespan (``_lifespan``)."""
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                await self._lifespan(receive, send)
            return
        request = Request(scope, receive, self.settings.request_timeout)
        if request.forwarded and self.forwarded is not None:
            self.forwarded(scope)
        token = REQUEST_ID.set(request.request_id)
        started = time.perf_counter()
        status = 500
        try:
            direct = self._direct.get((scope["method"], scope["path"]))
            if direct is None:
                status = await self._route(request, send)
            else:
                if direct[1]:
                    self._authorize(request)
                status = await direct[0](request, send)
        except Exception as exc:  # the error boundary: every handler's errors end here
            status = await self._answer_error(request, send, exc)
        finally:
            self.metrics.observe_request(scope["path"], status, time.perf_counter() - started)
            if self.metrics.is_multiprocess:
                # Every worker keeps its own gauge current: a scrape reaches only one.
                self.metrics.set_load(self.lifecycle.queue_depth, self.lifecycle.running)
            REQUEST_ID.reset(token)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                threading.Thread(target=self.lifecycle.load, name="loader", daemon=True).start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await asyncio.get_running_loop().run_in_executor(None, self.lifecycle.shutdown)
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _route(self, request: Request, send: Send) -> int:
        method, path = request.method, request.path
        if method == "OPTIONS":
            headers = preflight(request.scope["headers"])
            return await self._out.respond(send, request, 204, b"", None, headers)
        methods = self._exact.get(path)
        if methods is None:
            prefix = next((r for r in self._prefixes if path.startswith(r.path)), None)
            if prefix is None and method not in ("GET", "HEAD"):
                raise MethodNotAllowedError(f"{method} {path} is not allowed")
            if prefix is None:
                raise NotFoundError(f"no route for {path}: POST / to predict")
            methods = {prefix.method: prefix}
        route = methods.get("GET" if method == "HEAD" else method)
        if route is None:
            allowed = " or ".join(sorted(methods))
            raise MethodNotAllowedError(f"{method} {path} is not allowed: use {allowed}")
        if route.auth:
            self._authorize(request)
        handler: Handler = getattr(self, route.handler)
        return await handler(request, send)

    async def _answer_error(self, request: Request, send: Send, exc: Exception) -> int:
        answer = error_answer(exc, request.request_id, self._details)
        if answer.fatal:
            logger.error("unrecoverable error: %s; draining and exiting", exc, exc_info=exc)
            self.lifecycle.fail(EXIT_FATAL, True)
        elif answer.log == "exception":
            logger.error("predict failed", exc_info=exc)
        elif answer.log == "error":
            logger.error("answered %d: %s", answer.status, answer.message)
        if not answer.send:
            return answer.status
        return await self._out.error(send, request, answer)

    def _authorize(self, request: Request) -> None:
        # Only `Authorization: Bearer KEY` or `X-API-Key: KEY` (either header may be the
        # one that carries it); every candidate is compared in constant time.
        if self._api_key is None:
            return
        if request.auth is not None:
            for name, value in request.scope["headers"]:
                if name == b"authorization":
                    scheme, _, token = value.partition(b" ")
                    if scheme.lower() != b"bearer":
                        continue
                    value = token.strip()
                elif name != b"x-api-key":
                    continue
                if hmac.compare_digest(value, self._api_key):
                    return
        error = UnauthorizedError("missing or wrong API key: send Authorization: Bearer <key>")
        error.headers["www-authenticate"] = "Bearer"
        raise error

    # ---- handlers (named in ROUTES) ------------------------------------------------------

    async def greeting(self, request: Request, send: Send) -> int:
        """``GET /``: the try-it page for a browser, else a JSON greeting (once loaded)."""
        await self.lifecycle.until_loaded(request)
        if request.accept and "text/html" in request.accept:
            page = ui_file("index.html")
            return await self._out.respond(send, request, 200, page, "text/html; charset=utf-8")
        body = codec.encode_json(GREETING)
        return await self._out.respond(send, request, 200, body, codec.JSON_TYPE)

    async def healthz(self, request: Request, send: Send) -> int:
        """``GET /healthz``: 200 while the process can serve, 503 once it failed."""
        health = self.lifecycle.health
        status = 503 if health is Health.FAILED else 200
        return await self._out.json(send, request, status, {"status": health.value})

    async def readyz(self, request: Request, send: Send) -> int:
        """``GET /readyz``: 200 once the model is loaded (and warmed up) until draining starts.

        A predictor with ``health()`` is asked too (at most once a second, on a thread,
        within a timeout): a failure answers 503 with the reason.
        """
        health = self.lifecycle.health
        probe = self.lifecycle.health_probe
        if health is Health.READY and probe is not None:
            reason = await probe.check()
            if reason is not None:
                body = {"status": "unhealthy", "reason": reason}
                return await self._out.json(send, request, 503, body)
        status = 200 if health is Health.READY else 503
        return await self._out.json(send, request, status, {"status": health.value})

    async def metrics_page(self, request: Request, send: Send) -> int:
        """``GET /metrics``: the Prometheus text exposition."""
        self.metrics.set_load(self.lifecycle.queue_depth, self.lifecycle.running)
        body = self.metrics.render()
        return await self._out.respond(send, request, 200, body, METRICS_TYPE)

    async def example(self, request: Request, send: Send) -> int:
        """``GET /ui/example``: the example request the predictor declares, for the page."""
        body, content_type, kind = example_request(self.spec)
        headers = [(b"x-example-kind", kind.encode())]
        return await self._out.respond(send, request, 200, body, content_type, headers)

    async def ui_file(self, request: Request, send: Send) -> int:
        """``GET /ui/NAME``: a file of the try-it page."""
        path = request.path
        return await self._out.respond(send, request, 200, ui_file(path[4:]), guess_type(path))


_UI_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript", ".css": "text/css"}


def guess_type(path: str) -> str:
    """The content type of a UI file by its extension."""
    return next(
        (t for ext, t in _UI_TYPES.items() if path.endswith(ext)), "application/octet-stream"
    )


_UI_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}")


@functools.lru_cache(maxsize=16)
def ui_file(name: str) -> bytes:
    """A file of the try-it page, from the package (cached)."""
    if not _UI_NAME.fullmatch(name):  # the page's own names: no path, no odd characters
        raise NotFoundError("no such file")
    path = resources.files("openbayes_serving") / "ui" / name
    if not path.is_file():
        raise NotFoundError(f"no file {name}")
    return path.read_bytes()


def example_request(spec: PredictorSpec) -> tuple[bytes, str, str]:
    """The predictor's ``example``: (body, content type, "file" or "json").

    Raises:
        NotFoundError: the predictor declares no example, or its file is missing.
    """
    example = spec.example
    if example is None:
        raise NotFoundError(f"{spec.name} declares no example request")
    if isinstance(example, (str, Path)):
        path = (spec.directory / example).resolve()
        if not path.is_file() or spec.directory.resolve() not in path.parents:
            raise NotFoundError(f"the example file {example} is not in {spec.directory}")
        content_type = mimetypes.guess_type(path.name)[0] or codec.OCTET_TYPE
        return path.read_bytes(), content_type, "file"
    return codec.encode_json(example), codec.JSON_TYPE, "json"


def create_app(
    spec: PredictorSpec,
    settings: Settings,
    on_fatal: OnFatal | None = None,
    metrics_dir: str | None = None,
) -> ServingApp:
    """The ASGI app for one predictor; the model loads when the lifespan starts."""
    return ServingApp(spec, settings, on_fatal, metrics_dir)


def load_app(
    spec: PredictorSpec, settings: Settings, on_fatal: OnFatal | None = None
) -> ServingApp:
    """The app with its model built on this thread (Ray replicas, ``LocalClient``).

    Raises:
        StartupError: the model failed to build.
    """
    app = create_app(spec, settings, on_fatal)
    app.lifecycle.load_now()
    return app
