"""Log lines: one format (text or JSON) for every line, each naming its request id."""

from __future__ import annotations

import logging

import orjson

from .request import REQUEST_ID

TEXT_FORMAT = "%(asctime)s %(levelname)s %(process)d [%(request_id)s] %(name)s: %(message)s"


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        """Stamp the record with the id of the request being served."""
        record.request_id = REQUEST_ID.get()
        return True


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        """One JSON object per line."""
        line = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
            "request_id": getattr(record, "request_id", "-"),
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line).decode()


def configure_logging(level: str = "info", fmt: str = "text") -> None:
    """Log to stderr with the request id on every line, unless the host configured logging."""
    root = logging.getLogger()
    root.setLevel(level.upper())
    if any(getattr(h, "_openbayes", False) for h in root.handlers):
        for handler in root.handlers:
            handler.setFormatter(
                _JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT)
            )
        return
    if root.handlers:
        return
    handler = logging.StreamHandler()
    handler._openbayes = True  # type: ignore[attr-defined]
    handler.addFilter(_RequestIdFilter())
    handler.setFormatter(_JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root.addHandler(handler)
