"""Embed gunicorn: the arbiter, its settings, the workers' messages, and the exit codes.

The exit codes are ``lifecycle``'s: the arbiter halts, rather than respawning, on
EXIT_LOAD_FAILED (the worker leaves with WORKER_BOOT_ERROR) and EXIT_FATAL (it leaves
with APP_LOAD_ERROR after draining); SIGTERM drains and exits EXIT_OK, or
EXIT_DRAIN_TIMEOUT when requests were still running at ``graceful_timeout`` (they are
answered 503). gunicorn is imported here and in ``worker`` only.

Workers (``worker``) tell the arbiter what it cannot see through a pipe (``Inbox``): a
fatal error (the arbiter stops listening at once and stops every worker, as SIGTERM
does), a worker that served ``max_requests`` (a replacement starts beside it, and the old
one drains only once the new one is ready), a worker that became ready, and a drain cut
short.
"""

from __future__ import annotations

import logging
import shutil
import signal
import sys
import tempfile
from typing import TYPE_CHECKING, Any

from gunicorn import glogging
from gunicorn.app.base import BaseApplication
from gunicorn.arbiter import Arbiter
from gunicorn.errors import HaltServer

from .lifecycle import EXIT_DRAIN_TIMEOUT, EXIT_FATAL
from .metrics import mark_worker_dead
from .predictor import PredictorSpec
from .settings import Settings, export_environ
from .worker import DRAIN_CUT, FATAL, READY, RECYCLE, RETIRE, Inbox, Worker

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


class _Arbiter(Arbiter):  # type: ignore[misc,unused-ignore]
    """gunicorn's arbiter, acting on its workers' messages (see ``Inbox``)."""

    LISTENERS: list[Any]

    def __init__(self, app: Application) -> None:
        super().__init__(app)
        self.inbox = app.inbox
        self.replacing: dict[int, int] = {}  # a replacement's pid -> the worker it replaces
        self.retiring: set[int] = set()  # replaced workers that are draining
        self.drain_cut = False
        self.failing = False
        self.halting = False

    def handle_winch(self) -> None:
        """SIGWINCH: a worker left a message."""
        self.read_inbox()

    def read_inbox(self) -> None:
        """Act on every message the workers left."""
        for kind, pid in self.inbox.receive():
            if kind == FATAL and not self.failing:
                # As SIGTERM does: no new connections, every worker drains. The failed one
                # drains already, and its exit code (EXIT_FATAL) halts the arbiter.
                self.log.error("worker %s failed: closing the listener, draining every worker", pid)
                self.failing = True
                for listener in self.LISTENERS:
                    listener.close()
                self.LISTENERS = []
                for other in list(self.WORKERS):
                    if other != pid:
                        self.kill_worker(other, signal.SIGTERM)
            elif kind == RECYCLE and not self.failing and not self.halting:
                busy = pid in self.retiring or pid in self.replacing.values()
                if pid in self.WORKERS and not busy:
                    self.log.info("worker %s served max_requests: starting its replacement", pid)
                    self.app.spawning_replacement = True  # the new worker reads it
                    try:
                        self.replacing[self.spawn_worker()] = pid
                    finally:
                        self.app.spawning_replacement = False
            elif kind == READY and pid in self.replacing:
                old = self.replacing.pop(pid)
                if old in self.WORKERS:
                    self.log.info("worker %s is ready: stopping worker %s", pid, old)
                    self.retiring.add(old)
                    self.kill_worker(old, RETIRE)
            elif kind == DRAIN_CUT and pid not in self.retiring:
                self.drain_cut = True  # a replaced worker's cut drain is not the server's

    def manage_workers(self) -> None:
        """Keep ``num_workers`` serving; a replacement and the worker it replaces count once."""
        self.read_inbox()
        if self.failing:  # spawn nothing; halt when the failed worker is gone
            if not self.WORKERS:
                raise HaltServer("a worker failed", EXIT_FATAL)
            return
        alive = self.WORKERS
        self.replacing = {
            new: old for new, old in self.replacing.items() if new in alive and old in alive
        }
        self.retiring &= set(alive)
        if not self.replacing and not self.retiring:
            super().manage_workers()
            return
        spare = set(self.replacing) | self.retiring
        serving = sorted(
            ((pid, w) for pid, w in alive.items() if pid not in spare), key=lambda w: w[1].age
        )
        for _ in range(self.num_workers - len(serving)):
            self.spawn_worker()
        while len(serving) > self.num_workers:
            pid, _ = serving.pop(0)
            self.kill_worker(pid, signal.SIGTERM)

    def reap_workers(self) -> None:
        """Reap dead workers; once halting, a second worker's exit code changes nothing."""
        try:
            super().reap_workers()
        except HaltServer:
            if not self.halting:
                raise

    def halt(self, reason: str | None = None, exit_status: int = 0) -> None:
        """Stop every worker and exit; EXIT_DRAIN_TIMEOUT when a drain was cut short."""
        self.halting = True
        try:
            super().halt(reason, exit_status)
        except SystemExit as leaving:
            self.read_inbox()
            if self.drain_cut and leaving.code in (0, None):
                raise SystemExit(EXIT_DRAIN_TIMEOUT) from None
            raise


class Application(BaseApplication):  # type: ignore[misc,unused-ignore]
    """gunicorn's application: settings in, our worker class, the app built after the fork."""

    def __init__(self, spec: PredictorSpec, settings: Settings) -> None:
        self.spec = spec
        self.settings = settings
        self.inbox = Inbox()
        self.spawning_replacement = False
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
            # The worker answers what still runs at graceful_timeout and exits; the
            # arbiter's own deadline, later, only kills a worker that could not.
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

    def run(self) -> None:
        """Run the arbiter until the server stops (exits the process with its code)."""
        try:
            _Arbiter(self).run()
        except RuntimeError as exc:  # gunicorn's own start-up errors (a port in use)
            sys.stderr.write(f"\nError: {exc}\n\n")
            sys.exit(1)

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
