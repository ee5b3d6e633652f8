"""Embed gunicorn: the arbiter, uvicorn's event-loop worker, signals, drain and exit codes.

The exit codes are ``lifecycle``'s: the arbiter halts, rather than respawning, on
EXIT_LOAD_FAILED (the worker leaves with WORKER_BOOT_ERROR) and EXIT_FATAL (it leaves
with APP_LOAD_ERROR after draining); SIGTERM drains and exits EXIT_OK. The only module
that imports gunicorn.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
from typing import TYPE_CHECKING, Any

from gunicorn import glogging
from gunicorn.app.base import BaseApplication
from gunicorn.arbiter import Arbiter
from uvicorn.server import Server
from uvicorn_worker import UvicornWorker

from .metrics import mark_worker_dead
from .predictor import PredictorSpec
from .settings import Settings, export_environ

if TYPE_CHECKING:  # the app (and Flask) load in the worker, after the fork
    from .app import ServingApp

logger = logging.getLogger(__name__)


class _Logger(glogging.Logger):  # type: ignore[misc,unused-ignore]
    """gunicorn's logger, writing through the root logger: one format (text or JSON)."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for log in (self.error_log, self.access_log):
            for handler in list(log.handlers):
                log.removeHandler(handler)
            log.propagate = True


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


class _DrainingServer(Server):
    """uvicorn's server, telling the app to drain before it stops accepting."""

    def __init__(self, config: Any, app: ServingApp) -> None:
        super().__init__(config)
        self.serving_app = app

    def handle_exit(self, sig: int, frame: Any) -> None:
        """Drain first, then let uvicorn stop."""
        self.serving_app.lifecycle.start_draining()
        super().handle_exit(sig, frame)


class Worker(UvicornWorker):
    """uvicorn's gunicorn worker with the lifespan required and our exit codes."""

    CONFIG_KWARGS = {"loop": "auto", "http": "auto", "lifespan": "on"}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.config.timeout_graceful_shutdown = int(self.cfg.graceful_timeout)
        self.config.access_log = False
        _route_uvicorn_logs()
        self._exit_code = 0
        self._server: _DrainingServer | None = None

    async def _serve(self) -> None:
        # Runs in the worker, after the fork: self.wsgi is the ServingApp from load().
        app: ServingApp = self.wsgi
        app.lifecycle.on_fatal = self._fatal
        self.config.app = app
        from .protocol import with_head_timeout  # in the worker: the master parses no request

        self.config.http = with_head_timeout(app.settings.request_timeout)
        self._server = _DrainingServer(self.config, app)
        self._install_sigquit_handler()
        # The plain sockets, not gunicorn's wrappers: the event loop's server owns them
        # and closes them, and a wrapper closed twice logs "Error while closing socket".
        await self._server.serve(sockets=[getattr(s, "sock", s) for s in self.sockets])
        if not self._server.started:
            sys.exit(Arbiter.WORKER_BOOT_ERROR)
        if self._exit_code:
            sys.exit(self._exit_code)

    def _fatal(self, code: int, drain: bool) -> None:
        """Leave with ``code``: at once (load failed) or after draining (unrecoverable)."""
        if not drain or self._server is None:
            logging.shutdown()
            os._exit(code)
        self._exit_code = code
        self._server.should_exit = True


class Application(BaseApplication):  # type: ignore[misc,unused-ignore]
    """gunicorn's application: settings in, our worker class, the app built after the fork."""

    def __init__(self, spec: PredictorSpec, settings: Settings) -> None:
        self.spec = spec
        self.settings = settings
        self.metrics_dir: str | None = None
        if settings.workers > 1:
            # Set before the fork, so that every worker's prometheus-client writes files
            # that any worker's /metrics sums up.
            self.metrics_dir = tempfile.mkdtemp(prefix="openbayes-serving-metrics-")
            export_environ("PROMETHEUS_MULTIPROC_DIR", self.metrics_dir)
        super().__init__()

    def load_config(self) -> None:
        """Copy the settings into gunicorn's config (in the master)."""
        s = self.settings
        host = f"[{s.host}]" if ":" in s.host else s.host
        options = {
            "bind": [f"{host}:{s.bind_port}"],
            "workers": s.workers,
            "worker_class": Worker,
            "graceful_timeout": int(s.graceful_timeout) + 5,
            "keepalive": max(1, int(s.keepalive)),
            "timeout": 120,
            "preload_app": False,
            "loglevel": s.log_level,
            "accesslog": None,
            "logger_class": _Logger,
            "proc_name": f"openbayes-serving: {self.spec.name}",
            "child_exit": self._child_exit,
            "on_exit": self._on_exit,
        }
        if "control_socket_disable" in self.cfg.settings:
            # Several servers on one machine must not fight over one control socket.
            options["control_socket_disable"] = True
        for key, value in options.items():
            self.cfg.set(key, value)

    def load(self) -> ServingApp:
        """Build the ASGI app (in the worker, after the fork)."""
        from .app import create_app

        return create_app(self.spec, self.settings, metrics_dir=self.metrics_dir)

    def _child_exit(self, arbiter: Any, worker: Any) -> None:
        # In the master: a dead worker's live gauges must stop counting.
        if self.metrics_dir is not None:
            mark_worker_dead(worker.pid)

    def _on_exit(self, arbiter: Any) -> None:
        if self.metrics_dir is not None:
            shutil.rmtree(self.metrics_dir, ignore_errors=True)


def serve(spec: PredictorSpec, settings: Settings) -> None:
    """Run the gunicorn arbiter for ``spec``; blocks until the server stops."""
    Application(spec, settings).run()
