"""Run predict on model threads: a bounded queue, deadlines, and a batching policy.

No Flask and no asyncio here: the scheduler takes callables and reports results through
callbacks, so tests drive it with plain functions. How jobs are grouped into calls is
the policy's business (``batching``).
"""

from __future__ import annotations

import contextvars
import logging
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Callable

from .admission import Admission, Gate
from .batching import OneAtATime, Policy, Runner
from .errors import ClientGone, OverloadedError, QueueTimeoutError
from .limiter import Limiter

logger = logging.getLogger(__name__)

Done = Callable[[Any, "BaseException | None"], None]


@dataclass(eq=False)
class Job:
    """One request waiting for, or holding, a predict slot."""

    payload: Any
    on_done: Done
    deadline: float
    enqueued_at: float
    # When a job still queued is refused unrun: the deadline, or sooner the queue-wait
    # backstop (``Gate.shed_after``). One comparison per job on the fast path.
    expires: float = float("inf")
    # The connection the request came on, if the server lets us see it: a job whose
    # client has disconnected (``connection.disconnected``) is dropped, not run.
    connection: Any = None
    context: contextvars.Context = field(default_factory=contextvars.copy_context)
    # One token: whoever pops it first (a model thread starting the job, or cancel())
    # owns the job. list.pop() is atomic, so neither side takes a lock.
    _token: list[bool] = field(default_factory=lambda: [True])

    def claim(self) -> bool:
        """Take the job's token; False if someone already has."""
        try:
            self._token.pop()
        except IndexError:
            return False
        return True


class Calls:
    """The predict calls running now, by model thread: what the watchdog inspects."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active: dict[int, tuple[list[Job], float]] = {}
        self.count = 0

    def enter(self, jobs: list[Job], began: float) -> int:
        """The calling thread starts predict for ``jobs``; returns its ident."""
        ident = threading.get_ident()
        with self._lock:
            self.count += 1
            self._active[ident] = (jobs, began)
        return ident

    def leave(self, ident: int) -> int:
        """The call of thread ``ident`` ended; returns how many ran, it included."""
        with self._lock:
            self.count -= 1
            del self._active[ident]
            return self.count + 1

    def snapshot(self) -> list[tuple[int, list[Job], float]]:
        """Each call running now: (thread ident, its jobs, when it began)."""
        with self._lock:
            return [(ident, jobs, began) for ident, (jobs, began) in self._active.items()]


class Scheduler:
    """Model threads that run predict: ``concurrency`` per instance, one shared bounded queue.

    Each thread is bound to one instance's runner, so a job goes to whichever instance
    has a free thread. The policy (``batching``) says which jobs make one call.

    The hand-off is on every request's path, so the event loop takes no lock: the queue
    is a C ``SimpleQueue``, a job is owned by whoever claims its token, and ``submit``
    and ``cancel`` (called from one thread, the event loop) only write counters that the
    model threads read. A cancelled job stays queued until a thread pops and skips it.
    """

    def __init__(
        self,
        runners: Sequence[Runner],
        *,
        concurrency: int = 1,
        max_queue: int = 128,
        max_queue_wait: float | None = None,
        policy: Policy | None = None,
        limiters: Sequence[Limiter] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._runners = list(runners)
        self.limiters = list(
            limiters or [Limiter(concurrency, concurrency, False) for _ in runners]
        )
        self.gate = Gate(max_queue, max_queue_wait)
        self._policy: Policy = policy or OneAtATime()
        self._clock = clock
        self._queue: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._lock = threading.Lock()  # model threads only
        self._cancelled = 0  # cancel() calls that took a queued job: written by the loop
        self._skipped = 0  # cancelled jobs popped and dropped: written under _lock
        self.calls = Calls()
        self._threads: list[threading.Thread] = []
        self.on_batch: Callable[[int], None] | None = None
        # (seconds waited in the queue, seconds predict ran), once per job, on its thread
        self.on_timing: Callable[[float, float], None] | None = None

    @property
    def queue_depth(self) -> int:
        """Live jobs waiting for a thread: what ``max_queue`` bounds."""
        return self._queue.qsize() - (self._cancelled - self._skipped)

    @property
    def slots(self) -> int:
        """Predict calls that may run at once now, over every instance."""
        return sum(limiter.limit for limiter in self.limiters)

    def start(self) -> None:
        """Start the model threads (in the serving process, after the fork).

        Each instance gets as many threads as its limiter may ever allow; a thread takes
        a permit before it takes a job, so no more than the current limit run at once.
        """
        for index, (runner, limiter) in enumerate(zip(self._runners, self.limiters)):
            for slot in range(limiter.maximum):
                thread = threading.Thread(
                    target=self._serve,
                    args=(runner, limiter),
                    name=f"model-{index}-{slot}",
                    daemon=True,
                )
                thread.start()
                self._threads.append(thread)

    @property
    def running(self) -> int:
        """Predict calls running now."""
        return self.calls.count

    def admit(self) -> Admission:
        """Take a place in the queue for a request whose body is yet to be read.

        Admitted requests count against the queue's bounds (``admission.Gate``) until
        they are submitted or withdrawn, so a request the queue would refuse is refused
        before its body costs memory or time.

        Raises:
            OverloadedError: the queue is full (by count or by time), or closing (503).
        """
        return self.gate.admit(self.queue_depth, self.slots - self.calls.count)

    def withdraw(self, admission: Admission) -> None:
        """Give back an admitted place that was never submitted (the request failed)."""
        self.gate.withdraw(admission)

    def submit(
        self,
        payload: Any,
        on_done: Done,
        deadline: float,
        connection: Any = None,
        admission: Admission | None = None,
    ) -> Job:
        """Queue a job; ``on_done(result, error)`` is called once, on a model thread.

        ``deadline`` is on the scheduler's clock (``time.monotonic`` unless a test gives
        another): a job still queued then is answered ``QueueTimeoutError``.
        ``connection``, when given, has a ``disconnected`` property: if it is true by the
        time a thread takes the job, the job is answered ``ClientGone`` instead of run.

        ``admission``, from ``admit()``, is the place already taken for this job.

        Raises:
            OverloadedError: the queue already holds ``max_queue`` jobs, or is closing.
        """
        now = self._clock()
        gate = self.gate
        if admission is not None and gate.use(admission):
            if gate.closing:
                raise OverloadedError("the server is shutting down")
        else:
            gate.check(self.queue_depth, self.slots - self.calls.count)
        expires = min(deadline, now + gate.shed_after())
        job = Job(payload, on_done, deadline, now, expires, connection)
        self._queue.put(job)
        return job

    def cancel(self, job: Job) -> bool:
        """Take a job out of the queue if it has not started. Returns True if it was."""
        if not job.claim():
            return False
        self._cancelled += 1
        return True

    def close(self, timeout: float) -> None:
        """Let queued jobs finish, then stop the threads (waits at most ``timeout``)."""
        self.gate.closing = True
        for _ in self._threads:
            self._queue.put(None)  # one stop mark per thread, after every queued job
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _pop(self, timeout: float | None) -> Job | None | bool:
        """The next live job; None for a stop mark; False when ``timeout`` ran out.

        ``timeout`` None blocks; 0 does not wait. Expired jobs are answered 504 here, and
        jobs whose client has gone are dropped.
        """
        while True:
            try:
                job = self._queue.get(timeout is None or timeout > 0, timeout or None)
            except queue.Empty:
                return False
            if job is None:
                return None
            if not job.claim():
                with self._lock:
                    self._skipped += 1
                continue
            # _alive() inlined: this runs for every request
            now = self._clock()
            if job.expires <= now:
                _finish(job, None, _expired(job, now))
            elif job.connection is not None and job.connection.disconnected:
                _finish(job, None, ClientGone())
            else:
                return job

    def _serve(self, runner: Runner, limiter: Limiter) -> None:
        # Runs on a model thread until it pops its stop mark.
        policy = self._policy
        stopping = False
        while not stopping:
            limiter.acquire()
            first = self._pop(None)
            if not isinstance(first, Job):
                limiter.release(None)
                return
            jobs, stopping = policy.gather(first, self._pop, self._clock)
            if policy.batches:
                # Gathering took time: drop the jobs that expired or lost their client.
                now = self._clock()
                jobs = [job for job in jobs if _alive(job, now)]
                if not jobs:
                    limiter.release(None)
                    continue
                if self.on_batch is not None:
                    self.on_batch(len(jobs))
            began = self._clock()
            ident = self.calls.enter(jobs, began)
            try:
                outcomes = policy.run(runner, jobs)
            finally:
                ran = self._clock() - began
                running = self.calls.leave(ident)
                limiter.release(ran)
                self.gate.timed(ran, len(jobs), running)
            for job, (result, error) in zip(jobs, outcomes):
                if self.on_timing is not None:  # a batched job's wait includes gathering
                    self.on_timing(began - job.enqueued_at, ran)
                _finish(job, result, error)


def _alive(job: Job, now: float) -> bool:
    """True when a claimed job is still worth running; else it is answered now.

    A job past its deadline is answered ``QueueTimeoutError``, one that waited past
    the queue's backstop ``OverloadedError``, one whose client has gone
    (``connection.disconnected``) ``ClientGone``.
    """
    if job.expires <= now:
        _finish(job, None, _expired(job, now))
        return False
    if job.connection is not None and job.connection.disconnected:
        _finish(job, None, ClientGone())
        return False
    return True


def _expired(job: Job, now: float) -> Exception:
    """Why a job that is past ``expires`` is answered unrun."""
    if job.deadline <= now:
        return QueueTimeoutError("request timed out in the queue")
    return OverloadedError("server overloaded: the request waited too long for predict")


def _finish(job: Job, result: Any, error: BaseException | None) -> None:
    try:
        job.on_done(result, error)
    except Exception:  # a broken callback must not kill the model thread
        logger.exception("result callback failed")
