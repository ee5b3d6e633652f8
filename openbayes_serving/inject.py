"""Name -> resolver tables for ``__init__`` (onnx, config, device) and for requests.

==========  ========================================================================
__init__    what it receives
==========  ========================================================================
onnx        an onnxruntime.InferenceSession of the .onnx file under model_path
config      a dict from --config, else config.json / config.yaml beside predictor.py
device      the instance's device string ("cpu", "cuda:0", ...)
==========  ========================================================================

==========  ========================================================================
request     what predict() (or preprocess()) receives
==========  ========================================================================
json        the body parsed as JSON or MessagePack (400 for other content types)
payload     parsed like json for those content types, raw bytes otherwise
data        the raw body bytes, whatever the content type
params      the query arguments (werkzeug MultiDict); ``args`` is the same
headers     the request headers (case-insensitive)
request     a flask.Request over the same HTTP request
cancelled   set when the client hangs up or the deadline passes (``Cancelled``);
            postprocess and a predict that takes preprocess's result may ask too
==========  ========================================================================
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .config import load_config
from .request import Request
from .sessions import open_session
from .settings import Settings

INIT_NAMES = ("onnx", "config", "device")
CANCELLED = "cancelled"
REQUEST_NAMES = ("json", "payload", "data", "params", "args", "headers", "request", CANCELLED)


RequestResolver = Callable[[Request], Any]


def _params(request: Request) -> Any:
    from . import flask_compat  # werkzeug loads in the worker, not in the master

    return flask_compat.make_args(request.scope.get("query_string", b""))


def _headers(request: Request) -> Any:
    from . import flask_compat

    return flask_compat.make_headers(request.scope.get("headers", ()))


def _request(request: Request) -> Any:
    from . import flask_compat

    return flask_compat.make_request(request.environ())


REQUEST_RESOLVERS: dict[str, RequestResolver] = {
    "json": lambda r: r.parsed(strict=True),
    "payload": lambda r: r.parsed(strict=False),
    "data": lambda r: r.body,
    "params": _params,
    "args": _params,
    "headers": _headers,
    "request": _request,
    CANCELLED: lambda r: r.cancelled,  # made by the handler for predictors that ask
}


@dataclass
class InitContext:
    """What __init__ injection draws on for one instance."""

    settings: Settings
    predictor_dir: Path
    device: str
    cache: dict[str, Any] = field(default_factory=dict)


INIT_RESOLVERS: dict[str, Callable[[InitContext], Any]] = {
    "onnx": lambda ctx: open_session(ctx.settings, ctx.predictor_dir, ctx.device),
    "config": lambda ctx: load_config(ctx.settings, ctx.predictor_dir),
    "device": lambda ctx: ctx.device,
}


def match_name(name: str, annotation: Any, allowed: tuple[str, ...]) -> str | None:
    """The injected name for a parameter: its own name, else a string annotation naming one.

    A type annotation never breaks a known name (``json: dict`` is ``json``).
    """
    if name in allowed:
        return name
    if isinstance(annotation, str) and annotation.strip("'\"") in allowed:
        return annotation.strip("'\"")
    return None
