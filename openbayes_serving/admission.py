"""Who may wait for predict: a place in the queue, bounded by count and by time.

A request takes its place from its head, before its body is read (``Gate.admit``), so a
request the queue would refuse costs no memory and no parsing. Two bounds apply once
every predict slot is busy:

- count: ``max_queue`` requests wait at most;
- time: while requests arrive faster than the model serves them, a request is refused
  when it would wait longer than ``max_queue_wait``, by the
  estimate (requests ahead of it + 1) x the recent time the model takes per request.
  That time is a call's duration / the requests it served / the calls that ran beside
  it, so it follows batching and the concurrency the limiter allows at the moment.
  The estimate applies after the first 16 calls, and one waiting request is always let
  in, so it never starves the model. ``auto`` (the default) bounds the wait by the
  larger of 2 s and ten recent predict calls, so a slow model still queues a few
  requests.

"Faster than served" is judged over short windows (an eighth of the bound, at least
0.1 s): requests let in > 1.5 x requests served + 1, in the last window or in the
current one so far, or a refusal by time in the last window. (Without the last: the
refusals keep a window's let-in at 1.5 x served, so no window looks outpaced at its
end, and each window of steady overload let in half again what it served: the queue
grew past the bound window by window, up to ``max_queue``.) Clients that each wait for
their answer before they send again (a closed loop) never outpace the model, so they
wait as they would without the bound, and are not turned into a storm of refusals and
retries.

The estimate is only as good as the recent past: a request that waited twice the bound
anyway (predict slowed down, the limiter lowered its limit) is answered 503 when a model
thread reaches it, rather than after the client gave up. Both refusals are 503 with
``Retry-After``: the server is overloaded, the request was never run.
"""

from __future__ import annotations

import time

from .errors import OverloadedError

AUTO_WAIT_FLOOR = 2.0  # seconds: auto never bounds the wait below this
AUTO_WAIT_CALLS = 10  # ...nor below this many predict calls
_SAMPLES = 16  # predict calls timed before the time bound applies
_WEIGHT = 0.2  # of the newest call in the moving averages


class Admission:
    """A place in the queue taken from a request's head, before its body is read."""

    __slots__ = ("used",)

    def __init__(self) -> None:
        self.used = False


class Gate:
    """The queue's bounds, and the recent predict times they are judged by.

    The event loop calls ``admit``/``withdraw``/``check``; model threads call ``timed``.
    Both only write plain numbers, so neither takes a lock.
    """

    def __init__(self, max_queue: int, max_wait: float | None) -> None:
        self.max_queue = max_queue
        self.max_wait = max_wait  # seconds; None: auto; 0: no time bound
        self.admitted = 0  # places taken by admit() and not yet used or withdrawn
        self.closing = False
        self.per_call = 0.0  # moving average of one predict call, seconds
        self.per_request = 0.0  # ...of the model's time per request (see ``timed``)
        self._samples = 0
        self.arrived = 0  # requests let in, ever (the event loop)
        self.served = 0  # requests predict was called for, ever (model threads)
        self._window: tuple[float, int, int] = (0.0, 0, 0)  # (began, arrived, served)
        self._outpaced = False  # in the last window, arrivals outpaced the model
        self._refused = False  # in this window, a request was refused by time

    def timed(self, seconds: float, requests: int, running: int) -> None:
        """A predict call serving ``requests`` took ``seconds`` while ``running`` ran.

        Called on a model thread. ``running`` counts this call too.
        """
        if self._samples < _SAMPLES:
            self._samples += 1
            weight = 1.0 / self._samples  # a plain mean until the average has its samples
        else:
            weight = _WEIGHT
        self.served += requests
        self.per_call += weight * (seconds - self.per_call)
        self.per_request += weight * (seconds / (requests * running) - self.per_request)

    @property
    def bound(self) -> float:
        """The longest a request should wait in the queue, seconds; 0 when unbounded."""
        if self.max_wait is not None:
            return self.max_wait
        if self._samples < _SAMPLES:
            return 0.0
        return max(AUTO_WAIT_FLOOR, AUTO_WAIT_CALLS * self.per_call)

    def shed_after(self) -> float:
        """How long a job may wait before it is refused unrun (the estimate's backstop)."""
        bound = self.bound
        return 2 * bound if bound else float("inf")

    def check(self, waiting: int, free: int) -> None:
        """Refuse one more request, given ``waiting`` jobs and ``free`` predict slots.

        Raises:
            OverloadedError: the queue is full by count or by time, or it is closing.
        """
        if self.closing:
            raise OverloadedError("the server is shutting down")
        pending = waiting + self.admitted
        if free - pending > 0:
            self._arrive()
            return
        if pending >= self.max_queue:
            raise OverloadedError(f"server overloaded: {pending} requests already wait for predict")
        bound = self.bound
        if pending and bound and self._samples >= _SAMPLES:
            wait = (pending + 1) * self.per_request
            if wait > bound and self._outpacing():
                self._refused = True
                raise OverloadedError(
                    f"server overloaded: a new request would wait about {wait:.1f}s for "
                    f"predict (max_queue_wait {bound:.1f}s)"
                )
        self._arrive()

    def _arrive(self) -> None:
        """Count a request let in; every window, note whether arrivals outpaced the model."""
        self.arrived += 1
        now = time.monotonic()
        began, arrived, served = self._window
        if now - began >= max(0.1, self.bound / 8):
            let_in, served = self.arrived - arrived, self.served - served
            self._outpaced = self._refused or self._faster(let_in, served)
            self._window, self._refused = (now, self.arrived, self.served), False

    def _outpacing(self) -> bool:
        """Whether requests arrive faster than served: the last window, or this one so far."""
        _, arrived, served = self._window
        return self._outpaced or self._faster(self.arrived + 1 - arrived, self.served - served)

    @staticmethod
    def _faster(let_in: int, served: int) -> bool:
        return let_in > 1.5 * served + 1

    def admit(self, waiting: int, free: int) -> Admission:
        """Take a place for a request whose body is yet to be read.

        Raises:
            OverloadedError: as ``check``.
        """
        self.check(waiting, free)
        self.admitted += 1
        return Admission()

    def use(self, admission: Admission) -> bool:
        """Turn an admitted place into a queued job's; False if it was already used."""
        if admission.used:
            return False
        admission.used = True
        self.admitted -= 1
        return True

    withdraw = use  # a place given back unused is released the same way
