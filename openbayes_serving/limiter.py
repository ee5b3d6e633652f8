"""How many predicts may run at once on one instance: a pinned number, or one that adapts.

``predict_concurrency`` set to an integer pins the limit (the GPU lock). Set to ``auto``
(the default) the limit moves between 1 and ``max_predict_concurrency`` by hill
climbing on measured throughput, in the spirit of TCP Vegas and Netflix's
concurrency-limits:

- A window is at least ``2 * limit`` (and 6) finished calls and 80 ms; only a window in
  which the limit was reached and the calls ran for at least ``BUSY_SHARE`` of the time
  their permits were held (there was demand: the threads did not wait for jobs through
  a pause in traffic) counts. Its throughput comes from
  Little's law: the permits held on average over the window (at most the limit) over
  the mean time a permit was held, from the moment a thread took it (before it took a
  job) to the moment it gave it back. Counting the calls that finish in the window
  would see too few in the first window after a rise (the new threads' first calls are
  still running) and too many or too few when calls finish in bursts; a permit's time
  also holds what a thread waits for the GIL before its call starts, which the call's
  own clock cannot see. Its latency is the mean time of a call.
- Each step must pay for itself: a step up from ``n`` to ``m`` must buy at least 20%
  of the ``m / n`` that calls which overlap (a predict waiting on I/O) would gain, and
  a probe down from ``n + 1`` to ``n`` is kept when it lost less than 20% of what a
  slot brings. (An onnxruntime session with one thread, on 2 cores that also serve
  HTTP, gains 1.25-1.4x from a second call at once, not 2x; 30% refused it as often as
  not, and the model then used one core.) The
  first window at the new limit decides at once when the change is plain: none at
  all (a step up is undone) or three quarters of the ideal or more (a step up kept, a
  probe down undone). Otherwise, and for a probe down that lost nothing (one slot of
  ten is within a window's noise), the limit goes back for one window and the trial is
  compared with the better of the windows on its two sides (after a step up, that
  window starts once the calls beyond the old limit are done):
  a machine whose speed drifts (other processes come and go) must not pass for a gain,
  nor one window slowed by it.
- While steps up pay the limit climbs on, each step twice the last (1, 2, 4, 8, ...
  the maximum, as in TCP's slow start). A held limit probes one up and one down in turn.
- A limit that a step fell back to holds before its next probe: 2 windows, then 8, 32,
  ... as more steps from it fail (exponential backoff, kept for each limit), though a
  hold ends after ``MAX_HOLD_SECONDS`` once its first 2 windows are done; a back-off
  brings every hold back to 2 windows. So a predict that holds the GIL, saturates a
  device or already keeps every core busy, whose calls only wait on each other,
  settles at 1 and tries 2 ever more rarely, down to a window every 2 s, while an
  I/O-bound one climbs to the maximum.
- Held at a limit, it backs off by one when throughput stays below ``BACK_OFF_SHARE``
  of what it was when the limit was reached for two windows in a row: latency grew
  without throughput (calls at once = throughput x latency), as when a device or the
  service a predict calls saturates.

The limit is logged at debug level when it changes and at info level where it settled,
at most once a minute.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

logger = logging.getLogger(__name__)

Window = tuple[float, float]  # a window's calls per second, and calls in progress at once

MIN_WINDOW_CALLS = 6
MIN_WINDOW_SECONDS = 0.08
KEEP_SHARE = 0.2  # a step is kept when it bought this share of its ideal change
CLEAR_SHARE = 0.75  # a first window with this share of it decides at once
HOLD_WINDOWS = 2  # the shortest hold between probes, and the first after a failed step
MAX_HOLD_SECONDS = 2.0  # a longer hold ends after this long
MAX_HOLD_WINDOWS = 1024  # where the backoff stops growing (the seconds end a hold first)
BACK_OFF_SHARE = 0.7  # held, a throughput below this share of the reference backs off
BUSY_SHARE = 0.05  # a window whose calls ran for less of the permits' time had no demand
SETTLED_LOG_SECONDS = 60.0


class Limiter:
    """Permits for predict calls on one instance; ``adaptive`` moves the limit."""

    _calls: int
    _peak: int

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
        self._taken = threading.local()  # .at: when this thread took its permit
        # The current window: calls finished, their total time, the total time their
        # permits were held, the peak running.
        self._last = clock()
        self._new_window(self._last)
        self._draining = False  # back from a step up: the window waits for the surplus
        # The step being judged: the limit it left (0: none) and the one it tried, whether
        # the limit is back for a check, the window just before it and its own.
        self._from, self._to, self._checking = 0, 0, False
        self._base: Window = (0.0, 0.0)
        self._tried: Window = (0.0, 0.0)
        self._climb = 1  # the size of the next step up: it doubles while steps pay
        self._probe_up = True  # the direction of the next probe from a held limit
        self._reference = 0.0  # throughput when the limit was last reached
        self._low = False  # the last window held was below the back-off share
        # The hold before the next probe: its windows, those gone by, when it began.
        self._hold, self._held_windows, self._held_since = 1, 0, clock()  # the first measures
        self._next_hold: dict[int, int] = {}  # by limit: its hold after the next failed step
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
            running = self._running
            while running >= self.limit:
                self._cond.wait()
                running = self._running
            if self.adaptive:
                self._taken.at = self._tick(running)
            self._running = running = running + 1
            if running > self._peak:
                self._peak = running

    def release(self, seconds: float | None) -> None:
        """Give a permit back; ``seconds`` is how long the predict ran (None: no call).

        After a call the releasing thread takes a permit again at once, so no other
        thread is woken: handing the permit to a sleeping thread would cost a thread
        switch per request. A thread that leaves (None) wakes one; a rise in the limit
        wakes all (``_step``).
        """
        with self._cond:
            if not self.adaptive:
                self._running -= 1
                if seconds is None:
                    self._cond.notify()
                return
            now = self._tick(self._running)
            self._running -= 1
            if seconds is None:
                self._cond.notify()
            else:
                self._observe(seconds, now - self._taken.at, now)

    def _tick(self, running: int) -> float:
        # Under the lock, before ``_running`` changes: the permit-seconds up to now, of
        # permits within the limit (after a fall, those beyond it are on their way out).
        now = self._clock()
        limit = self.limit
        self._area += (running if running < limit else limit) * (now - self._last)
        self._last = now
        return now

    def _observe(self, seconds: float, held: float, now: float) -> None:
        # Under the lock: one call into the window; at the window's end, one step.
        if self._draining:  # calls beyond the limit, sharing cores and GIL, would slow it
            self._draining = self._running > self.limit
            return self._new_window(now)
        self._calls += 1
        self._total += seconds
        self._held += held
        elapsed = now - self._window_start
        if self._calls < max(2 * self.limit, MIN_WINDOW_CALLS) or elapsed < MIN_WINDOW_SECONDS:
            return
        # Little's law: calls/s = permits held on average / the mean time one is held
        # (calls over the window when the clock did not move while permits were held).
        permits = self._area / elapsed if self._held else 1.0
        throughput = permits * self._calls / (self._held or elapsed)
        latency = self._total / self._calls
        # Demand: the limit was reached, and the calls kept the permits busy (else the
        # threads held them waiting for jobs: a pause in traffic, not a slower model).
        demand = self._peak >= self.limit and self._total >= BUSY_SHARE * self._held
        self._new_window(now)
        if demand:
            self._step(throughput, latency, now)

    def _new_window(self, now: float) -> None:
        self._calls, self._total, self._held, self._area = 0, 0.0, 0.0, 0.0
        self._peak, self._window_start = self._running, now

    def _step(self, throughput: float, latency: float, now: float) -> None:
        old = self.limit
        low = throughput < self._reference * BACK_OFF_SHARE
        window = (throughput, throughput * latency)
        if self._from:
            self._judge(window, now)
        elif low and self._low and old > 1:
            # Held, and throughput fell two windows in a row: back off.
            self._settle(old - 1, throughput, HOLD_WINDOWS, now)
            self._next_hold.clear()
            low = False
        elif not self._holding(now):
            self._probe(window)
        self._low = low and not self._from
        if self.limit != old:
            _log_change(self.name, old, self.limit, throughput, latency)
            self._cond.notify_all()
            if self.on_change is not None:
                self.on_change(self.limit)
        if self.limit != self._logged_limit and now - self._logged_at >= SETTLED_LOG_SECONDS:
            self._logged_at, self._logged_limit = now, self.limit
            logger.info("%s: predict concurrency settled at %d", self.name, self.limit)

    def _judge(self, window: Window, now: float) -> None:
        before, after, checked = self._from, self._to, self._checking
        ideal = after / before  # the ratio that calls which overlap would give
        trial = self._tried if checked else window
        ratio = _ratio(trial, self._base, after > before)
        if checked:
            # Back at the old limit: the trial against the better window on its two sides.
            ratio = min(ratio, _ratio(trial, window, after > before))
            paid = ratio >= 1 + KEEP_SHARE * (ideal - 1)
        else:
            share = (ratio - 1) / (ideal - 1)  # of the ideal change, in its direction
            # A probe down that lost nothing in its first window is checked too: one slot
            # of ten is within a window's noise, and a lower limit kept by chance costs an
            # I/O-bound predict its throughput.
            if share < CLEAR_SHARE and (share > 0 or ideal < 1):
                self._tried, self._checking, self.limit = trial, True, before
                self._draining = after > before
                return  # not plain: one window back at the old limit
            paid = (share > 0) == (ideal > 1)
        self._from = 0
        if not paid:
            hold = self._next_hold.get(before, HOLD_WINDOWS)
            self._settle(before, self._base[0], hold, now)
            self._next_hold[before] = min(4 * hold, MAX_HOLD_WINDOWS)
        elif before < after < self.maximum:
            climb = min(2 * (after - before), self.maximum - after)  # paid: climb on, faster
            if checked:  # back at the old limit: the next window, at the new one, is the base
                self._settle(after, trial[0], 0, now)
                self._climb, self._probe_up = climb, True
            else:
                self._reference, self._climb = trial[0], climb
                self._try(after + climb, trial)
        else:
            self._settle(after, trial[0], HOLD_WINDOWS, now)

    def _holding(self, now: float) -> bool:
        # One more window held: True while the hold lasts.
        self._held_windows += 1
        if self._held_windows <= min(self._hold, HOLD_WINDOWS):
            return True
        return self._held_windows <= self._hold and now - self._held_since < MAX_HOLD_SECONDS

    def _try(self, limit: int, base: Window) -> None:
        self._from, self._to, self._base, self._checking = self.limit, limit, base, False
        self.limit = limit

    def _settle(self, limit: int, throughput: float, windows: int, now: float) -> None:
        self.limit, self._reference, self._climb = limit, throughput, 1
        self._hold, self._held_windows, self._held_since = windows, 0, now

    def _probe(self, window: Window) -> None:
        self._reference = self._reference or window[0]
        up = (self._probe_up or self.limit == 1) and self.limit < self.maximum
        if up:
            self._try(self.limit + min(self._climb, self.maximum - self.limit), window)
        elif self.limit > 1:
            self._try(self.limit - 1, window)
        self._probe_up = not up


def _log_change(name: str, old: int, new: int, throughput: float, latency: float) -> None:
    logger.debug(
        "%s: predict concurrency %d -> %d (%.0f calls/s, %.1f ms a call)",
        name,
        old,
        new,
        throughput,
        latency * 1000,
    )


def _ratio(new: Window, old: Window, up: bool) -> float:
    """How much more ``new`` did than ``old``: its calls per second over the other's.

    After a step up, the lesser of that and the same ratio of calls in progress at once
    (calls per second times the time of a call): a machine that got faster raises the
    first, not the second, and so do calls that wait for the GIL before they start. Only
    calls that really run side by side raise both.
    """
    throughput = new[0] / old[0]
    return min(throughput, new[0] * new[1] / (old[0] * old[1])) if up else throughput
