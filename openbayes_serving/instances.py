"""The user's instances: built with injected values, warmed up, asked for their health.

``build_instance`` calls ``__init__`` with what it asks for, and ``warm_up`` calls
``warmup(self)`` once after it; either failing is a start-up failure described in one
line that names the predictor's line and the library's (``describe_exception``), with a
hint for torch's ``weights_only`` refusal and, in local mode, the traceback.
``HealthProbe`` asks ``health(self)`` for ``/readyz``: at most once a second, on its own
thread, within a timeout, never on the event loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import re
import sys
import threading
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Callable

from . import inject
from .config import Config, remember_configs
from .errors import PredictorError
from .inject import InitContext
from .predictor import PredictorSpec
from .settings import Settings

logger = logging.getLogger(__name__)

HEALTH_INTERVAL = 1.0  # seconds a health() verdict is kept: the most it is called
HEALTH_TIMEOUT = 2.0  # seconds health() may take before /readyz answers 503

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
WEIGHTS_ONLY_HINT = (
    "torch.load refused a pickled checkpoint (torch >= 2.6 loads weights only by default). "
    "If you trust the file, set TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 (in the environment or a "
    ".env beside predictor.py) to load it unchanged, or call torch.load(..., weights_only=False)."
)


def _where(filename: str, base: Path | None) -> str:
    """A frame's file, as short as stays clear: under the predictor's folder, else its package."""
    path = Path(filename)
    roots = [base] if base else []
    roots += sorted((Path(p) for p in sys.path if p), key=lambda r: len(str(r)), reverse=True)
    for root in roots:
        try:
            return path.relative_to(root).as_posix()
        except ValueError:
            continue
    return path.name


def describe_exception(exc: BaseException, user_file: Path | None = None) -> str:
    """``ValueError: message (predictor.py:12)``: where user code raised, in one line.

    When the exception came from deeper (a library), the innermost frame follows:
    ``(predictor.py:12, raised in torch/serialization.py:1529)``. ``user_file`` is the
    predictor's file; without it, only the innermost frame is named.
    """
    message = " ".join(_ANSI.sub("", str(exc)).split())
    frames = traceback.extract_tb(exc.__traceback__) if exc.__traceback__ else []
    places = []
    if frames:
        base = user_file.parent if user_file else None
        mine = [f for f in frames if base and Path(f.filename).resolve() == user_file]
        if mine and user_file:
            places.append(f"{user_file.name}:{mine[-1].lineno}")
        if not mine or mine[-1] is not frames[-1]:
            inner = frames[-1]
            where = f"{_where(inner.filename, base)}:{inner.lineno}"
            places.append(f"raised in {where}" if mine else where)
    where = f" ({', '.join(places)})" if places else ""
    return f"{type(exc).__name__}: {message}{where}"


def _is_weights_only_refusal(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if type(seen).__name__ == "UnpicklingError" and "weights_only" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _startup_failure(
    spec: PredictorSpec, settings: Settings, headline: str, exc: Exception
) -> PredictorError:
    """The error a failed ``__init__`` exits with: one line, a hint, the traceback locally."""
    lines = [f"{headline} {describe_exception(exc, spec.file)}"]
    if _is_weights_only_refusal(exc):
        lines.append(WEIGHTS_ONLY_HINT)
    if settings.is_local:
        tb = exc.__traceback__
        if tb is not None and tb.tb_frame.f_code.co_filename == __file__:
            tb = tb.tb_next  # start at the user's code, not at this module's call
        lines.append("".join(traceback.format_exception(type(exc), exc, tb)))
    return PredictorError("\n".join(lines).rstrip())


def build_instance(spec: PredictorSpec, settings: Settings, device: str) -> Any:
    """Call the user's ``__init__`` with injected values (in the worker, after the fork).

    Raises:
        PredictorError: injection failed or ``__init__`` raised. The first line says why
            and where (the predictor's line and the library's); a torch ``weights_only``
            refusal adds a line saying how to load a trusted checkpoint; in local mode the
            traceback follows.
    """
    ctx = InitContext(settings=settings, predictor_dir=spec.directory, device=device)
    kwargs = {}
    for param, name in spec.init_params:
        try:
            kwargs[param] = inject.INIT_RESOLVERS[name](ctx)
        except PredictorError as exc:
            raise PredictorError(f"{spec.name}.__init__(): {exc}") from exc
        except Exception as exc:  # onnxruntime refusing a file, a broken config, ...
            headline = f"{spec.name}.__init__() asks for {param!r}, which could not be made:"
            raise _startup_failure(spec, settings, headline, exc) from exc
    try:
        instance = spec.cls(**kwargs)
    except Exception as exc:
        raise _startup_failure(spec, settings, f"{spec.name}.__init__() raised", exc) from exc
    remember_configs(instance, [v for v in kwargs.values() if isinstance(v, Config)])
    return instance


def warm_up(spec: PredictorSpec, settings: Settings, instance: Any) -> float:
    """Call ``instance.warmup()`` (when the class has ``warmup(self)``); its seconds.

    Raises:
        PredictorError: ``warmup()`` raised; the message is one line like ``__init__``'s.
    """
    if not spec.has_warmup:
        return 0.0
    started = time.monotonic()
    try:
        instance.warmup()
    except Exception as exc:
        raise _startup_failure(spec, settings, f"{spec.name}.warmup() raised", exc) from exc
    return time.monotonic() - started


class HealthProbe:
    """The predictor's ``health()`` as ``/readyz`` asks it: a reason it fails, or None.

    A verdict is kept for ``interval`` seconds, so ``health()`` runs at most once per
    interval however often ``/readyz`` is polled. It runs on a thread of its own (every
    instance in turn) and is given ``timeout`` seconds; one that hangs is a failure, and
    no second thread starts while it still runs. A change between passing and failing
    is logged once.
    """

    def __init__(
        self,
        checks: Sequence[Callable[[], Any]],
        user_file: Path | None = None,
        interval: float = HEALTH_INTERVAL,
        timeout: float = HEALTH_TIMEOUT,
    ) -> None:
        self._checks = list(checks)
        self._user_file = user_file
        self.interval = interval
        self.timeout = timeout
        self._verdict: str | None = None  # the last reason it failed; None: it passed
        self._verdict_at = -float("inf")  # time.monotonic() of the last verdict
        self._running: concurrent.futures.Future[str | None] | None = None
        self._started = 0.0  # when the running check began

    def expire(self) -> None:
        """Forget the last verdict: the next ``check`` asks ``health()`` again."""
        self._verdict_at = -float("inf")

    async def check(self) -> str | None:
        """Why the predictor is unhealthy now (None: healthy). Awaited on the event loop."""
        now = time.monotonic()
        if now - self._verdict_at < self.interval:
            return self._verdict
        running = self._running
        if running is None:
            running = self._running = concurrent.futures.Future()
            self._started = now
            threading.Thread(
                target=self._run, args=(running,), name="health-check", daemon=True
            ).start()
        late = f"health() did not answer within {self.timeout:g}s"
        left = self._started + self.timeout - now
        if running.done():
            verdict = running.result()
        elif left <= 0:
            verdict = late
        else:
            try:
                verdict = await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(running)), left)
            except asyncio.TimeoutError:
                verdict = late
        if running.done() and self._running is running:
            self._running = None  # the next verdict starts a new check
        self._record(verdict)
        return verdict

    def _run(self, future: concurrent.futures.Future[str | None]) -> None:
        # On the health-check thread: every instance's health(), the first failure wins.
        verdict = None
        for check in self._checks:
            try:
                healthy = check()
            except Exception as exc:
                verdict = f"health() raised {describe_exception(exc, self._user_file)}"
                break
            if not healthy:
                verdict = f"health() returned {healthy!r}"
                break
        future.set_result(verdict)

    def _record(self, verdict: str | None) -> None:
        if (verdict is None) != (self._verdict is None):
            if verdict is None:
                logger.info("health() passes again: /readyz answers 200")
            else:
                logger.warning("health() failed: %s; /readyz answers 503", verdict)
        self._verdict = verdict
        self._verdict_at = time.monotonic()
