"""The queue is bounded by time as well as count: overload is answered 503 at once, and no
request waits far past the bound (``max_queue_wait``)."""

from __future__ import annotations

import threading
import time
from typing import cast

import pytest

from openbayes_serving.admission import AUTO_WAIT_FLOOR, Gate
from openbayes_serving.errors import OverloadedError
from openbayes_serving.scheduler import Scheduler
from openbayes_serving.settings import SettingsError, resolve_settings


def timed_gate(
    max_wait: float | None, per_call: float, calls: int = 16, max_queue: int = 1000, running=1
):
    gate = Gate(max_queue, max_wait)
    for _ in range(calls):
        gate.timed(per_call, 1, running)
    gate.arrived = 10_000  # requests have been arriving far faster than served
    return gate


def test_a_request_that_would_wait_past_the_bound_is_refused_at_once():
    gate = timed_gate(2.0, per_call=0.04)
    # one call at a time: 49 waiting -> the 50th would wait 50 x 40 ms = 2.0 s, at the bound
    gate.check(waiting=49, free=0)
    with pytest.raises(OverloadedError, match="would wait about 2.0s") as info:
        gate.check(waiting=50, free=0)
    assert info.value.headers["retry-after"]


def test_calls_that_run_side_by_side_drain_the_queue_faster():
    # four calls at once, 160 ms each: the model serves a request every 40 ms
    four = timed_gate(2.0, per_call=0.16, running=4)
    four.check(waiting=49, free=0)
    with pytest.raises(OverloadedError):
        four.check(waiting=50, free=0)
    # a probe that made two GIL-bound calls take twice as long drains no faster
    probed = timed_gate(2.0, per_call=0.08, running=2)
    with pytest.raises(OverloadedError):
        probed.check(waiting=50, free=0)


def test_one_waiting_request_is_always_let_in_and_free_slots_never_refuse():
    gate = timed_gate(1.0, per_call=30.0)  # a 30 s predict: any wait is past 1 s
    gate.check(waiting=0, free=0)
    gate.check(waiting=3, free=4)  # a free slot for each
    with pytest.raises(OverloadedError):
        gate.check(waiting=1, free=0)


def test_auto_bounds_the_wait_by_2_s_or_ten_predict_calls_whichever_is_longer():
    fast, slow = timed_gate(None, per_call=0.04), timed_gate(None, per_call=3.0)
    assert fast.bound == AUTO_WAIT_FLOOR
    assert slow.bound == pytest.approx(30.0)
    # a 3 s model still queues requests: 9 waiting + 1 = 30 s, at the bound
    slow.check(waiting=9, free=0)
    with pytest.raises(OverloadedError):
        slow.check(waiting=10, free=0)
    with pytest.raises(OverloadedError):
        fast.check(waiting=50, free=0)


def test_batched_calls_are_judged_per_request():
    gate = Gate(1000, 2.0)
    for _ in range(16):
        gate.timed(0.32, 32, 1)  # 10 ms per request
    gate.arrived = 10_000
    gate.check(waiting=150, free=0)  # 151 x 10 ms = 1.5 s


def test_no_time_bound_before_predict_was_timed_or_when_turned_off():
    cold = timed_gate(2.0, per_call=1.0, calls=15)
    cold.check(waiting=100, free=0)
    off = timed_gate(0.0, per_call=1.0)
    off.check(waiting=100, free=0)
    assert off.shed_after() == float("inf")
    with pytest.raises(OverloadedError, match="100 requests already wait"):
        Gate(100, 0.0).check(waiting=100, free=0)


def test_admitted_places_count_until_used_or_withdrawn():
    gate = timed_gate(2.0, per_call=0.5)  # 4 requests fit in 2 s at one slot
    places = [gate.admit(waiting=0, free=0) for _ in range(4)]
    with pytest.raises(OverloadedError):
        gate.admit(waiting=0, free=0)
    assert gate.use(places[0])
    assert not gate.use(places[0])
    gate.withdraw(places[1])
    gate.admit(waiting=1, free=0)
    assert gate.admitted == 3


class Answers:
    def __init__(self) -> None:
        self.items: list[tuple[float, object, BaseException | None]] = []
        self.cond = threading.Condition()

    def callback(self, result: object, error: BaseException | None) -> None:
        with self.cond:
            self.items.append((time.monotonic(), result, error))
            self.cond.notify_all()

    def tagged(self, tag: int):
        """A callback that records ``(tag, result)`` as its result."""
        return lambda result, error: self.callback((tag, result), error)

    def wait(self, count: int, timeout: float = 10.0) -> None:
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.items) >= count, timeout)


def overload_at_4x(count: int) -> tuple[int, list[tuple[float, BaseException | None]]]:
    """``count`` requests at 200/s against a 20 ms predict (one at a time, 0.2 s bound:
    a queue of about 10, 0.1 s windows), after 16 unloaded calls that time it.

    Returns the requests refused at once and, for each answered one, (its wait, its error).
    """

    def predict(x: int) -> int:
        time.sleep(0.02)
        return x

    scheduler = Scheduler([predict], concurrency=1, max_queue=1000, max_queue_wait=0.2)
    scheduler.start()
    answers = Answers()
    deadline = time.monotonic() + 60
    for i in range(16):  # time predict first, unloaded
        scheduler.submit(i, answers.callback, deadline)
        answers.wait(i + 1)
    answers.items.clear()
    refused = 0
    sent: list[float] = []
    for i in range(count):  # 200 requests/s against a 50 requests/s model
        sent.append(time.monotonic())
        try:
            scheduler.submit(i, answers.tagged(i), deadline)
        except OverloadedError:
            refused += 1
        time.sleep(0.005)
    answers.wait(count - refused, timeout=30)
    scheduler.close(2)
    tags = [cast("tuple[int, object]", result)[0] for _, result, _ in answers.items]
    return refused, [(at - sent[tag], error) for (at, _, error), tag in zip(answers.items, tags)]


def test_a_burst_at_4x_capacity_is_answered_in_time_run_or_refused_at_once():
    refused, answered = overload_at_4x(60)  # for 0.3 s
    waits = [wait for wait, _ in answered]
    ran = [wait for wait, error in answered if error is None]
    assert refused > 0, "the excess is refused at once"
    assert len(ran) > 10, "the model still gets work"
    assert max(waits) < 2 * 0.2 + 0.3, "nothing waits much past the bound"


def test_steady_overload_keeps_the_queue_at_the_bound_window_after_window():
    _, answered = overload_at_4x(300)  # for 1.5 s: fifteen windows
    shed = [error for _, error in answered if error is not None]
    waits = sorted(wait for wait, _ in answered)
    # the excess is refused at once, the queue does not grow
    assert shed == [], "no request waits until it is shed unrun"
    assert waits[int(0.9 * len(waits))] < 1.5 * 0.2


def test_a_job_queued_past_twice_the_bound_is_refused_unrun():
    release = threading.Event()
    ran: list[int] = []

    def predict(x: int) -> int:
        ran.append(x)
        if x == 100:
            release.wait(5)  # the model stalls, after the estimate said the queue was short
        return x

    scheduler = Scheduler([predict], concurrency=1, max_queue=1000, max_queue_wait=0.1)
    scheduler.start()
    answers = Answers()
    deadline = time.monotonic() + 60
    for i in range(16):
        scheduler.submit(i, answers.callback, deadline)
        answers.wait(i + 1)
    scheduler.submit(100, answers.callback, deadline)
    time.sleep(0.05)
    scheduler.submit(101, answers.callback, deadline)  # one place is always left
    time.sleep(0.3)  # 101 has now waited past 2 x 0.1 s
    release.set()
    answers.wait(18)
    scheduler.close(2)
    error = answers.items[-1][2]
    assert isinstance(error, OverloadedError)
    assert 101 not in ran


def test_max_queue_wait_is_a_setting_auto_by_default():
    def bound(*argv: str, **environ: str) -> float | None:
        return resolve_settings({}, list(argv), environ).queue_wait_bound

    assert bound() is None
    assert bound("--max-queue-wait", "auto") is None
    assert bound("--max-queue-wait", "1.5") == 1.5
    assert bound(OPENBAYES_SERVING_MAX_QUEUE_WAIT="0") == 0.0
    with pytest.raises(SettingsError, match="max_queue_wait must be auto, 0 or a positive"):
        bound("--max-queue-wait", "-1")


def test_clients_that_wait_for_their_answers_are_never_refused_by_time():
    # 8 clients in a closed loop on a 20 ms model: a new request would wait 8 x 20 ms,
    # past the 0.1 s bound, but arrivals never outpace the model, so nothing is refused
    def predict(x: int) -> int:
        time.sleep(0.02)
        return x

    scheduler = Scheduler([predict], concurrency=1, max_queue=1000, max_queue_wait=0.1)
    scheduler.start()
    refused, served = [0], [0]
    stop_at = time.monotonic() + 1.5

    def client() -> None:
        while time.monotonic() < stop_at:
            answers = Answers()
            try:
                scheduler.submit(0, answers.callback, time.monotonic() + 30)
            except OverloadedError:
                refused[0] += 1
                continue
            answers.wait(1)
            served[0] += 1

    clients = [threading.Thread(target=client) for _ in range(8)]
    for thread in clients:
        thread.start()
    for thread in clients:
        thread.join()
    scheduler.close(2)
    assert served[0] > 30
    assert refused[0] == 0
