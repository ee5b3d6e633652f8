"""The scheduler with plain functions and threads: no HTTP."""

from __future__ import annotations

import threading
import time

import pytest

from openbayes_serving.batching import Batcher, BatchSpec
from openbayes_serving.errors import ClientGone, OverloadedError, QueueTimeoutError
from openbayes_serving.scheduler import Scheduler


class Results:
    def __init__(self) -> None:
        self.values: dict[object, tuple[object, BaseException | None]] = {}
        self.cond = threading.Condition()

    def callback(self, key: object):
        def done(result, error):
            with self.cond:
                self.values[key] = (result, error)
                self.cond.notify_all()

        return done

    def wait(self, count: int, timeout: float = 5.0) -> None:
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.values) >= count, timeout)


def test_jobs_never_exceed_concurrency():
    running, peak, lock = [0], [0], threading.Lock()

    def runner(x):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.02)
        with lock:
            running[0] -= 1
        return x * 2

    scheduler = Scheduler([runner], concurrency=2, max_queue=100)
    scheduler.start()
    results = Results()
    for i in range(10):
        scheduler.submit(i, results.callback(i), deadline=time.monotonic() + 5)
    results.wait(10)
    scheduler.close(1)
    assert peak[0] == 2
    assert {k: v[0] for k, v in results.values.items()} == {i: i * 2 for i in range(10)}


def test_full_queue_raises_overloaded_at_once():
    gate = threading.Event()
    scheduler = Scheduler([lambda x: gate.wait(5)], concurrency=1, max_queue=1)
    scheduler.start()
    results = Results()
    scheduler.submit(1, results.callback(1), deadline=time.monotonic() + 5)
    time.sleep(0.05)
    scheduler.submit(2, results.callback(2), deadline=time.monotonic() + 5)
    with pytest.raises(OverloadedError) as info:
        scheduler.submit(3, results.callback(3), deadline=time.monotonic() + 5)
    assert info.value.headers["retry-after"] == "1"
    gate.set()
    results.wait(2)
    scheduler.close(1)


def test_job_that_expired_in_the_queue_is_not_run():
    gate = threading.Event()
    ran: list[int] = []

    def runner(x):
        ran.append(x)
        gate.wait(5)

    scheduler = Scheduler([runner], concurrency=1, max_queue=10)
    scheduler.start()
    results = Results()
    scheduler.submit(1, results.callback(1), deadline=time.monotonic() + 5)
    time.sleep(0.05)
    scheduler.submit(2, results.callback(2), deadline=time.monotonic() + 0.01)
    time.sleep(0.05)
    gate.set()
    results.wait(2)
    scheduler.close(1)
    assert ran == [1]
    assert isinstance(results.values[2][1], QueueTimeoutError)


def test_job_whose_client_disconnected_is_dropped_from_a_batch():
    class Connection:
        disconnected = False

    gone, staying = Connection(), Connection()
    batches: list[list[int]] = []

    def record(xs):
        batches.append(list(xs))
        return xs

    scheduler = Scheduler(
        [record],
        concurrency=1,
        max_queue=10,
        policy=Batcher(BatchSpec(max_batch_size=3, max_delay_ms=50)),
    )
    results = Results()
    scheduler.submit(1, results.callback(1), deadline=time.monotonic() + 5, connection=staying)
    scheduler.submit(2, results.callback(2), deadline=time.monotonic() + 5, connection=gone)
    scheduler.submit(3, results.callback(3), deadline=time.monotonic() + 5)
    gone.disconnected = True
    scheduler.start()
    results.wait(3)
    scheduler.close(1)
    assert batches == [[1, 3]]
    assert isinstance(results.values[2][1], ClientGone)
    assert results.values[3] == (3, None)


def test_cancelled_job_leaves_the_queue():
    gate = threading.Event()
    scheduler = Scheduler([lambda x: gate.wait(5)], concurrency=1, max_queue=10)
    scheduler.start()
    results = Results()
    scheduler.submit(1, results.callback(1), deadline=time.monotonic() + 5)
    time.sleep(0.05)
    job = scheduler.submit(2, results.callback(2), deadline=time.monotonic() + 5)
    assert scheduler.queue_depth == 1
    assert scheduler.cancel(job) is True
    assert scheduler.queue_depth == 0
    gate.set()
    results.wait(1)
    scheduler.close(1)
    assert 2 not in results.values


def test_batch_starts_at_once_when_full_and_after_max_delay_otherwise():
    sizes: list[int] = []

    def add_one(xs):
        sizes.append(len(xs))
        return [x + 1 for x in xs]

    scheduler = Scheduler(
        [add_one],
        concurrency=1,
        max_queue=100,
        policy=Batcher(BatchSpec(max_batch_size=4, max_delay_ms=500)),
    )
    results = Results()
    for i in range(4):
        scheduler.submit(i, results.callback(i), deadline=time.monotonic() + 5)
    started = time.monotonic()
    scheduler.start()
    results.wait(4)
    assert time.monotonic() - started < 0.3  # full: no waiting for the deadline
    started = time.monotonic()
    scheduler.submit(10, results.callback(10), deadline=time.monotonic() + 5)
    results.wait(5)
    assert 0.45 <= time.monotonic() - started < 1.2  # alone: waits out max_delay_ms
    scheduler.close(1)
    assert sizes == [4, 1]
    assert results.values[10] == (11, None)
