"""Serve a predictor.py on Ray Serve: N replicas behind Ray's HTTP proxy.

Each replica runs the runtime's own ASGI app (``ServingApp``), so the HTTP contract,
batching, ``predict_concurrency`` and the queue hold per replica. Ray is optional
(``pip install 'openbayes-serving[ray]'``) and imported only when this path is used.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import os
import signal
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .app import ServingApp, create_app
from .batching import capacity, policy_for
from .errors import StartupError
from .lifecycle import EXIT_LOAD_FAILED, EXIT_OK, Health
from .logs import configure_logging
from .predictor import PredictorSpec, find_predictor_class, inspect_predictor
from .request import Receive, Send
from .settings import Settings, resolve_settings

logger = logging.getLogger(__name__)

APP_NAME = "openbayes-serving"
INSTALL_HINT = "pip install 'openbayes-serving[ray]'"
CONSTRUCTOR_RETRIES = 2  # a model that fails to build fails fast (Ray's default is 20)


def _import_serve() -> Any:
    try:
        from ray import serve
    except ImportError as exc:
        raise StartupError(
            f"--ray-replicas needs Ray Serve, which is not installed ({exc}): {INSTALL_HINT}"
        ) from None
    return serve


class ReplicaApp:
    """The ASGI app of one replica: builds the ``ServingApp`` when the lifespan starts.

    Ray pickles this object into every replica process; the model is built there (on
    a thread, during the lifespan startup), never in the driver.
    """

    def __init__(self, directory: str, settings: Settings) -> None:
        self.directory = directory
        self.settings = settings
        self.app: ServingApp | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"directory": self.directory, "settings": self.settings, "app": None}

    @property
    def is_failed(self) -> bool:
        """True once the model failed to build or raised ``UnrecoverableError``."""
        return self.app is not None and self.app.lifecycle.health is Health.FAILED

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        """The ASGI entry: the lifespan here, HTTP in the ``ServingApp``."""
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if self.app is None:
            raise RuntimeError("the replica got a request before its model was built")
        if scope["type"] == "http" and any(k == b"x-request-id" for k, _ in scope["headers"]):
            # Ray's proxy put its request id on the request (the app answers with the
            # same one) and adds it to the response itself: send it once, not twice.
            await self.app(scope, receive, functools.partial(_send_without_request_id, send))
            return
        await self.app(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        loop = asyncio.get_running_loop()
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await loop.run_in_executor(None, self._load)
                except Exception as exc:  # start-up boundary: Ray reports it and retries
                    if isinstance(exc, StartupError):
                        logger.error("replica failed to start: %s", exc)
                    else:
                        logger.exception("replica failed to start")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.app is not None:
                    self.app.lifecycle.start_draining()
                    await loop.run_in_executor(None, self.app.lifecycle.shutdown)
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _load(self) -> None:
        """Import predictor.py and build the model (in the replica process)."""
        directory = Path(self.directory)
        os.chdir(directory)
        configure_logging(self.settings.log_level, self.settings.log_format)
        spec = inspect_predictor(find_predictor_class(directory / "predictor.py"), self.settings)
        # Kept before loading, so that a model that failed to build fails the health check.
        self.app = create_app(spec, self.settings, on_fatal=_report_fatal)
        self.app.lifecycle.load_now()


async def _send_without_request_id(send: Send, message: dict[str, Any]) -> None:
    if message["type"] == "http.response.start":
        headers = [(k, v) for k, v in message.get("headers", ()) if k != b"x-request-id"]
        message = {**message, "headers": headers}
    await send(message)


def _report_fatal(code: int, drain: bool) -> None:
    # The ServingApp has turned FAILED; Ray's health check replaces the replica, which
    # plays the part of the exit code a gunicorn server would leave with.
    logger.error("replica failed (a server would exit %d): Ray will replace it", code)


class Replica:
    """The deployment class; ``serve.ingress`` gives it ``app`` (the ``ReplicaApp``)."""

    app: ReplicaApp

    def check_health(self) -> None:
        """Called by Ray every few seconds; raising makes Ray replace this replica.

        Raises:
            RuntimeError: the model failed or raised ``UnrecoverableError``.
        """
        if self.app.is_failed:
            raise RuntimeError("the predictor failed: replacing this replica")


def deployment_options(
    spec: PredictorSpec,
    settings: Settings,
    replicas: int,
    num_cpus: float = 1.0,
) -> dict[str, Any]:
    """The Ray Serve deployment options that carry the settings over to each replica.

    Ray's own limit on requests in flight per replica is set above what the replica can
    hold (predicts running, batches filling, and its queue), so the replica's own
    scheduler decides 503s and batches, as it does behind gunicorn. ``devices`` are per
    replica: each ``cuda:N`` entry asks Ray for one GPU, and Ray numbers a replica's
    GPUs from ``cuda:0``.
    """
    policy = policy_for(spec.batch)
    running = capacity(policy, settings.max_calls_per_instance, len(settings.devices))
    actor: dict[str, Any] = {"num_cpus": num_cpus}
    gpus = sum(1 for device in settings.devices if device.startswith("cuda"))
    if gpus:
        actor["num_gpus"] = gpus
    return {
        "name": spec.name,
        "num_replicas": replicas,
        "max_ongoing_requests": running + settings.max_queue,
        "max_queued_requests": max(1, settings.max_queue),
        "graceful_shutdown_timeout_s": settings.graceful_timeout,
        "ray_actor_options": actor,
    }


def build_application(
    directory: Path, settings: Settings, replicas: int, num_cpus: float = 1.0
) -> Any:
    """The Ray Serve application serving ``directory/predictor.py`` (not yet running).

    Args:
        directory: the deployment directory; every Ray node must see it at this path.
        settings: the resolved settings, sent to every replica.
        replicas: how many replicas (each loads its own copy of the model).
        num_cpus: logical CPUs Ray reserves for each replica.

    Returns:
        A ``ray.serve.Application`` for ``serve.run``.

    Raises:
        StartupError: Ray Serve is missing, or the predictor breaks the convention.
    """
    serve = _import_serve()
    directory = directory.resolve()
    spec = inspect_predictor(find_predictor_class(directory / "predictor.py"), settings)
    options = deployment_options(spec, settings, replicas, num_cpus)
    if "max_constructor_retry_count" in inspect.signature(serve.deployment).parameters:
        options["max_constructor_retry_count"] = CONSTRUCTOR_RETRIES
    ingress = serve.ingress(ReplicaApp(str(directory), settings))(Replica)
    return serve.deployment(ingress, **options).bind()


def serve_directory(directory: Path, replicas: int, argv: Sequence[str]) -> int:
    """Serve ``directory`` on Ray Serve until SIGTERM or SIGINT (``run --ray-replicas``).

    Starts a local Ray instance, or joins the cluster that ``RAY_ADDRESS`` names. Ray's
    HTTP proxy listens on the resolved host and port.

    Returns:
        The exit code: 0 after a signal, 3 when the replicas could not be started.

    Raises:
        StartupError: Ray Serve is missing, or the directory or a setting is wrong.
    """
    directory = _check_directory(directory, replicas)
    serve = _import_serve()
    import ray

    settings = resolve_settings(None, argv)
    configure_logging(settings.log_level, settings.log_format)
    if settings.workers > 1:
        logger.warning("workers=%d is ignored on Ray: replicas take its place", settings.workers)
    os.chdir(directory)
    if not ray.is_initialized():
        ray.init(include_dashboard=False)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: stop.set())
    try:
        cpus = float(ray.cluster_resources().get("CPU", 1.0))
        app = build_application(directory, settings, replicas, num_cpus=min(1.0, cpus / replicas))
        if not _start(serve, app, settings):
            return EXIT_LOAD_FAILED
        logger.info(
            "serving %s with %d Ray replica(s) on http://%s:%d",
            directory,
            replicas,
            settings.host,
            settings.bind_port,
        )
        stop.wait()
        logger.info("draining: stopping the replicas within %.0fs", settings.graceful_timeout)
        # Deleting the application first lets each replica finish its requests while
        # the proxy still carries their answers; serve.shutdown() alone drops them.
        serve.delete(APP_NAME)
        return EXIT_OK
    finally:
        serve.shutdown()
        ray.shutdown()


def _start(serve: Any, app: Any, settings: Settings) -> bool:
    """Start Ray's HTTP proxy on the settings' host and port, and the replicas."""
    serve.start(
        http_options={
            "host": settings.host,
            "port": settings.bind_port,
            "keep_alive_timeout_s": max(1, int(settings.keepalive)),
        }
    )
    try:
        serve.run(app, name=APP_NAME, route_prefix="/")
    except RuntimeError as exc:
        logger.error("the replicas did not start: %s", exc)
        return False
    return True


def _check_directory(directory: Path, replicas: int) -> Path:
    """The resolved deployment directory, if Ray can serve it with ``replicas``."""
    if replicas < 1:
        raise StartupError(f"--ray-replicas must be a positive integer (got {replicas})")
    directory = directory.resolve()
    if (directory / "start.sh").is_file():
        raise StartupError(
            f"{directory} has start.sh, which bypasses the runtime: --ray-replicas serves "
            "predictor.py only"
        )
    if not (directory / "predictor.py").is_file():
        raise StartupError(f"{directory} has no predictor.py to serve")
    return directory
