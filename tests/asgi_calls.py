"""Requests sent straight to an app in-process, several at once, and clients that hang up.

``LocalClient`` sends one request at a time and its client never leaves; these helpers
run requests concurrently on the client's event loop and let one disconnect at a chosen
moment, as uvicorn would tell the app.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import orjson

from openbayes_serving.testing import LocalClient, http_scope


@dataclass
class Answer:
    """What the app sent for one request (status None when it sent nothing)."""

    status: int | None
    body: bytes
    finished_at: float  # the loop's clock (time.monotonic) when the app returned

    def json(self) -> Any:
        """The body as JSON."""
        return orjson.loads(self.body)


async def post(
    app: Any,
    json: Any,
    headers: dict[str, str] | None = None,
    hang_up_after: float | None = None,
    delay: float = 0.0,
) -> Answer:
    """POST ``json`` to ``app`` after ``delay`` seconds; the client leaves ``hang_up_after``
    seconds after the body was sent (None: it stays until the answer)."""
    await asyncio.sleep(delay)
    loop = asyncio.get_running_loop()
    body = orjson.dumps(json)
    raw = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    raw += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    scope = http_scope("POST", "/", raw)
    gone = False  # the client has left (or the app has returned)
    waiters: list[asyncio.Future[None]] = []  # receive() calls waiting for the end
    given = False
    sent: list[dict[str, Any]] = []

    def leave() -> None:
        nonlocal gone
        gone = True
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def receive() -> dict[str, Any]:
        nonlocal given
        if not given:
            given = True
            if hang_up_after is not None:
                loop.call_later(hang_up_after, leave)
            return {"type": "http.request", "body": body, "more_body": False}
        if not gone:
            waiter = loop.create_future()
            waiters.append(waiter)
            await waiter
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if not gone:
            sent.append(message)

    await app(scope, receive, send)
    leave()
    status = sent[0]["status"] if sent else None
    data = b"".join(m.get("body", b"") for m in sent[1:])
    return Answer(status, data, loop.time())


def instance(client: LocalClient) -> Any:
    """The (first) predictor instance the client's app built."""
    pipeline = client.app.lifecycle.pipeline
    assert pipeline is not None
    return pipeline.instances[0]


def run(client: LocalClient, *calls: Any) -> list[Any]:
    """Run coroutines (``post(client.app, ...)``) together on the client's loop."""

    async def main() -> list[Any]:
        return list(await asyncio.gather(*calls))

    return client._loop.run_until_complete(main())
