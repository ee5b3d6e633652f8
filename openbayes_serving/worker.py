"""The serving process under gunicorn: uvicorn's event-loop worker, its drain and recycling.

Each worker runs the app (built after the fork) on uvicorn with the bounded-head protocol,
drains on SIGTERM within ``graceful_timeout`` (answering what still runs 503 when it runs
out), leaves with ``lifecycle``'s exit codes, and tells the arbiter what it cannot see
through a pipe (``Inbox``): a fatal error, ``max_requests`` served, readiness, a drain
cut short.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import random
import signal
import socket
import struct
import sys
import time
from typing import TYPE_CHECKING, Any, Callable

from gunicorn.arbiter import Arbiter
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware
from uvicorn.server import Server
from uvicorn_worker import UvicornWorker

from .lifecycle import EXIT_DRAIN_TIMEOUT, Health
from .settings import Settings

if TYPE_CHECKING:  # the app (and Flask) load in the worker, after the fork
    from .app import ServingApp

logger = logging.getLogger(__name__)

RECYCLE_RETRY_SECONDS = 60.0  # a worker past max_requests asks again if not yet replaced
GC_YOUNG_THRESHOLD = 7000  # allocations between collections of the youngest generation
GIL_SWITCH_INTERVAL = 0.001  # seconds a thread waits for the GIL before it is handed over
DEFAULT_SWITCH_INTERVAL = 0.005  # Python's own

# Messages from a worker to the arbiter (a kind and the worker's pid).
FATAL = b"F"  # a fatal error: stop listening and stop every worker
RECYCLE = b"R"  # served max_requests: start a replacement, then stop this one
READY = b"U"  # the model is loaded: a replacement may now take over
DRAIN_CUT = b"C"  # requests were still running at graceful_timeout
RETIRE = signal.SIGUSR2  # from the arbiter to a replaced worker: finish and leave
_MESSAGE = struct.Struct("=ci")


class Inbox:
    """A pipe from the workers to the arbiter: short messages, each written atomically."""

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe()
        os.set_blocking(self.read_fd, False)
        os.set_blocking(self.write_fd, False)

    def send(self, kind: bytes, wake: bool = False) -> None:
        """Tell the arbiter ``kind`` (in a worker); it reads within a second, or now if woken."""
        try:
            os.write(self.write_fd, _MESSAGE.pack(kind, os.getpid()))
            if wake:
                os.kill(os.getppid(), signal.SIGWINCH)
        except OSError:  # the arbiter is gone: nobody to tell
            pass

    def receive(self) -> list[tuple[bytes, int]]:
        """Every message waiting (in the arbiter)."""
        data = b""
        while True:
            try:
                chunk = os.read(self.read_fd, 64 * _MESSAGE.size)
            except BlockingIOError:
                break
            if not chunk:
                break
            data += chunk
        whole = len(data) - len(data) % _MESSAGE.size
        return [_MESSAGE.unpack_from(data, at) for at in range(0, whole, _MESSAGE.size)]


def _route_uvicorn_logs() -> None:
    # uvicorn's worker points uvicorn's loggers at gunicorn's handlers; send them through
    # the root logger instead, so that every line has the same format and request id.
    for name in ("uvicorn", "uvicorn.error"):
        log = logging.getLogger(name)
        log.handlers = []
        log.propagate = True
    # No access log: uvicorn writes one only when this logger has handlers, and a line per
    # request costs more CPU than the rest of an echo request.
    access = logging.getLogger("uvicorn.access")
    access.handlers = []
    access.propagate = False


def settle_gc() -> None:
    """Once the model is ready: what it built stays out of the collector's way.

    Every request allocates hundreds of objects that die young, and each 700 of them
    start a collection of the youngest generation, which walks every object still young
    (those of the requests in flight). A larger threshold (``GC_YOUNG_THRESHOLD``, as
    long as the predictor set none larger) makes that a tenth as often; what loading the
    model built, collected once now, is frozen, so older collections skip it.
    """
    gc.collect()
    gc.freeze()
    young, older, oldest = gc.get_threshold()
    gc.set_threshold(max(young, GC_YOUNG_THRESHOLD), older, oldest)


def share_the_gil() -> None:
    """Once the model is ready: a thread that waits for the GIL gets it after 1 ms, not 5.

    A predict that holds the GIL (pure-Python work) otherwise makes the event loop wait
    up to Python's 5 ms switch interval each time it wakes, and it wakes several times
    per request: health checks, 503s and the hand-off of the next job all slow down.
    Measured with ``benchmarks/hostile.py overload`` (a 40 ms GIL-bound predict at 4x
    capacity): 503 p99 63-104 ms at 5 ms, 11-12 ms at 1 ms, and 14-22% more requests
    served. A predictor that set its own interval keeps it.
    """
    if sys.getswitchinterval() == DEFAULT_SWITCH_INTERVAL:
        sys.setswitchinterval(GIL_SWITCH_INTERVAL)


def forwarded_rewrite(trusted: list[str] | str) -> Callable[[dict[str, Any]], None]:
    """The X-Forwarded-For/-Proto rewrite of a scope, in place, for ``trusted`` peers.

    uvicorn's ``ProxyHeadersMiddleware`` itself, run to its end at once (it awaits nothing
    but the app, here one that returns): the same rules, without a middleware's layer and
    header scan on every request.
    """

    async def nothing(scope: Any, receive: Any, send: Any) -> None:
        return None

    middleware = ProxyHeadersMiddleware(nothing, trusted_hosts=trusted)

    def rewrite(scope: dict[str, Any]) -> None:
        with contextlib.suppress(StopIteration):
            middleware(scope, None, None).send(None)  # type: ignore[arg-type]

    return rewrite


class DrainingServer(Server):
    """uvicorn's server: drains the app first, bounds the drain, recycles the worker."""

    def __init__(
        self,
        config: Any,
        app: ServingApp,
        inbox: Inbox,
        recycle_after: int,
        accept_when_ready: bool,
    ) -> None:
        super().__init__(config)
        self.serving_app = app
        self.inbox = inbox
        self.recycle_after = recycle_after  # 0: never
        self.accept_when_ready = accept_when_ready  # a replacement: its elder serves meanwhile
        self.drain_cut = False
        self.loop: asyncio.AbstractEventLoop | None = None
        self._drain_timer: asyncio.TimerHandle | None = None
        self._recycle_asked_at: float | None = None
        self._told_ready = False

    async def serve(self, sockets: list[Any] | None = None) -> None:
        """Serve on ``sockets`` until told to stop, then drain."""
        self.loop = asyncio.get_running_loop()
        await super().serve(sockets=sockets)

    async def startup(self, sockets: list[Any] | None = None) -> None:
        """Start the app; a replacement accepts connections only once its model is ready."""
        if not self.accept_when_ready or not sockets:
            await super().startup(sockets=sockets)
            return
        await super().startup(sockets=[])  # the lifespan starts loading the model
        lifecycle = self.serving_app.lifecycle
        notify = self.config.callback_notify
        waited = 0
        while lifecycle.health is Health.STARTING and not self.should_exit:
            await asyncio.sleep(0.05)
            waited += 1
            if notify is not None and waited % 20 == 0:
                await notify()  # the arbiter's heartbeat: on_tick does not run yet
        if lifecycle.health is not Health.READY or self.should_exit:
            return  # a failed load has already left (lifecycle's on_fatal)
        config = self.config

        def create_protocol(_loop: asyncio.AbstractEventLoop | None = None) -> asyncio.Protocol:
            return config.http_protocol_class(  # type: ignore[call-arg]
                config=config,
                server_state=self.server_state,
                app_state=self.lifespan.state,
                _loop=_loop,
            )

        loop = asyncio.get_running_loop()
        for sock in sockets:
            server = await loop.create_server(
                create_protocol, sock=sock, ssl=config.ssl, backlog=config.backlog
            )
            self.servers.append(server)

    def handle_exit(self, sig: int, frame: Any) -> None:
        """Drain first, then let uvicorn stop."""
        self.serving_app.lifecycle.start_draining()
        self.begin_drain()
        super().handle_exit(sig, frame)

    def retire(self) -> None:
        """Replaced (max_requests): stop accepting and finish, staying ready meanwhile.

        Requests that still come on open connections are served (with connection: close):
        the server as a whole is not draining, its replacement serves beside.
        """
        self.begin_drain()

    def begin_drain(self) -> None:
        """Stop accepting now and start the ``graceful_timeout`` clock (any thread)."""
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self._begin_drain)
        self.should_exit = True

    def _begin_drain(self) -> None:
        for server in self.servers:
            server.close()  # uvicorn closes them again when it shuts down: a no-op
        if self._drain_timer is None and self.loop is not None:
            seconds = self.serving_app.settings.graceful_timeout
            self._drain_timer = self.loop.call_later(seconds, self._cut_short)

    def _cut_short(self) -> None:
        """graceful_timeout ran out: answer what still runs 503 and stop waiting for it."""
        busy = [
            connection
            for connection in self.server_state.connections
            if not getattr(getattr(connection, "cycle", None), "response_complete", True)
        ]
        if busy or self.server_state.tasks:
            self.drain_cut = True
            timeout = self.serving_app.settings.graceful_timeout
            logger.error(
                "graceful_timeout (%gs) ran out with %d request(s) still running: "
                "answering them 503 and exiting",
                timeout,
                len(busy),
            )
            message = f"the server is shutting down: the request did not finish within {timeout:g}s"
            self.inbox.send(DRAIN_CUT)
            for connection in list(self.server_state.connections):
                cut_short = getattr(connection, "cut_short", None)
                if cut_short is not None:
                    cut_short(message)
                else:
                    connection.shutdown()
        self.force_exit = True  # uvicorn stops waiting, and runs no lifespan shutdown

    async def on_tick(self, counter: int) -> bool:
        """Every 0.1 s: report readiness, ask for a replacement past max_requests."""
        if not self._told_ready and self.serving_app.lifecycle.health is Health.READY:
            self._told_ready = True
            settle_gc()
            share_the_gil()
            self.inbox.send(READY)
        if self.recycle_after and not self.should_exit:
            served = self.server_state.total_requests
            now = time.monotonic()
            asked = self._recycle_asked_at
            if served >= self.recycle_after and (
                asked is None or now - asked > RECYCLE_RETRY_SECONDS
            ):
                if asked is None:
                    logger.info("served %d requests (max_requests): replacing this worker", served)
                self._recycle_asked_at = now
                self.inbox.send(RECYCLE)
        return bool(await super().on_tick(counter))


class Worker(UvicornWorker):
    """uvicorn's gunicorn worker with the lifespan required and our exit codes."""

    # No WebSocket protocol: an upgrade request is answered as plain HTTP (protocol.py).
    # No `server` header naming the stack. No proxy-headers middleware: the app makes its
    # rewrite itself, for the requests that carry X-Forwarded-* (``forwarded_rewrite``).
    CONFIG_KWARGS = {
        "loop": "auto",
        "http": "auto",
        "lifespan": "on",
        "ws": "none",
        "server_header": False,
        "proxy_headers": False,
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        settings: Settings = self.app.settings
        # A backstop only: the drain's own clock (DrainingServer) answers what still runs
        # at graceful_timeout and stops uvicorn's wait first.
        self.config.timeout_graceful_shutdown = int(settings.graceful_timeout) + 2
        self.config.access_log = False
        _route_uvicorn_logs()
        self._exit_code = 0
        self._server: DrainingServer | None = None
        # Built in the arbiter just before the fork: is this worker spawned to replace one?
        self.is_replacement = bool(getattr(self.app, "spawning_replacement", False))
        self.recycle_after = 0
        if settings.max_requests:
            jitter = random.SystemRandom().randint(0, settings.max_requests_jitter)
            self.recycle_after = settings.max_requests + jitter

    async def _serve(self) -> None:
        # Runs in the worker, after the fork: self.wsgi is the ServingApp from load().
        app: ServingApp = self.wsgi
        app.lifecycle.on_fatal = self._fatal
        app.forwarded = forwarded_rewrite(self.config.forwarded_allow_ips)
        self.config.app = app
        from .protocol import with_head_timeout  # in the worker: the master parses no request

        self.config.http = with_head_timeout(app.settings.request_timeout)
        inbox: Inbox = self.app.inbox
        self._server = DrainingServer(
            self.config, app, inbox, self.recycle_after, self.is_replacement
        )
        self._install_sigquit_handler()
        asyncio.get_running_loop().add_signal_handler(RETIRE, self._server.retire)
        # The plain sockets, not gunicorn's wrappers: the event loop's server owns them
        # and closes them, and a wrapper closed twice logs "Error while closing socket".
        await self._server.serve(sockets=[getattr(s, "sock", s) for s in self.sockets])
        if not self._server.started:
            sys.exit(Arbiter.WORKER_BOOT_ERROR)
        if self._server.drain_cut:
            # Predicts still running hold their threads: leave without waiting for them.
            logging.shutdown()
            os._exit(self._exit_code or EXIT_DRAIN_TIMEOUT)
        if self._exit_code:
            sys.exit(self._exit_code)

    def _fatal(self, code: int, drain: bool) -> None:
        """Leave with ``code``: at once (load failed) or after draining (unrecoverable).

        Draining stops this worker accepting at once and tells the arbiter, which stops
        listening and stops the other workers, as SIGTERM does (any thread).
        """
        if not drain or self._server is None:
            logging.shutdown()
            os._exit(code)
        self._exit_code = code
        if self.app.settings.workers == 1:
            # No sibling shares the listening socket: shut it for every process holding
            # it (the arbiter too) in one call, so that no connection waits in its backlog.
            for listener in self.sockets:
                with contextlib.suppress(OSError):
                    getattr(listener, "sock", listener).shutdown(socket.SHUT_RD)
        self._server.begin_drain()
        self.app.inbox.send(FATAL, wake=True)
