"""emit_event: record a named event for the request being served.

Outside production it only logs. In production it POSTs MessagePack ``{id, name, data}``
to the local collector from a background thread, so a slow or absent collector never
holds a request.
"""

from __future__ import annotations

import contextvars
import logging
import queue
import threading
from typing import Any

import msgpack
import orjson

from .settings import Mode, detect_mode, environ_snapshot

logger = logging.getLogger(__name__)

COLLECTOR_URL = "http://127.0.0.1:6666/events"
COLLECTOR_TIMEOUT = 2.0
# The platform's numeric request id (header X-Openbayes-Serving-Request-Id), set by app.py.
PLATFORM_REQUEST_ID: contextvars.ContextVar[int] = contextvars.ContextVar(
    "openbayes_platform_request_id", default=0
)

_outbox: queue.Queue[bytes] = queue.Queue(maxsize=1000)
_sender: threading.Thread | None = None
_sender_lock = threading.Lock()
_mode: Mode | None = None


def _encode(data: Any) -> bytes:
    if isinstance(data, bytes):
        return data
    if isinstance(data, str):
        return data.encode("utf-8")
    if isinstance(data, (int, float)) and not isinstance(data, bool):
        return str(data).encode("utf-8")
    return orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY)


def _strip_bytes(data: Any) -> Any:
    if isinstance(data, bytes):
        return f"<{len(data)} bytes>"
    if isinstance(data, (list, tuple)):
        return [_strip_bytes(item) for item in data]
    if isinstance(data, dict):
        return {key: _strip_bytes(value) for key, value in data.items()}
    return data


def emit_event(name: str, data: Any, id: int | None = None) -> None:  # noqa: A002
    """Record an event named ``name`` with ``data`` for the current request.

    Args:
        name: the event's name.
        data: bytes, str, a number, or anything JSON can encode.
        id: the platform request id; by default the one of the request being served.
    """
    global _mode
    encoded = _encode(data)  # encode first, so bad data fails in development too
    if _mode is None:
        _mode = detect_mode(environ_snapshot())
    if _mode is not Mode.PRODUCTION:
        logger.info("event %s -> %s", name, _strip_bytes(data))
        return
    request_id = id if id is not None else PLATFORM_REQUEST_ID.get()
    if not request_id:
        logger.error(
            "event %s not recorded: the request has no X-Openbayes-Serving-Request-Id", name
        )
        return
    message = msgpack.packb({"id": request_id, "name": name, "data": encoded})
    _ensure_sender()
    try:
        _outbox.put_nowait(message)
    except queue.Full:
        logger.warning("event %s dropped: the collector is not keeping up", name)


def _ensure_sender() -> None:
    global _sender
    with _sender_lock:
        if _sender is None or not _sender.is_alive():
            _sender = threading.Thread(target=_send_forever, name="events", daemon=True)
            _sender.start()


def _send_forever() -> None:
    import requests

    url = environ_snapshot().get("OPENBAYES_SERVING_EVENTS_URL", COLLECTOR_URL)
    session = requests.Session()
    while True:
        message = _outbox.get()
        try:
            session.post(
                url,
                data=message,
                headers={"Content-Type": "application/msgpack"},
                timeout=COLLECTOR_TIMEOUT,
            )
        except requests.RequestException as exc:
            logger.error("event not recorded: %s", exc)
