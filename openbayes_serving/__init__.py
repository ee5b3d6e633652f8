"""Serve a predictor.py over HTTP."""

from .answers import PredictError as PredictError
from .batching import batch as batch
from .client import Client as Client
from .errors import ServingError as ServingError
from .errors import UnrecoverableError as UnrecoverableError
from .events import emit_event as emit_event
from .launcher import run as run

__version__ = "1.0.0.dev0"

__all__ = [
    "Client",
    "PredictError",
    "ServingError",
    "UnrecoverableError",
    "batch",
    "emit_event",
    "run",
]
