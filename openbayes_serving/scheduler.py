"""Limit and batch calls to predict() on model threads.

No Flask and no asyncio here: the scheduler takes callables and reports results through
callbacks, so tests drive it with plain functions. Waits block on one Condition.
"""

from __future__ import annotations

import contextvars
import enum
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Callable, TypeVar

from .errors import ClientGone, OverloadedError, QueueTimeoutError, ServingError

logger = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])
Runner = Callable[[Any], Any]
Done = Callable[[Any, "BaseException | None"], None]


@dataclass(frozen=True)
class BatchSpec:
    """How ``@serv.batch`` groups requests."""

    max_batch_size: int
    max_delay_ms: float


def batch(max_batch_size: int = 32, max_delay_ms: float = 5.0) -> Callable[[F], F]:
    """Mark ``predict`` as batched.

    Every argument arrives as a list with one item per request (or, with
    ``preprocess``, a list of its results), and predict returns a list of the same
    length and order. A batch starts when it is full, or ``max_delay_ms`` after its
    first request arrived.

    Args:
        max_batch_size: the most requests in one call.
        max_delay_ms: the longest a request waits for others to join its batch.
    """
    if int(max_batch_size) < 1:
        raise ValueError("max_batch_size must be at least 1")
    if float(max_delay_ms) < 0:
        raise ValueError("max_delay_ms must not be negative")
    spec = BatchSpec(int(max_batch_size), float(max_delay_ms))

    def mark(func: F) -> F:
        func.__openbayes_batch__ = spec  # type: ignore[attr-defined]
        return func

    return mark


class JobState(enum.Enum):
    """Where a job stands."""

    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    CANCELLED = "cancelled"


@dataclass(eq=False)
class Job:
    """One request waiting for, or holding, a predict slot."""

    payload: Any
    on_done: Done
    deadline: float
    enqueued_at: float
    # The connection the request came on, if the server lets us see it: a job whose
    # client has disconnected (``connection.disconnected``) is dropped, not run.
    connection: Any = None
    context: contextvars.Context = field(default_factory=contextvars.copy_context)
    state: JobState = JobState.PENDING
    started_at: float = 0.0
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


class Scheduler:
    """Model threads that run predict: ``concurrency`` per instance, one shared bounded queue.

    Each thread is bound to one instance's runner, so a job goes to whichever instance
    has a free thread. With a ``BatchSpec`` each thread gathers a batch before calling
    its runner with the list of payloads.

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
        batch: BatchSpec | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._runners = list(runners)
        self._concurrency = concurrency
        self._max_queue = max_queue
        self._batch = batch
        self._clock = clock
        self._queue: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._lock = threading.Lock()  # model threads only
        self._cancelled = 0  # cancel() calls that took a queued job: written by the loop
        self._skipped = 0  # cancelled jobs popped and dropped: written under _lock
        self._running = 0  # threads running predict now: written under _lock
        self._closing = False
        self._threads: list[threading.Thread] = []
        self.on_batch: Callable[[int], None] | None = None
        # (seconds waited in the queue, seconds predict ran), once per job, on its thread
        self.on_timing: Callable[[float, float], None] | None = None

    @property
    def queue_depth(self) -> int:
        """Live jobs waiting for a thread: what ``max_queue`` bounds."""
        return self._queue.qsize() - (self._cancelled - self._skipped)

    @property
    def running(self) -> int:
        """Threads running predict now."""
        return self._running

    @property
    def slots(self) -> int:
        """Model threads in all."""
        return len(self._runners) * self._concurrency

    def start(self) -> None:
        """Start the model threads (in the serving process, after the fork)."""
        for index, runner in enumerate(self._runners):
            for slot in range(self._concurrency):
                thread = threading.Thread(
                    target=self._serve,
                    args=(runner,),
                    name=f"model-{index}-{slot}",
                    daemon=True,
                )
                thread.start()
                self._threads.append(thread)

    def submit(self, payload: Any, on_done: Done, timeout: float, connection: Any = None) -> Job:
        """Queue a job; ``on_done(result, error)`` is called once, on a model thread.

        ``connection``, when given, has a ``disconnected`` flag: if it is set by the time
        a thread takes the job, the job is answered with ``ClientGone`` instead of run.

        Raises:
            OverloadedError: the queue already holds ``max_queue`` jobs, or is closing.
        """
        now = self._clock()
        job = Job(payload, on_done, deadline=now + timeout, enqueued_at=now, connection=connection)
        if self._closing:
            raise OverloadedError("the server is shutting down")
        pending = self.queue_depth
        if pending >= self._max_queue and self.slots - self._running - pending <= 0:
            raise OverloadedError(f"server overloaded: {pending} requests already wait for predict")
        self._queue.put(job)
        return job

    def cancel(self, job: Job) -> bool:
        """Take a job out of the queue if it has not started. Returns True if it was."""
        if not job.claim():
            return False
        job.state = JobState.CANCELLED
        self._cancelled += 1
        return True

    def close(self, timeout: float) -> None:
        """Let queued jobs finish, then stop the threads (waits at most ``timeout``)."""
        self._closing = True
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
            now = self._clock()
            if job.deadline <= now:
                _finish(job, None, QueueTimeoutError("request timed out in the queue"))
            elif job.connection is not None and job.connection.disconnected:
                _finish(job, None, ClientGone())
            else:
                job.state = JobState.RUNNING
                job.started_at = now
                return job

    def _gather(self, first: Job, spec: BatchSpec) -> tuple[list[Job], bool]:
        """A batch from ``first``: until full, or its deadline. True if a stop mark came."""
        jobs = [first]
        deadline = first.enqueued_at + spec.max_delay_ms / 1000.0
        while len(jobs) < spec.max_batch_size:
            job = self._pop(max(0.0, deadline - self._clock()))
            if job is False:
                break
            if job is None:
                return jobs, True
            jobs.append(job)  # type: ignore[arg-type]
        return jobs, False

    def _serve(self, runner: Runner) -> None:
        # Runs on a model thread until it pops its stop mark.
        stopping = False
        while not stopping:
            first = self._pop(None)
            if not isinstance(first, Job):
                return
            if self._batch is None:
                jobs = [first]
            else:
                jobs, stopping = self._gather(first, self._batch)
            with self._lock:
                self._running += 1
            began = self._clock()
            try:
                if self._batch is None:
                    self._run_one(runner, first)
                else:
                    self._run_batch(runner, jobs)
            finally:
                with self._lock:
                    self._running -= 1
            if self.on_timing is not None:
                ran = self._clock() - began
                for job in jobs:  # a batched job's wait includes gathering its batch
                    self.on_timing(began - job.enqueued_at, ran)

    def _run_one(self, runner: Runner, job: Job) -> None:
        try:
            result = job.context.run(runner, job.payload)
        except BaseException as exc:  # handed to the request; it decides what to answer
            _finish(job, None, exc)
        else:
            _finish(job, result, None)

    def _run_batch(self, runner: Runner, jobs: list[Job]) -> None:
        if self.on_batch is not None:
            self.on_batch(len(jobs))
        try:
            results = jobs[0].context.run(runner, [job.payload for job in jobs])
            if not isinstance(results, (list, tuple)) or len(results) != len(jobs):
                size = (
                    len(results) if isinstance(results, (list, tuple)) else type(results).__name__
                )
                raise ServingError(
                    f"batched predict() returned {size} results for a batch of {len(jobs)} "
                    "requests; it must return a list of the same length and order",
                    500,
                )
        except BaseException as exc:  # every request of the batch gets the error
            if isinstance(exc, ServingError) and exc.status_code == 500:
                logger.error("%s", exc.message)
            for job in jobs:
                _finish(job, None, exc)
            return
        for job, result in zip(jobs, results):
            _finish(job, result, None)


def _finish(job: Job, result: Any, error: BaseException | None) -> None:
    job.state = JobState.DONE
    try:
        job.on_done(result, error)
    except Exception:  # a broken callback must not kill the model thread
        logger.exception("result callback failed")


class Channel:
    """A bounded hand-off of stream chunks from a model thread to the event loop.

    The producer blocks while the buffer is full, so a slow client slows the generator
    instead of growing memory; ``close()`` from the consumer wakes it to stop.
    """

    def __init__(self, notify: Callable[[], object], maxsize: int = 64) -> None:
        self._notify = notify
        self._maxsize = maxsize
        self._items: deque[Any] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self.finished = False
        self.error: BaseException | None = None

    def put(self, item: Any) -> bool:
        """Producer: add a chunk; False once the consumer has gone."""
        with self._cond:
            while len(self._items) >= self._maxsize and not self._closed:
                self._cond.wait()
            if self._closed:
                return False
            self._items.append(item)
        self._notify()
        return True

    def finish(self, error: BaseException | None = None) -> None:
        """Producer: the generator ended (with ``error`` if it raised)."""
        with self._cond:
            self.finished = True
            self.error = error
        self._notify()

    def take(self) -> list[Any]:
        """Consumer: every chunk buffered so far (never blocks)."""
        with self._cond:
            items = list(self._items)
            self._items.clear()
            self._cond.notify_all()
        return items

    def close(self) -> None:
        """Consumer: the client left; the producer stops at its next chunk."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def is_closed(self) -> bool:
        """True once the consumer has gone."""
        return self._closed
