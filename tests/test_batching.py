"""Batching policies in-process: what makes one call, and what a batch's results become."""

from __future__ import annotations

import contextvars
import time
from typing import Any

import pytest

from openbayes_serving.batching import Batcher, BatchSpec, OneAtATime, batch, capacity, policy_for
from openbayes_serving.errors import BadResultError
from openbayes_serving.scheduler import Job


def job(payload: Any, enqueued_at: float = 0.0) -> Job:
    return Job(payload, lambda r, e: None, deadline=1e9, enqueued_at=enqueued_at)


def test_batch_decorator_marks_predict_and_validates_its_arguments():
    @batch(max_batch_size=8, max_delay_ms=2)
    def predict(xs: list[int]) -> list[int]:
        return xs

    assert predict.__openbayes_batch__ == BatchSpec(8, 2.0)  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="max_batch_size"):
        batch(max_batch_size=0)
    with pytest.raises(ValueError, match="max_delay_ms"):
        batch(max_delay_ms=-1)


def test_policy_follows_the_decorator():
    assert isinstance(policy_for(None), OneAtATime)
    assert isinstance(policy_for(BatchSpec(4, 1)), Batcher)


def test_capacity_is_calls_in_flight_times_requests_per_call():
    assert capacity(OneAtATime(), concurrency=2, instances=3) == 6
    assert capacity(Batcher(BatchSpec(32, 5)), concurrency=2, instances=1) == 64


def test_one_at_a_time_hands_back_the_result_or_the_error():
    policy = OneAtATime()
    assert policy.run(lambda x: x + 1, [job(1)]) == [(2, None)]
    [(result, error)] = policy.run(lambda x: 1 / x, [job(0)])
    assert result is None
    assert isinstance(error, ZeroDivisionError)


def test_the_runner_runs_in_the_requests_context():
    var: contextvars.ContextVar[str] = contextvars.ContextVar("v", default="outside")
    var.set("request")
    queued = job(None)  # copies the context now, as submit does
    var.set("later")
    assert OneAtATime().run(lambda _: var.get(), [queued]) == [("request", None)]


def test_batch_gathers_until_full_without_waiting():
    queued = [job(i) for i in range(1, 5)]
    policy = Batcher(BatchSpec(3, 10_000))
    jobs, stopping = policy.gather(
        job(0, time.monotonic()), lambda t: queued.pop(0), time.monotonic
    )
    assert [j.payload for j in jobs] == [0, 1, 2]
    assert not stopping


def test_batch_stops_at_its_deadline_and_at_a_stop_mark():
    policy = Batcher(BatchSpec(8, 0))
    jobs, stopping = policy.gather(job(0, time.monotonic()), lambda t: False, time.monotonic)
    assert len(jobs) == 1
    assert not stopping
    jobs, stopping = policy.gather(job(0, time.monotonic()), lambda t: None, time.monotonic)
    assert len(jobs) == 1
    assert stopping


def test_batch_results_go_to_their_requests_in_order():
    policy = Batcher(BatchSpec(4, 1))
    outcomes = policy.run(lambda xs: [x * 10 for x in xs], [job(1), job(2), job(3)])
    assert outcomes == [(10, None), (20, None), (30, None)]


@pytest.mark.parametrize("returned", [[1], "ab", None])
def test_a_batch_result_of_the_wrong_length_fails_every_request_of_the_batch(returned):
    outcomes = Batcher(BatchSpec(4, 1)).run(lambda xs: returned, [job(1), job(2)])
    assert len(outcomes) == 2
    for result, error in outcomes:
        assert result is None
        assert isinstance(error, BadResultError)
        assert "for a batch of 2 requests" in str(error)


class Waits:
    """A fake queue for ``gather``: the jobs queued now, and every timeout it was asked."""

    def __init__(self, queued: list[Job]) -> None:
        self.queued = queued
        self.timeouts: list[float] = []

    def pop(self, timeout: float | None) -> Job | bool:
        self.timeouts.append(-1.0 if timeout is None else timeout)
        return self.queued.pop(0) if self.queued else False


def test_a_lone_request_starts_at_once_after_a_wait_that_got_no_one():
    now = [100.0]
    policy = Batcher(BatchSpec(8, 50))
    first = Waits([])
    assert len(policy.gather(job(0, now[0]), first.pop, lambda: now[0])[0]) == 1
    assert first.timeouts[0] == pytest.approx(0.05)  # the first lone request waits its window
    now[0] += 0.1
    lone = Waits([])
    jobs, _ = policy.gather(job(1, now[0]), lone.pop, lambda: now[0])
    assert [j.payload for j in jobs] == [1]
    assert lone.timeouts == [0.0]  # only looked at what was queued


def test_a_request_with_others_queued_behind_it_waits_for_its_batch_again():
    now = [100.0]
    policy = Batcher(BatchSpec(8, 50))
    policy.gather(job(0, now[0]), Waits([]).pop, lambda: now[0])  # waiting got no one
    now[0] += 0.1
    busy = Waits([job(2), job(3)])
    jobs, _ = policy.gather(job(1, now[0]), busy.pop, lambda: now[0])
    assert [j.payload for j in jobs] == [1, 2, 3]
    assert busy.timeouts[-1] == pytest.approx(0.05)  # it waited the window for more
    now[0] += 0.1
    after = Waits([])
    policy.gather(job(4, now[0]), after.pop, lambda: now[0])
    assert after.timeouts[-1] == pytest.approx(0.05)  # waiting paid last time: it waits


def test_a_lone_request_waits_anyway_once_a_probe_period_to_learn_if_waiting_pays():
    now = [100.0]
    policy = Batcher(BatchSpec(8, 5))  # probes every PROBE_S (100 windows is less)
    policy.gather(job(0, now[0]), Waits([]).pop, lambda: now[0])
    waited = []
    for _ in range(30):  # 3 s of lone requests, 0.1 s apart
        now[0] += 0.1
        queue = Waits([])
        policy.gather(job(1, now[0]), queue.pop, lambda: now[0])
        waited.append(queue.timeouts[-1] > 0)
    assert 2 <= sum(waited) <= 3  # about one a second (PROBE_S), the rest at once


def test_a_wide_window_is_probed_at_most_once_every_hundred_windows():
    now = [100.0]
    policy = Batcher(BatchSpec(8, 1000))
    policy.gather(job(0, now[0]), Waits([]).pop, lambda: now[0])
    waited = 0
    for _ in range(300):  # 300 s of lone requests, 1 s apart
        now[0] += 1.0
        queue = Waits([])
        policy.gather(job(1, now[0]), queue.pop, lambda: now[0])
        waited += queue.timeouts[-1] > 0
    assert 2 <= waited <= 3  # waits that get no one cost 1% of the time at most
