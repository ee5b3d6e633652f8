"""How model threads group requests into predict calls: one at a time, or ``@serv.batch``.

A policy decides two things for the scheduler: which queued jobs go into one call
(``gather``) and how that call is made and its results handed back (``run``). A new
policy is a class here with these two methods plus the setting or decorator that picks
it (``policy_for``); the scheduler does not change.
"""

from __future__ import annotations

import contextvars
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Callable, Protocol, TypeVar, Union

from .errors import BadResultError

F = TypeVar("F", bound=Callable[..., Any])
Runner = Callable[[Any], Any]
Outcome = tuple[Any, Union[BaseException, None]]


class Job(Protocol):
    """What a policy sees of a queued request (the scheduler's ``Job``)."""

    payload: Any
    enqueued_at: float
    context: contextvars.Context


J = TypeVar("J", bound=Job)
# The next live job; None for a stop mark; False when the wait ran out.
Pop = Callable[[Union[float, None]], Union[J, None, bool]]


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


class Policy(Protocol):
    """What the scheduler asks of a batching policy."""

    items_per_call: int  # the most requests one predict call serves
    batches: bool  # calls take lists (their sizes are worth a metric)

    def gather(self, first: J, pop: Pop[J], clock: Callable[[], float]) -> tuple[list[J], bool]:
        """The jobs of one call, starting from ``first``; True if a stop mark came."""

    def run(self, runner: Runner, jobs: Sequence[Job]) -> list[Outcome]:
        """Call predict for ``jobs``: one (result, error) per job, in order."""


class OneAtATime:
    """Each request is its own predict call."""

    items_per_call = 1
    batches = False

    def gather(self, first: J, pop: Pop[J], clock: Callable[[], float]) -> tuple[list[J], bool]:
        """Just ``first``."""
        return [first], False

    def run(self, runner: Runner, jobs: Sequence[Job]) -> list[Outcome]:
        """Call predict with the one job's payload."""
        job = jobs[0]
        try:
            return [(job.context.run(runner, job.payload), None)]
        except BaseException as exc:  # handed to the request; it decides what to answer
            return [(None, exc)]


class Batcher:
    """``@serv.batch``: up to ``max_batch_size`` requests per call, within ``max_delay_ms``.

    Waiting for others pays only when others come. When the last batch that waited got
    no one else, a request that finds nothing queued starts at once: a lone client is
    not made to wait ``max_delay_ms`` on every request. Now and then (``PROBE_S``
    after the last wait, or 100 windows if that is longer: waits that find no one cost
    at most 1% of the time) such a request waits anyway, to learn whether waiting pays
    again; so does any request that finds others queued behind it.
    """

    batches = True
    PROBE_S = 1.0

    def __init__(self, spec: BatchSpec) -> None:
        self.spec = spec
        self.items_per_call = spec.max_batch_size
        self._waits_pay = True  # the last batch that waited got more than its first
        self._probe_at = 0.0  # when a lone request next waits anyway
        self._probe_every = max(self.PROBE_S, 100 * spec.max_delay_ms / 1000.0)

    def gather(self, first: J, pop: Pop[J], clock: Callable[[], float]) -> tuple[list[J], bool]:
        """A batch from ``first``: until full, or its deadline (one per batch, from ``first``)."""
        jobs = [first]
        if not self._waits_pay and self.spec.max_batch_size > 1:
            job = pop(0.0)  # only what is queued already
            if job is None:
                return jobs, True
            if job is False:
                if clock() < self._probe_at:
                    return jobs, False
            else:
                jobs.append(job)  # type: ignore[arg-type]
        deadline = first.enqueued_at + self.spec.max_delay_ms / 1000.0
        while len(jobs) < self.spec.max_batch_size:
            job = pop(max(0.0, deadline - clock()))
            if job is False:
                break
            if job is None:
                return jobs, True
            jobs.append(job)  # type: ignore[arg-type]
        self._waits_pay = len(jobs) > 1
        if not self._waits_pay:
            self._probe_at = clock() + self._probe_every
        return jobs, False

    def run(self, runner: Runner, jobs: Sequence[Job]) -> list[Outcome]:
        """One call with the list of payloads; every job gets the error if it fails."""
        try:
            results = jobs[0].context.run(runner, [job.payload for job in jobs])
            if not isinstance(results, (list, tuple)) or len(results) != len(jobs):
                size = (
                    len(results) if isinstance(results, (list, tuple)) else type(results).__name__
                )
                raise BadResultError(
                    f"batched predict() returned {size} results for a batch of {len(jobs)} "
                    "requests; it must return a list of the same length and order"
                )
        except BaseException as exc:  # every request of the batch gets the error
            return [(None, exc)] * len(jobs)
        return [(result, None) for result in results]


def policy_for(spec: BatchSpec | None) -> Policy:
    """The policy a predictor asks for: ``@serv.batch`` or one request per call."""
    return OneAtATime() if spec is None else Batcher(spec)


def capacity(policy: Policy, concurrency: int, instances: int) -> int:
    """Requests that can be inside predict at once: calls in flight x requests per call."""
    return concurrency * instances * policy.items_per_call
