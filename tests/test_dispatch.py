"""The event loop <-> model thread bridge in-process: results, timeouts, streams."""

from __future__ import annotations

import asyncio
import gc
import threading
import weakref
from typing import Any

import pytest

from openbayes_serving.dispatch import Dispatcher
from openbayes_serving.errors import QueueTimeoutError
from openbayes_serving.pipeline import PredictCall
from openbayes_serving.request import Request
from openbayes_serving.scheduler import Scheduler
from openbayes_serving.streams import STREAMED, StreamStart


async def no_message() -> dict[str, Any]:
    await asyncio.sleep(60)
    return {}


def call(value: Any, timeout: float = 5) -> PredictCall:
    scope = {"type": "http", "method": "POST", "path": "/", "headers": []}
    return PredictCall(value, Request(scope, no_message, timeout))


def run(runner: Any, *calls: PredictCall) -> list[Any]:
    scheduler = Scheduler([runner], concurrency=2, max_queue=100)
    scheduler.start()

    async def main() -> list[Any]:
        dispatcher = Dispatcher(scheduler)
        return await asyncio.gather(*(dispatcher.submit(c) for c in calls), return_exceptions=True)

    try:
        return asyncio.run(main())
    finally:
        scheduler.close(1)


def test_results_come_back_to_their_own_requests():
    assert run(lambda c: c.value * 2, *(call(i) for i in range(20))) == [i * 2 for i in range(20)]


def test_an_error_in_predict_reaches_its_request():
    [error] = run(lambda c: 1 / 0, call(1))
    assert isinstance(error, ZeroDivisionError)


def test_a_request_past_its_deadline_is_504_and_leaves_the_queue():
    gate = threading.Event()
    ran: list[Any] = []

    def runner(c: PredictCall) -> Any:
        ran.append(c.value)
        gate.wait(2)
        return c.value

    scheduler = Scheduler([runner], concurrency=1, max_queue=10)
    scheduler.start()

    async def main() -> list[Any]:
        dispatcher = Dispatcher(scheduler)
        first = asyncio.ensure_future(dispatcher.submit(call("slow")))
        await asyncio.sleep(0.05)
        late = await asyncio.gather(dispatcher.submit(call("late", 0.1)), return_exceptions=True)
        gate.set()
        return [await first, *late]

    first, late = asyncio.run(main())
    scheduler.close(1)
    assert first == "slow"
    assert isinstance(late, QueueTimeoutError)
    assert ran == ["slow"]


def test_a_streaming_predict_hands_over_a_channel():
    def runner(c: PredictCall) -> Any:
        assert c.open_stream is not None
        channel = c.open_stream()
        channel.put("chunk")
        channel.finish()
        return STREAMED

    scheduler = Scheduler([runner], concurrency=1, max_queue=10)
    scheduler.start()

    async def main() -> tuple[list[Any], bool]:
        start = await Dispatcher(scheduler).submit(call(None))
        assert isinstance(start, StreamStart)
        chunks: list[Any] = []
        while not start.channel.finished:
            await asyncio.wait_for(start.event.wait(), 5)
            start.event.clear()
            chunks += start.channel.take()
        return chunks + start.channel.take(), start.channel.error is None

    try:
        assert asyncio.run(main()) == (["chunk"], True)
    finally:
        scheduler.close(1)


@pytest.mark.parametrize("timeout", [0.0001])
def test_a_request_already_past_its_deadline_never_queues(timeout):
    import time

    c = call(1, timeout)
    time.sleep(0.01)
    [error] = run(lambda c: c.value, c)
    assert isinstance(error, QueueTimeoutError)


def test_a_shorter_deadline_submitted_after_a_longer_one_still_gets_its_504_first():
    gate = threading.Event()

    def runner(c: PredictCall) -> Any:
        gate.wait(5)
        return c.value

    scheduler = Scheduler([runner], concurrency=1, max_queue=10)
    scheduler.start()

    async def main() -> tuple[Any, bool]:
        dispatcher = Dispatcher(scheduler)
        busy = asyncio.ensure_future(dispatcher.submit(call("busy", 5)))
        await asyncio.sleep(0.05)
        late = asyncio.ensure_future(dispatcher.submit(call("late", 5)))
        short = await asyncio.gather(dispatcher.submit(call("short", 0.1)), return_exceptions=True)
        still_waiting = not late.done()
        gate.set()
        await asyncio.gather(busy, late)
        return short[0], still_waiting

    try:
        short, still_waiting = asyncio.run(main())
    finally:
        scheduler.close(1)
    assert isinstance(short, QueueTimeoutError)
    assert still_waiting


class Big:
    """A result whose lifetime a test can watch."""


def test_a_finished_call_keeps_no_reference_to_its_result():
    results: list[weakref.ref[Big]] = []

    def runner(c: PredictCall) -> Any:
        big = Big()
        results.append(weakref.ref(big))
        return big

    scheduler = Scheduler([runner], concurrency=1, max_queue=10)
    scheduler.start()

    async def main() -> None:
        dispatcher = Dispatcher(scheduler)
        for i in range(5):
            await dispatcher.submit(call(i))

    try:
        asyncio.run(main())
    finally:
        scheduler.close(1)  # the model thread lets go of the last job it ran
    gc.collect()
    assert len(results) == 5
    assert [ref() for ref in results] == [None] * 5
