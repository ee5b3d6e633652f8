"""Where the serving process stands (``Health``), and the requests waiting for it to load.

A request that comes while the model loads waits on the event loop, as a queued request
would, until the health leaves ``STARTING`` or its deadline passes. The health changes on
the loader thread, the watchdog's thread and the event loop; one lock orders the changes
against the waiters.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import threading
import time
from typing import TYPE_CHECKING

from .errors import OverloadedError

if TYPE_CHECKING:
    from .request import Request

logger = logging.getLogger("openbayes_serving.lifecycle")  # the lifecycle's lines, one name


class Health(enum.Enum):
    """Where the serving process stands."""

    STARTING = "starting"
    READY = "ready"
    STUCK = "stuck"  # a predict ran past predict_timeout: still serving, not ready
    DRAINING = "draining"
    FAILED = "failed"


_SERVING = (Health.READY, Health.STUCK)


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class Readiness:
    """The health, and the requests that wait (on their event loops) for the model to load."""

    def __init__(self, max_queue: int) -> None:
        self.health = Health.STARTING
        self.max_queue = max_queue
        self.waiting = 0  # requests that came while the model loads (event loop)
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._lock = threading.Lock()

    @property
    def serving(self) -> bool:
        """True while predictions are taken (ready, or ready with a stuck predict)."""
        return self.health in _SERVING

    async def until_loaded(self, request: Request) -> None:
        """Wait (on the event loop) while the model loads, as a queued request would.

        Returns at once unless the model is still loading (or warming up). Waiting
        requests count against ``max_queue``.

        Raises:
            OverloadedError: ``max_queue`` requests already wait (503).
            QueueTimeoutError: the model did not load before the request's deadline (504).
        """
        if self.health is not Health.STARTING:
            return
        if self.waiting >= self.max_queue:
            raise OverloadedError(
                f"not ready: the model is loading and {self.waiting} requests already wait for it"
            )
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._lock:
            if self.health is not Health.STARTING:
                return
            self._waiters.append((loop, future))
        self.waiting += 1
        try:
            await asyncio.wait_for(future, max(0.0, request.deadline - time.monotonic()))
        except asyncio.TimeoutError:
            raise request.deadline_error("the model did not load") from None
        finally:
            self.waiting -= 1

    def become(self, health: Health) -> None:
        """Change the health; requests waiting for the load learn of it."""
        with self._lock:
            self.health = health
            waiters, self._waiters = self._waiters, []
        for loop, future in waiters:
            loop.call_soon_threadsafe(_settle, future)

    def stuck(self, stuck: bool) -> None:
        """A predict is stuck (not ready, still serving), or none is any more (ready again)."""
        with self._lock:
            if stuck and self.health is Health.READY:
                self.health = Health.STUCK
            elif not stuck and self.health is Health.STUCK:
                self.health = Health.READY
                logger.info("no predict is stuck any more: ready again")

    def start_draining(self) -> None:
        """Readiness goes false; requests already accepted still finish."""
        if self.health in _SERVING:
            self.health = Health.DRAINING
            logger.info("draining: finishing requests in flight")
