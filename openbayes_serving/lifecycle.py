"""The serving process's life: load the model, serve, drain, stop, and the exit codes.

One start-up path for every host (the gunicorn worker, a Ray replica, ``LocalClient``):
build an instance per device and warm it up (``warmup()``), the pipeline, the scheduler
and its model threads, start ``run()``, turn ready; ``/readyz`` then also asks the
predictor's ``health()`` (``health_probe``). The host learns of a fatal error through
``on_fatal(code, drain)`` and decides how to leave with the code. Where the process
stands, and the requests waiting for it to load, are ``readiness``'s.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Callable

from .batching import policy_for
from .config import concurrency_pin
from .dispatch import Dispatcher
from .errors import PredictorError, StartupError
from .instances import HealthProbe, build_instance, warm_up
from .limiter import Limiter
from .metrics import Metrics
from .pipeline import Pipeline
from .predictor import PredictorSpec
from .readiness import Health, Readiness
from .scheduler import Admission, Scheduler
from .settings import Settings
from .watchdog import Watchdog

if TYPE_CHECKING:
    from .request import Request

logger = logging.getLogger(__name__)

# Exit codes of the serving process (the arbiter halts, rather than respawning, on 3 and 4).
EXIT_OK = 0  # SIGTERM: drained within graceful_timeout
EXIT_USAGE = 2  # the predictor or a setting is wrong; found before any process forks
EXIT_LOAD_FAILED = 3  # the model could not be built (__init__ raised, no model file)
EXIT_FATAL = 4  # UnrecoverableError, or run() raising in production
EXIT_DRAIN_TIMEOUT = 5  # SIGTERM: requests still running at graceful_timeout were answered 503

OnFatal = Callable[[int, bool], None]


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
        self.readiness = Readiness(settings.max_queue)
        self.on_fatal: OnFatal = on_fatal or _ignore_fatal
        self.pool = ThreadPoolExecutor(
            max_workers=settings.preprocess_threads, thread_name_prefix="pre-post"
        )
        self.pipeline: Pipeline | None = None
        self.scheduler: Scheduler | None = None
        self.dispatcher: Dispatcher | None = None
        self.watchdog: Watchdog | None = None
        self.health_probe: HealthProbe | None = None  # when the predictor has health()
        self.load_error: PredictorError | None = None

    @property
    def health(self) -> Health:
        """Where the serving process stands."""
        return self.readiness.health

    @health.setter
    def health(self, health: Health) -> None:
        self.readiness.health = health

    @property
    def serving(self) -> bool:
        """True while predictions are taken (ready, or ready with a stuck predict)."""
        return self.readiness.serving

    def until_loaded(self, request: Request) -> Coroutine[Any, Any, None]:
        """Wait while the model loads, as a queued request would (``Readiness.until_loaded``)."""
        return self.readiness.until_loaded(request)

    def start_draining(self) -> None:
        """Readiness goes false; requests already accepted still finish."""
        self.readiness.start_draining()

    @property
    def queue_depth(self) -> int:
        """Requests waiting: for a predict slot, or for the model to load."""
        queued = self.scheduler.queue_depth if self.scheduler is not None else 0
        return queued + self.readiness.waiting

    @property
    def running(self) -> int:
        """Predict calls running now."""
        return self.scheduler.running if self.scheduler is not None else 0

    def admit(self) -> Admission:
        """A place in the predict queue for a request, taken from its head (503 if none)."""
        assert self.scheduler is not None
        return self.scheduler.admit()

    def withdraw(self, admission: Admission) -> None:
        """Give back a place that was never used (the request ended before predict)."""
        if self.scheduler is not None:
            self.scheduler.withdraw(admission)

    def load(self) -> None:
        """Build every instance and start the model threads (on a loader thread)."""
        started = time.monotonic()
        instances = self._build()
        if instances is None:
            return
        self.pipeline = Pipeline(self.spec, instances, self.pool)
        self.scheduler = Scheduler(
            [self.pipeline.runner(instance) for instance in instances],
            max_queue=self.settings.max_queue,
            max_queue_wait=self.settings.queue_wait_bound,
            policy=policy_for(self.spec.batch),
            limiters=_limiters(self.settings, self.metrics, instances),
        )
        self.scheduler.on_batch = self.metrics.observe_batch
        self.scheduler.on_timing = self.metrics.observe_timing
        self.scheduler.start()
        self.dispatcher = Dispatcher(self.scheduler, self._late_fatal)
        if self.settings.predict_timeout > 0:
            self.watchdog = Watchdog(
                self.scheduler,
                self.settings.predict_timeout,
                self.readiness.stuck,
                lambda: self.fail(EXIT_FATAL, True),
            )
            self.watchdog.start()
        if self.spec.has_health:
            self.health_probe = HealthProbe([i.health for i in instances], self.spec.file)
        self.readiness.become(Health.READY)  # before run() starts: a run() that fails stays failed
        if self.spec.has_run:
            for instance in instances:
                threading.Thread(
                    target=self._background, args=(instance.run,), name="predictor-run", daemon=True
                ).start()
        logger.info(
            "%s ready in %.2fs (%d instance(s) on %s, predict_concurrency %s%s)",
            self.spec.name,
            time.monotonic() - started,
            len(instances),
            ", ".join(self.settings.devices),
            self.settings.predict_concurrency,
            f", batch {self.spec.batch.max_batch_size}" if self.spec.batch else "",
        )

    def _build(self) -> list[Any] | None:
        """Build and warm up every instance, each in turn; None when one fails (exit 3)."""
        built, warming = 0.0, 0.0
        instances = []
        try:
            for device in self.settings.devices:
                started = time.monotonic()
                instance = build_instance(self.spec, self.settings, device)
                built += time.monotonic() - started
                warming += warm_up(self.spec, self.settings, instance)
                instances.append(instance)
        except PredictorError as exc:
            self._fail_to_load(exc)
            return None
        except Exception as exc:  # a bug below the predictor: still one line, still exit 3
            logger.exception("building the model failed")
            self._fail_to_load(PredictorError(f"building the model failed: {exc}"))
            return None
        self.metrics.set_load_time(built)
        if self.spec.has_warmup:
            self.metrics.set_warmup_time(warming)
            logger.info("%s.warmup() took %.2fs", self.spec.name, warming)
        return instances

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
        self.readiness.become(Health.FAILED)
        self.on_fatal(code, drain)

    def _late_fatal(self, exc: BaseException) -> None:
        """An ``UnrecoverableError`` from a predict whose request had its 504: still fatal."""
        logger.error("unrecoverable error: %s; draining and exiting", exc, exc_info=exc)
        self.fail(EXIT_FATAL, True)

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

    def shutdown(self) -> None:
        """Stop the model threads once the server has drained."""
        if self.watchdog is not None:
            self.watchdog.stop()
        if self.scheduler is not None:
            self.scheduler.close(self.settings.graceful_timeout)
        self.pool.shutdown(wait=False)


def _limiters(settings: Settings, metrics: Metrics, instances: list[Any]) -> list[Limiter]:
    """One limiter per instance: pinned, else adaptive (``auto``).

    The ``predict_concurrency`` setting pins it; so does ``config.limit_concurrency``
    called in ``__init__`` (the setting wins).
    """
    limiters = []
    for i, (instance, device) in enumerate(zip(instances, settings.devices)):
        pin = concurrency_pin(settings, instance)
        maximum = pin or settings.max_predict_concurrency
        name = f"instance {i} ({device})"
        limiters.append(Limiter(pin or 1, maximum, adaptive=pin is None, name=name))

    def publish(limit: int) -> None:
        metrics.concurrency_limit.set(sum(limiter.limit for limiter in limiters))

    for limiter in limiters:
        limiter.on_change = publish
    publish(0)
    return limiters
