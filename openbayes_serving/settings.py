"""Settings: declaration, parsing, precedence and port rules.

Precedence: keyword arguments of ``serv.run`` > command-line flags >
``OPENBAYES_SERVING_*`` environment variables > defaults. The only module that reads
``os.environ``.
"""

from __future__ import annotations

import argparse
import enum
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any, Callable, Union

from .errors import SettingsError

ENV_PREFIX = "OPENBAYES_SERVING_"
DEFAULT_LOCAL_PORT = 25252
JOB_PORT = 8080
PRODUCTION_PORT = 80
# Where production looks for models after the predictor's own folder (the platform's
# deployment files, the older project mount, then the data bindings).
PRODUCTION_MODEL_DIRS = (
    "/openbayes/home",
    "/mnt/project",
    *(f"/openbayes/input/input{i}" for i in range(5)),
)
AUTO = "auto"


class Mode(enum.Enum):
    """Where the server runs, read from the environment as the reference does."""

    LOCAL = "local"
    JOB = "job"
    PRODUCTION = "production"


def _positive_int(value: object) -> int:
    number = int(str(value))
    if number <= 0:
        raise ValueError("must be a positive integer")
    return number


def _non_negative_int(value: object) -> int:
    number = int(str(value))
    if number < 0:
        raise ValueError("must be zero or a positive integer")
    return number


def _positive_float(value: object) -> float:
    number = float(str(value))
    if not number > 0:
        raise ValueError("must be a positive number")
    return number


def _concurrency(value: object) -> int | str:
    if str(value).strip().lower() == AUTO:
        return AUTO
    try:
        return _positive_int(value)
    except ValueError:
        raise ValueError("must be auto or a positive integer") from None


def _queue_wait(value: object) -> float | str:
    if str(value).strip().lower() == AUTO:
        return AUTO
    try:
        return _non_negative_float(value)
    except ValueError:
        raise ValueError("must be auto, 0 or a positive number of seconds") from None


def _non_negative_float(value: object) -> float:
    number = float(str(value))
    if not number >= 0 or number == float("inf"):
        raise ValueError("must be zero or a positive number")
    return number


def _port(value: object) -> int:
    number = int(str(value))
    if not 0 < number < 65536:
        raise ValueError("must be a port number between 1 and 65535")
    return number


def _bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError("must be true or false (also 1/0, yes/no)")


def _str_list(value: object) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else list(value)  # type: ignore[call-overload]
    result = tuple(str(item).strip() for item in items if str(item).strip())
    return result


def _devices(value: object) -> tuple[str, ...]:
    devices = _str_list(value)
    if not devices:
        raise ValueError("must name at least one device, such as cpu or cuda:0")
    return devices


def _choice(*choices: str) -> Callable[[object], str]:
    def parse(value: object) -> str:
        text = str(value).strip().lower()
        if text not in choices:
            raise ValueError("must be one of " + ", ".join(choices))
        return text

    return parse


def _optional_str(value: object) -> str | None:
    text = str(value)
    return text or None


def _api_key(value: object) -> str:
    # An empty key (a variable set to nothing) must not turn authentication off unseen.
    text = str(value)
    if not text.strip():
        raise ValueError("must not be empty: leave it unset to serve without a key")
    return text


def _setting(default: object, parse: Callable[[object], object], help: str) -> Any:
    return field(default=default, metadata={"parse": parse, "help": help})


@dataclass(frozen=True)
class Settings:
    """Every knob of the runtime, resolved once at start-up."""

    host: str = _setting("0.0.0.0", str, "Interface to bind.")
    port: int | None = _setting(
        None,
        _port,
        "Port to listen on. Default: 80 in production, 8080 in a job container, else 25252.",
    )
    model_path: str | None = _setting(
        None,
        _optional_str,
        "Directory (or file) where `onnx` looks for a model. "
        "Default: beside predictor.py, then the working directory; in production beside "
        "predictor.py, then /openbayes/home, /mnt/project, /openbayes/input/input0..4.",
    )
    config: str | None = _setting(
        None,
        _optional_str,
        "JSON or YAML file injected as `config`. Default: config.json/config.yaml beside "
        "predictor.py, else {}.",
    )
    predict_concurrency: Union[int, str] = _setting(
        AUTO,
        _concurrency,
        "Predicts that may run at once on each instance: a number pins it (the GPU lock); "
        "auto adapts it between 1 and max_predict_concurrency from measured call times.",
    )
    max_predict_concurrency: int = _setting(
        32, _positive_int, "The most predicts at once on each instance under auto."
    )
    max_queue: int = _setting(
        128, _non_negative_int, "Requests that may wait for a predict slot before 503."
    )
    max_queue_wait: Union[float, str] = _setting(
        AUTO,
        _queue_wait,
        "Seconds a request may expect to wait for a predict slot before 503; auto: the "
        "larger of 2 s and 10 recent predict calls; 0: bounded by max_queue alone.",
    )
    request_timeout: float = _setting(
        60.0, _positive_float, "Seconds a request may take, queue wait included, before 504."
    )
    predict_timeout: float = _setting(
        0.0,
        _non_negative_float,
        "Seconds after which a running predict counts as stuck: /readyz turns 503, the "
        "log shows its stack, and when only stuck predicts are left the process exits 4. "
        "0 (the default) turns the watchdog off.",
    )
    max_body_size: int = _setting(
        32 * 1024 * 1024, _positive_int, "Largest request body in bytes; larger is 413."
    )
    max_body_memory: int = _setting(
        0,
        _non_negative_int,
        "Bytes of request bodies a worker holds at once (counted from Content-Length when "
        "a request is admitted); beyond it requests get 503. 0: 4 x max_body_size.",
    )
    preprocess_threads: int = _setting(
        32, _positive_int, "Threads that run preprocess() and postprocess() outside the lock."
    )
    devices: tuple[str, ...] = _setting(
        ("cpu",),
        _devices,
        "Comma-separated devices, one model instance each (e.g. cuda:0,cuda:1).",
    )
    workers: int = _setting(
        1, _positive_int, "Server processes; each loads its own copy of the model."
    )
    max_requests: int = _setting(
        0,
        _non_negative_int,
        "Requests a worker serves before it is replaced (a new one loads the model, then the "
        "old one drains); 0: never.",
    )
    max_requests_jitter: int = _setting(
        0,
        _non_negative_int,
        "Up to this many more requests, drawn per worker, so that workers are not all "
        "replaced at once.",
    )
    graceful_timeout: float = _setting(
        30.0,
        _positive_float,
        "Seconds SIGTERM waits for in-flight requests; those still running then are "
        "answered 503 and the exit code is 5.",
    )
    keepalive: float = _setting(5.0, _positive_float, "Seconds an idle connection stays open.")
    stream_heartbeat: float = _setting(
        15.0,
        _non_negative_float,
        "Seconds without a chunk after which an SSE stream sends a `: ping` comment, so that "
        "proxies keep it open; 0 turns it off.",
    )
    cors_origins: tuple[str, ...] = _setting(
        ("*",),
        _str_list,
        "Comma-separated origins allowed by CORS; * for any (never with credentials); "
        "empty to turn CORS off.",
    )
    api_key: str | None = _setting(
        None,
        _api_key,
        "When set, POST / and /metrics need `Authorization: Bearer KEY` or `X-API-Key: KEY`; "
        "set but empty is an error.",
    )
    onnx_threads: int = _setting(
        0, _non_negative_int, "Intra-op threads per onnxruntime session; 0: cores / calls at once."
    )
    onnx_spinning: bool = _setting(
        False, _bool, "Let onnxruntime threads spin-wait (faster alone, slower under load)."
    )
    log_level: str = _setting("info", _choice("debug", "info", "warning", "error"), "Log level.")
    log_format: str = _setting("text", _choice("text", "json"), "Log lines as text or JSON.")
    mode: Mode = field(default=Mode.LOCAL, metadata={"internal": True})

    @property
    def is_production(self) -> bool:
        """True in production (OPENBAYES_SERVING_PRODUCTION set)."""
        return self.mode is Mode.PRODUCTION

    @property
    def is_local(self) -> bool:
        """True outside production and job containers: tracebacks are shown."""
        return self.mode is Mode.LOCAL

    @property
    def body_memory(self) -> int:
        """The bytes of request bodies one worker may hold at once."""
        return self.max_body_memory or 4 * self.max_body_size

    @property
    def queue_wait_bound(self) -> float | None:
        """``max_queue_wait`` in seconds, or None when it follows the model (``auto``)."""
        value = self.max_queue_wait
        return None if isinstance(value, str) else value

    @property
    def concurrency_pin(self) -> int | None:
        """The pinned predict concurrency, or None when it adapts (``auto``)."""
        value = self.predict_concurrency
        return value if isinstance(value, int) else None

    @property
    def max_calls_per_instance(self) -> int:
        """The most predict calls one instance may ever run at once."""
        return self.concurrency_pin or self.max_predict_concurrency

    @property
    def bind_port(self) -> int:
        """The port to listen on: always set after resolve_settings."""
        assert self.port is not None
        return self.port


def public_fields() -> list[Any]:
    """The user-facing settings, in declaration order."""
    return [f for f in fields(Settings) if not f.metadata.get("internal")]


def flag_name(name: str) -> str:
    """``predict_concurrency`` -> ``--predict-concurrency``."""
    return "--" + name.replace("_", "-")


def env_name(name: str) -> str:
    """``predict_concurrency`` -> ``OPENBAYES_SERVING_PREDICT_CONCURRENCY``."""
    return ENV_PREFIX + name.upper()


def detect_mode(environ: Mapping[str, str]) -> Mode:
    """The reference's rules: a job URL means a job container, then production, else local."""
    if environ.get("OPENBAYES_JOB_URL"):
        return Mode.JOB
    if environ.get("OPENBAYES_SERVING_PRODUCTION"):
        return Mode.PRODUCTION
    return Mode.LOCAL


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """An argparse parser with one flag per setting, defaults left unset."""
    parser = argparse.ArgumentParser(prog=prog, argument_default=argparse.SUPPRESS)
    for f in public_fields():
        parser.add_argument(
            flag_name(f.name), dest=f.name, metavar=f.name.upper(), help=f.metadata["help"]
        )
    return parser


def _parse(name: str, value: object, source: str) -> object:
    parse = Settings.__dataclass_fields__[name].metadata["parse"]
    try:
        return parse(value)
    except (TypeError, ValueError) as exc:
        reason = str(exc) if "must" in str(exc) else "has a bad value"
        raise SettingsError(f"{name} {reason} (got {value!r} from {source})") from None


def resolve_settings(
    kwargs: Mapping[str, object] | None = None,
    argv: Sequence[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Apply the precedence kwargs > flags > environment > defaults, and validate once.

    Raises:
        SettingsError: a value is bad or a keyword is unknown; the message names it in
            the spelling the user wrote.
    """
    environ = os.environ if environ is None else environ
    kwargs = dict(kwargs or {})
    known = {f.name for f in public_fields()}
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise SettingsError(
            f"serv.run() got unknown setting {unknown[0]!r}. Settings: {', '.join(sorted(known))}."
        )
    flags = vars(build_parser().parse_args(list(argv or [])))
    values: dict[str, object] = {}
    for name in known:
        if name in kwargs and kwargs[name] is not None:
            values[name] = _parse(name, kwargs[name], f"serv.run({name}=...)")
        elif name in flags:
            values[name] = _parse(name, flags[name], flag_name(name))
        elif env_name(name) in environ and name != "port":
            values[name] = _parse(name, environ[env_name(name)], env_name(name))
    mode = detect_mode(environ)
    settings = replace(Settings(), **values, mode=mode)  # type: ignore[arg-type]
    if settings.port is None:
        settings = replace(settings, port=_default_port(mode, environ))
    return settings


def _default_port(mode: Mode, environ: Mapping[str, str]) -> int:
    # The reference's order: production and job containers fix the port; the
    # environment variable only moves the local default. --port beats all of them.
    if mode is Mode.PRODUCTION:
        return PRODUCTION_PORT
    if mode is Mode.JOB:
        return JOB_PORT
    if env_name("port") in environ:
        return int(str(_parse("port", environ[env_name("port")], env_name("port"))))
    return DEFAULT_LOCAL_PORT


def environ_snapshot() -> dict[str, str]:
    """A copy of the process environment, for code that must pass it on (launcher)."""
    return dict(os.environ)


def export_environ(name: str, value: str) -> None:
    """Set an environment variable for this process and the ones it forks."""
    os.environ[name] = value
