"""The watchdog: a predict that runs past ``predict_timeout`` is stuck.

A thread cannot be stopped from outside, so a predict that never returns would hold its
slot forever while the server looked healthy. Once one runs longer than
``predict_timeout`` the watchdog logs it (request id and the thread's stack), turns
readiness to 503 so that traffic goes elsewhere, and, when nothing but stuck predicts is
left running and nothing waits, leaves with ``EXIT_FATAL`` so the platform replaces the
process. A predict that returns after all clears it.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import traceback
from typing import Callable

from .request import REQUEST_ID
from .scheduler import Scheduler

logger = logging.getLogger(__name__)


class Watchdog:
    """Looks at the running predicts every ``interval`` seconds on its own thread."""

    def __init__(
        self,
        scheduler: Scheduler,
        timeout: float,
        on_stuck: Callable[[bool], None],
        on_hopeless: Callable[[], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.scheduler = scheduler
        self.timeout = timeout
        self.interval = min(1.0, timeout / 4)
        self._on_stuck = on_stuck  # called with True when one is stuck, False once none is
        self._on_hopeless = on_hopeless  # called once when only stuck predicts are left
        self._clock = clock
        self._reported: set[int] = set()  # threads already logged for the call they run
        self._stop = threading.Event()
        self._gave_up = False

    def start(self) -> None:
        """Start watching (a daemon thread)."""
        threading.Thread(target=self._watch, name="watchdog", daemon=True).start()

    def stop(self) -> None:
        """Stop watching."""
        self._stop.set()

    def _watch(self) -> None:
        stuck_before = False
        while not self._stop.wait(self.interval):
            stuck = self.check()
            if stuck != stuck_before:
                self._on_stuck(stuck)
                stuck_before = stuck

    def check(self) -> bool:
        """One look: log new stuck predicts; True while any predict is stuck."""
        now = self._clock()
        active = self.scheduler.calls.snapshot()
        stuck = [(ident, jobs) for ident, jobs, began in active if now - began > self.timeout]
        frames = sys._current_frames() if stuck else {}
        for ident, jobs in stuck:
            if ident in self._reported:
                continue
            self._reported.add(ident)
            ids = ", ".join(job.context.get(REQUEST_ID, "-") for job in jobs)
            stack = "".join(traceback.format_stack(frames[ident])) if ident in frames else ""
            logger.error(
                "predict for request %s has run for more than %gs (predict_timeout); its "
                "thread is at:\n%s",
                ids,
                self.timeout,
                stack.rstrip(),
            )
        self._reported &= {ident for ident, _ in stuck}
        blocked = self.scheduler.queue_depth == 0 or len(stuck) >= self.scheduler.slots
        if stuck and not self._gave_up and len(stuck) == len(active) and blocked:
            self._gave_up = True
            logger.error("only stuck predicts are left: exiting so that the platform restarts")
            self._on_hopeless()
        return bool(stuck)
