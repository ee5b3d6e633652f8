"""How many predicts may run at once on one instance: a pinned number, or one that adapts.

``predict_concurrency`` set to an integer pins the limit (the GPU lock). Set to ``auto``
(the default) the limit moves between 1 and ``max_predict_concurrency`` by hill
climbing on measured throughput, in the spirit of TCP Vegas and Netflix's
concurrency-limits:

- A window is at least ``2 * limit`` (and 6) finished calls and 50 ms; only a window in
  which the limit was reached (there was demand) counts. Its throughput is calls per
  second over the window; its latency, the mean time of a call.
- Each step must pay for itself. After rising from ``n - 1`` to ``n`` the limiter
  compares the new window's throughput with the best of the last windows at ``n - 1``
  (one window slowed by a busy machine must not pass for a gain): calls
  that overlap (a predict waiting on I/O) gain about ``n / (n - 1)``; when the step
  bought at least half of that the limit rises again, else it falls back and holds for
  ``COOLDOWN_WINDOWS``. After a probe down from ``n + 1`` to ``n`` it stays down when it
  lost less than half of what a slot would bring, else it goes back up. Held limits
  probe up and down in turn. So an I/O-bound predict climbs to the maximum, and one
  that holds the GIL or saturates a device, whose calls only wait on each other,
  settles at 1 and probes 2 now and then.
- Held at a limit, it backs off by one when throughput falls below
  ``BACK_OFF_SHARE`` of what it was when the limit was reached: latency grew without
  throughput (calls at once = throughput x latency), as when a device or the service a
  predict calls saturates.

A thread's own clock cannot see the time it waits for the GIL before its call starts,
which is why throughput, not per-call latency, decides. The limit is logged at debug
level when it changes and at info level where it settled, at most once a minute.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Callable

logger = logging.getLogger(__name__)

MIN_WINDOW_CALLS = 6
MIN_WINDOW_SECONDS = 0.05
KEEP_SHARE = 0.5  # a step up is kept when it bought this share of its ideal gain
COOLDOWN_WINDOWS = 2  # after a step up that did not pay, windows before the next probe
BACK_OFF_SHARE = 0.7  # held, a throughput below this share of the reference backs off
SETTLED_LOG_SECONDS = 60.0


class Limiter:
    """Permits for predict calls on one instance; ``adaptive`` moves the limit."""

    def __init__(
        self,
        initial: int,
        maximum: int,
        adaptive: bool,
        name: str = "instance 0",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = max(1, min(initial, maximum))
        self.maximum = maximum
        self.adaptive = adaptive
        self.name = name
        self._clock = clock
        self._cond = threading.Condition()
        self._running = 0
        # The current window: calls finished, their total time, the peak running.
        self._calls = 0
        self._total = 0.0
        self._peak = 0
        self._window_start = clock()
        self._moved = 0  # the last step: +1 up, -1 a probe down, 0 none; this window judges it
        self._probe_up = True  # the direction of the next probe from a held limit
        self._retried = False  # the step being judged already had its second window
        self._recent: collections.deque[tuple[int, float]] = collections.deque(maxlen=4)
        self._reference = 0.0  # throughput when the limit was last reached
        self._cooldown = 1  # windows left before the next probe (the first measures)
        self._logged_at = clock()  # the first "settled" line comes a minute in
        self._logged_limit = 0
        self.on_change: Callable[[int], None] | None = None

    @property
    def running(self) -> int:
        """Permits held now (predicts running, or threads about to take a job)."""
        return self._running

    def acquire(self) -> None:
        """Block until a permit is free (a thread takes one before it takes a job)."""
        with self._cond:
            while self._running >= self.limit:
                self._cond.wait()
            self._running += 1
            self._peak = max(self._peak, self._running)

    def release(self, seconds: float | None) -> None:
        """Give a permit back; ``seconds`` is how long the predict ran (None: no call).

        After a call the releasing thread takes a permit again at once, so no other
        thread is woken: handing the permit to a sleeping thread would cost a thread
        switch per request. A thread that leaves (None) wakes one; a rise in the limit
        wakes all (``_step``).
        """
        with self._cond:
            self._running -= 1
            if seconds is None:
                self._cond.notify()
            elif self.adaptive:
                self._observe(seconds)

    def _observe(self, seconds: float) -> None:
        # Under the lock: one call into the window; at the window's end, one step.
        self._calls += 1
        self._total += seconds
        now = self._clock()
        elapsed = now - self._window_start
        if self._calls < max(2 * self.limit, MIN_WINDOW_CALLS) or elapsed < MIN_WINDOW_SECONDS:
            return
        throughput, latency = self._calls / elapsed, self._total / self._calls
        demand = self._peak >= self.limit
        self._calls, self._total = 0, 0.0
        self._peak, self._window_start = self._running, now
        if demand:
            self._step(throughput, latency, now)

    def _step(self, throughput: float, latency: float, now: float) -> None:
        old, moved = self.limit, self._moved
        self._moved = 0
        if moved:
            # Judge the last step: the best window at the new limit against the best at
            # the old one. One more window when the first fails (a busy machine stalls one).
            before = old - moved
            share = old / before - 1 if moved > 0 else 1 - old / before
            best = max(t for limit, t in self._recent if limit == before)
            here = max([*(t for limit, t in self._recent if limit == old), throughput][-2:])
            lost = here < best * (1 + KEEP_SHARE * share if moved > 0 else 1 - KEEP_SHARE * share)
            if lost and not self._retried:
                self._retried = True
                self._moved = moved  # judge again after one more window
            elif lost:
                self._settle(before, best)  # the step did not pay: back, and hold
            else:
                self._reference = here
                if moved > 0 and old < self.maximum:
                    self._move(+1)  # paid: keep climbing
                else:
                    self._cooldown = COOLDOWN_WINDOWS
        elif self._reference and throughput < self._reference * BACK_OFF_SHARE and old > 1:
            self._settle(old - 1, throughput)  # held, and throughput fell: back off
        elif self._cooldown > 0:
            self._cooldown -= 1
        else:
            self._probe(throughput)
        self._recent.append((old, throughput))
        if self.limit != old:
            logger.debug(
                "%s: predict concurrency %d -> %d (%.0f calls/s, %.1f ms a call)",
                self.name,
                old,
                self.limit,
                throughput,
                latency * 1000,
            )
            self._cond.notify_all()
            if self.on_change is not None:
                self.on_change(self.limit)
        if self.limit != self._logged_limit and now - self._logged_at >= SETTLED_LOG_SECONDS:
            self._logged_at, self._logged_limit = now, self.limit
            logger.info("%s: predict concurrency settled at %d", self.name, self.limit)

    def _move(self, step: int) -> None:
        self.limit += step
        self._moved = step
        self._retried = False

    def _settle(self, limit: int, throughput: float) -> None:
        self.limit, self._reference = limit, throughput
        self._cooldown = COOLDOWN_WINDOWS

    def _probe(self, throughput: float) -> None:
        self._reference = self._reference or throughput
        up = (self._probe_up or self.limit == 1) and self.limit < self.maximum
        if up or self.limit > 1:
            self._move(+1 if up else -1)
        self._probe_up = not up
