"""The serving process's life: load the model, serve, drain, stop, and the exit codes.

One start-up path for every host (the gunicorn worker, a Ray replica, ``LocalClient``):
build an instance per device, the pipeline, the scheduler and its model threads, start
``run()``, turn ready. The host learns of a fatal error through ``on_fatal(code, drain)``
and decides how to leave with the code.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from .batching import policy_for
from .dispatch import Dispatcher
from .errors import PredictorError, StartupError
from .metrics import Metrics
from .pipeline import Pipeline
from .predictor import PredictorSpec, build_instance
from .scheduler import Scheduler
from .settings import Settings

logger = logging.getLogger(__name__)

# Exit codes of the serving process (the arbiter halts, rather than respawning, on 3 and 4).
EXIT_OK = 0  # SIGTERM: drained within graceful_timeout
EXIT_USAGE = 2  # the predictor or a setting is wrong; found before any process forks
EXIT_LOAD_FAILED = 3  # the model could not be built (__init__ raised, no model file)
EXIT_FATAL = 4  # UnrecoverableError, or run() raising in production
EXIT_DRAIN_TIMEOUT = 5  # SIGTERM: requests still running at graceful_timeout were answered 503

OnFatal = Callable[[int, bool], None]


class Health(enum.Enum):
    """Where the serving process stands."""

    STARTING = "starting"
    READY = "ready"
    DRAINING = "draining"
    FAILED = "failed"


def _ignore_fatal(code: int, drain: bool) -> None:
    """The default host reaction to a fatal error: none (the health says FAILED)."""


class Lifecycle:
    """Loads the model, holds what serving needs, and drains it."""

    def __init__(
        self,
        spec: PredictorSpec,
        settings: Settings,
        metrics: Metrics,
        on_fatal: OnFatal | None = None,
    ) -> None:
        self.spec = spec
        self.settings = settings
        self.metrics = metrics
        self.health = Health.STARTING
        self.on_fatal: OnFatal = on_fatal or _ignore_fatal
        self.pool = ThreadPoolExecutor(
            max_workers=settings.preprocess_threads, thread_name_prefix="pre-post"
        )
        self.pipeline: Pipeline | None = None
        self.scheduler: Scheduler | None = None
        self.dispatcher: Dispatcher | None = None
        self.load_error: PredictorError | None = None

    @property
    def queue_depth(self) -> int:
        """Requests waiting for a predict slot (0 before the model is loaded)."""
        return self.scheduler.queue_depth if self.scheduler is not None else 0

    def load(self) -> None:
        """Build every instance and start the model threads (on a loader thread)."""
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
        self.pipeline = Pipeline(self.spec, instances, self.pool)
        self.scheduler = Scheduler(
            [self.pipeline.runner(instance) for instance in instances],
            concurrency=self.settings.predict_concurrency,
            max_queue=self.settings.max_queue,
            policy=policy_for(self.spec.batch),
        )
        self.scheduler.on_batch = self.metrics.observe_batch
        self.scheduler.on_timing = self.metrics.observe_timing
        self.scheduler.start()
        self.dispatcher = Dispatcher(self.scheduler)
        self.metrics.set_load_time(time.monotonic() - started)
        self.health = Health.READY  # before run() starts: a run() that fails must stay failed
        if self.spec.has_run:
            for instance in instances:
                threading.Thread(
                    target=self._background, args=(instance.run,), name="predictor-run", daemon=True
                ).start()
        logger.info(
            "%s ready in %.2fs (%d instance(s) on %s, predict_concurrency %d%s)",
            self.spec.name,
            time.monotonic() - started,
            len(instances),
            ", ".join(self.settings.devices),
            self.settings.predict_concurrency,
            f", batch {self.spec.batch.max_batch_size}" if self.spec.batch else "",
        )

    def load_now(self) -> None:
        """Load on this thread and raise if the model did not build (Ray, LocalClient).

        Raises:
            StartupError: the model failed to build; the message says why.
        """
        self.load()
        if self.health is not Health.READY:
            raise StartupError(str(self.load_error or "the predictor did not load"))

    def fail(self, code: int, drain: bool) -> None:
        """Readiness and liveness go false, and the host leaves with ``code``."""
        self.health = Health.FAILED
        self.on_fatal(code, drain)

    def _fail_to_load(self, exc: PredictorError) -> None:
        logger.error("%s", exc)
        self.load_error = exc
        self.fail(EXIT_LOAD_FAILED, False)

    def _background(self, run: Callable[[], Any]) -> None:
        try:
            run()
        except Exception:
            logger.exception("%s.run() raised", self.spec.name)
            if self.settings.is_production:
                logger.error("exiting so that the platform restarts the server")
                self.fail(EXIT_FATAL, True)

    def start_draining(self) -> None:
        """Readiness goes false; requests already accepted still finish."""
        if self.health is Health.READY:
            self.health = Health.DRAINING
            logger.info("draining: finishing requests in flight")

    def shutdown(self) -> None:
        """Stop the model threads once the server has drained."""
        if self.scheduler is not None:
            self.scheduler.close(self.settings.graceful_timeout)
        self.pool.shutdown(wait=False)
