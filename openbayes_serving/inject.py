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
==========  ========================================================================
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from . import codec
from .errors import PredictorError
from .settings import Settings

logger = logging.getLogger(__name__)

INIT_NAMES = ("onnx", "config", "device")
REQUEST_NAMES = ("json", "payload", "data", "params", "args", "headers", "request")
ONNX_INSTALL = (
    "pip install 'openbayes-serving[onnx]' (CPU) or 'openbayes-serving[gpu]' (CUDA; "
    "uninstall onnxruntime first)"
)


class HttpRequest:
    """One HTTP request, read whole, as the request path hands it to resolvers."""

    __slots__ = ("scope", "body", "content_type", "accept", "_environ", "_parsed")

    def __init__(
        self, scope: dict[str, Any], body: bytes, content_type: str | None, accept: str | None
    ) -> None:
        self.scope = scope
        self.body = body
        self.content_type = content_type
        self.accept = accept
        self._environ: dict[str, Any] | None = None
        self._parsed: Any = _UNSET

    def environ(self) -> dict[str, Any]:
        """The WSGI environ, built on first use."""
        if self._environ is None:
            from . import flask_compat

            self._environ = flask_compat.build_environ(self.scope, self.body)
        return self._environ

    def parsed(self, strict: bool) -> Any:
        """The parsed body (json when ``strict``, payload otherwise), parsed once."""
        if self._parsed is _UNSET:
            self._parsed = codec.decode_payload_param(self.body, self.content_type)
        if strict and codec.body_kind(self.content_type) is codec.BodyKind.RAW:
            return codec.decode_json_param(self.body, self.content_type)
        return self._parsed


_UNSET: Any = object()

RequestResolver = Callable[[HttpRequest], Any]


def _params(request: HttpRequest) -> Any:
    from . import flask_compat  # werkzeug loads in the worker, not in the master

    return flask_compat.make_args(request.scope.get("query_string", b""))


def _headers(request: HttpRequest) -> Any:
    from . import flask_compat

    return flask_compat.make_headers(request.scope.get("headers", ()))


def _request(request: HttpRequest) -> Any:
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
}


@dataclass
class InitContext:
    """What __init__ injection draws on for one instance."""

    settings: Settings
    predictor_dir: Path
    device: str
    cache: dict[str, Any] = field(default_factory=dict)


def model_dirs(settings: Settings, predictor_dir: Path) -> list[Path]:
    """Where ``onnx`` looks: model_path when set, else beside predictor.py, then the cwd."""
    if settings.model_path:
        return [Path(settings.model_path)]
    dirs = [predictor_dir]
    if Path.cwd() != predictor_dir:
        dirs.append(Path.cwd())
    return dirs


def find_onnx_model(settings: Settings, predictor_dir: Path) -> Path:
    """The .onnx file to load: the first by name, deterministically, when there are several.

    Raises:
        PredictorError: no .onnx file is found.
    """
    searched = model_dirs(settings, predictor_dir)
    for place in searched:
        if place.is_file():
            return place
        found = sorted(place.glob("*.onnx")) if place.is_dir() else []
        if found:
            if len(found) > 1:
                logger.warning(
                    "found %d .onnx files in %s; loading %s (set --model-path to choose): %s",
                    len(found),
                    place,
                    found[0].name,
                    ", ".join(p.name for p in found[1:]),
                )
            return found[0]
    raise PredictorError(
        "__init__ asks for 'onnx' but no .onnx file was found in "
        + ", ".join(str(p) for p in searched)
        + ". Put the model beside predictor.py or pass --model-path."
    )


def import_onnxruntime() -> Any:
    """Import onnxruntime, or fail with the install line."""
    try:
        import onnxruntime
    except ImportError:
        raise PredictorError(
            f"__init__ asks for 'onnx' but onnxruntime is not installed: {ONNX_INSTALL}"
        ) from None
    return onnxruntime


def onnx_providers(ort: Any, device: str) -> list[Any]:
    """CUDA with the device's id when the device is CUDA and the provider exists, else CPU."""
    if device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
        index = int(device.split(":", 1)[1]) if ":" in device else 0
        return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
    if device.startswith("cuda"):
        logger.warning(
            "device %s asked for, but onnxruntime has no CUDA provider: using CPU", device
        )
    return ["CPUExecutionProvider"]


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _resolve_onnx(ctx: InitContext) -> Any:
    ort = import_onnxruntime()
    path = find_onnx_model(ctx.settings, ctx.predictor_dir)
    options = ort.SessionOptions()
    threads = ctx.settings.onnx_threads or available_cores()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    spinning = "1" if ctx.settings.onnx_spinning else "0"
    options.add_session_config_entry("session.intra_op.allow_spinning", spinning)
    options.add_session_config_entry("session.inter_op.allow_spinning", spinning)
    session = ort.InferenceSession(
        str(path), sess_options=options, providers=onnx_providers(ort, ctx.device)
    )
    logger.info(
        "loaded %s (providers: %s; intra-op threads: %d; spinning: %s)",
        path,
        ", ".join(session.get_providers()),
        threads,
        "on" if ctx.settings.onnx_spinning else "off",
    )
    return session


def load_config(settings: Settings, predictor_dir: Path) -> dict[str, Any]:
    """The ``config`` dict: --config FILE, else config.json / .yaml / .yml beside predictor.py."""
    if settings.config:
        path = Path(settings.config)
        if not path.is_file():
            raise PredictorError(f"config file {path} does not exist")
    else:
        candidates = [predictor_dir / n for n in ("config.json", "config.yaml", "config.yml")]
        existing = [p for p in candidates if p.is_file()]
        if not existing:
            return {}
        path = existing[0]
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError:
                raise PredictorError(f"{path} is YAML: pip install pyyaml") from None
            value = yaml.safe_load(text)
        else:
            value = json.loads(text)
    except ValueError as exc:
        raise PredictorError(f"config file {path} does not parse: {exc}") from None
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise PredictorError(f"config file {path} must hold a mapping, not {type(value).__name__}")
    return value


INIT_RESOLVERS: dict[str, Callable[[InitContext], Any]] = {
    "onnx": _resolve_onnx,
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
