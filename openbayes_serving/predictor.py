"""Inspect the user's predictor class once, validate it, and build the Pipeline.

No Flask here. Everything the request path needs is resolved at start-up: which
resolver feeds each parameter, whether predict batches or streams, which steps exist.
"""

from __future__ import annotations

import importlib.util
import inspect
import logging
import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

from . import inject
from .errors import PredictorError
from .inject import HttpRequest, InitContext
from .scheduler import BatchSpec, Channel
from .settings import Settings

logger = logging.getLogger(__name__)

STREAMED: Any = object()  # what a runner returns once it has pumped a stream


@dataclass(frozen=True)
class PredictorSpec:
    """What start-up learned from the class, before any instance exists."""

    cls: type
    name: str
    directory: Path
    init_params: tuple[tuple[str, str], ...]  # (parameter, injected name)
    request_params: tuple[tuple[str, str], ...]
    has_preprocess: bool
    has_postprocess: bool
    preprocess_is_async: bool
    postprocess_is_async: bool
    batch: BatchSpec | None
    is_streaming: bool
    has_run: bool
    uses_flask: bool


def _params(func: Callable[..., Any]) -> list[inspect.Parameter]:
    params = list(inspect.signature(func).parameters.values())
    return params[1:] if params and params[0].name == "self" else params


def _match(
    owner: str, method: str, func: Callable[..., Any], allowed: tuple[str, ...]
) -> tuple[tuple[str, str], ...]:
    matched = []
    for param in _params(func):
        name = inject.match_name(param.name, param.annotation, allowed)
        if name is not None:
            matched.append((param.name, name))
            continue
        if param.default is not inspect.Parameter.empty or param.kind in (
            inspect.Parameter.VAR_POSITIONAL,
            inspect.Parameter.VAR_KEYWORD,
        ):
            continue  # optional: left to its default
        raise PredictorError(
            f"{owner}.{method}() asks for {param.name!r}, which cannot be injected. "
            f"Names it can ask for: {', '.join(allowed)}."
        )
    return tuple(matched)


def _one_argument(owner: str, method: str, func: Callable[..., Any], source: str) -> None:
    required = [
        p
        for p in _params(func)
        if p.default is inspect.Parameter.empty
        and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    ]
    if len(required) != 1:
        names = ", ".join(p.name for p in required) or "none"
        raise PredictorError(
            f"{owner}.{method}() must take exactly one argument, the result of {source} "
            f"(it takes: {names})."
        )


def inspect_predictor(cls: type, settings: Settings) -> PredictorSpec:
    """Validate the class against the convention (in the master, before the fork).

    Raises:
        PredictorError: the class breaks the convention; the message names the class,
            the method, the parameter and the allowed names.
    """
    owner = getattr(cls, "__name__", repr(cls))
    if not callable(cls):
        raise PredictorError(f"serv.run() needs a class, got {owner}")
    predict = getattr(cls, "predict", None)
    if not callable(predict):
        raise PredictorError(
            f"{owner} has no predict() method. Define predict(self, json) or ask for "
            f"any of: {', '.join(inject.REQUEST_NAMES)}."
        )
    init_params = _match(owner, "__init__", cls, inject.INIT_NAMES)
    preprocess = getattr(cls, "preprocess", None)
    postprocess = getattr(cls, "postprocess", None)
    batch = getattr(predict, "__openbayes_batch__", None)
    is_streaming = inspect.isgeneratorfunction(predict)
    if callable(preprocess):
        request_params = _match(owner, "preprocess", preprocess, inject.REQUEST_NAMES)
        _one_argument(owner, "predict", predict, "preprocess()")
    else:
        request_params = _match(owner, "predict", predict, inject.REQUEST_NAMES)
    if callable(postprocess):
        _one_argument(owner, "postprocess", postprocess, "predict()")
        if is_streaming:
            raise PredictorError(
                f"{owner}.predict() is a generator (it streams), so {owner}.postprocess() "
                "cannot run: remove postprocess() or return a value from predict()."
            )
    if batch is not None and is_streaming:
        raise PredictorError(f"{owner}.predict() cannot both stream and use @serv.batch.")
    run = getattr(cls, "run", None)
    has_run = callable(run) and not _params(run)
    module = sys.modules.get(cls.__module__)
    file = getattr(module, "__file__", None)
    directory = Path(file).resolve().parent if file else Path.cwd()
    spec = PredictorSpec(
        cls=cls,
        name=owner,
        directory=directory,
        init_params=init_params,
        request_params=request_params,
        has_preprocess=callable(preprocess),
        has_postprocess=callable(postprocess),
        preprocess_is_async=inspect.iscoroutinefunction(preprocess),
        postprocess_is_async=inspect.iscoroutinefunction(postprocess),
        batch=batch,
        is_streaming=is_streaming,
        has_run=has_run,
        uses_flask=uses_flask_globals(module),
    )
    if any(name == "onnx" for _, name in init_params):
        if importlib.util.find_spec("onnxruntime") is None:
            raise PredictorError(
                f"{owner}.__init__() asks for 'onnx' but onnxruntime is not installed: "
                f"{inject.ONNX_INSTALL}"
            )
        inject.find_onnx_model(settings, directory)
    return spec


def uses_flask_globals(module: ModuleType | None) -> bool:
    """True when a predictor's module imported Flask or its globals (request, jsonify).

    Looks at the types of the module's globals only: a werkzeug LocalProxy must not be
    touched outside a request context.
    """
    if module is None:
        return False
    for value in vars(module).values():
        if isinstance(value, ModuleType):
            name = value.__name__
        elif isinstance(value, type):
            name = value.__module__
        else:
            name = type(value).__module__
            if name == "builtins" or name == "function":
                name = getattr(value, "__module__", None) or ""
        if name.split(".", 1)[0] in ("flask", "werkzeug"):
            return True
    return False


def describe_exception(exc: BaseException) -> str:
    """``ValueError: message (predictor.py:12)``: where user code raised, in one line."""
    where = ""
    frames = inspect.getinnerframes(exc.__traceback__) if exc.__traceback__ else []
    if frames:
        last = frames[-1]
        where = f" ({Path(last.filename).name}:{last.lineno})"
    return f"{type(exc).__name__}: {exc}{where}"


def build_instance(spec: PredictorSpec, settings: Settings, device: str) -> Any:
    """Call the user's ``__init__`` with injected values (in the worker, after the fork).

    Raises:
        PredictorError: injection failed or ``__init__`` raised; one line says why.
    """
    ctx = InitContext(settings=settings, predictor_dir=spec.directory, device=device)
    kwargs = {}
    for param, name in spec.init_params:
        try:
            kwargs[param] = inject.INIT_RESOLVERS[name](ctx)
        except PredictorError as exc:
            raise PredictorError(f"{spec.name}.__init__(): {exc}") from exc
        except Exception as exc:  # onnxruntime refusing a file, a broken config, ...
            raise PredictorError(
                f"{spec.name}.__init__() asks for {param!r}, which could not be made: "
                f"{describe_exception(exc)}"
            ) from exc
    try:
        return spec.cls(**kwargs)
    except Exception as exc:
        raise PredictorError(f"{spec.name}.__init__() raised {describe_exception(exc)}") from exc


@dataclass(eq=False)
class PredictCall:
    """What a model thread gets for one request."""

    value: Any  # the kwargs of predict, or the result of preprocess
    request: HttpRequest
    open_stream: Callable[[], Channel] | None  # set by the dispatcher


def _is_stream(value: Any) -> bool:
    return isinstance(value, (types.GeneratorType, Iterator)) and not isinstance(
        value, (str, bytes, dict, list, tuple)
    )


def pump(generator: Iterator[Any], channel: Channel) -> None:
    """Drive a streaming predict on its model thread until it ends or the client leaves."""
    try:
        for chunk in generator:
            if not channel.put(chunk):
                break
    except BaseException as exc:  # reported on the stream; the slot is freed below
        channel.finish(exc)
    else:
        channel.finish()
    finally:
        close = getattr(generator, "close", None)
        if close is not None:
            close()


class Pipeline:
    """The request path's view of the predictor: resolve, preprocess, predict, postprocess."""

    def __init__(self, spec: PredictorSpec, instances: list[Any]) -> None:
        self.spec = spec
        self.instances = instances
        self._resolvers = tuple(
            (param, inject.REQUEST_RESOLVERS[name]) for param, name in spec.request_params
        )
        first = instances[0]
        self.preprocess: Callable[..., Any] | None = (
            first.preprocess if spec.has_preprocess else None
        )
        self.postprocess: Callable[[Any], Any] | None = (
            first.postprocess if spec.has_postprocess else None
        )

    def resolve_args(self, request: HttpRequest) -> dict[str, Any]:
        """The injected arguments for predict (or preprocess). BadRequestError -> 400."""
        return {param: resolve(request) for param, resolve in self._resolvers}

    def run_preprocess(self, args: dict[str, Any], request: HttpRequest) -> Any:
        """Call a synchronous preprocess (on the pool)."""
        assert self.preprocess is not None
        if self.spec.uses_flask:
            from . import flask_compat  # Flask loads only for predictors that use it

            with flask_compat.request_context(request.environ()):
                return self.preprocess(**args)
        return self.preprocess(**args)

    def runner(self, instance: Any) -> Callable[[Any], Any]:
        """The callable a model thread bound to ``instance`` runs for each job (or batch)."""
        predict = instance.predict
        spec = self.spec
        names = [param for param, _ in spec.request_params]

        def invoke(call: PredictCall) -> Any:
            result = predict(call.value) if spec.has_preprocess else predict(**call.value)
            if _is_stream(result):
                assert call.open_stream is not None
                pump(result, call.open_stream())
                return STREAMED
            return result

        def in_flask_context(call: PredictCall) -> Any:
            with flask_compat.request_context(call.request.environ()):
                return invoke(call)

        def run_batch(calls: list[PredictCall]) -> Any:
            if spec.has_preprocess:
                return predict([call.value for call in calls])
            return predict(**{name: [call.value[name] for call in calls] for name in names})

        if spec.batch is not None:
            return run_batch
        if spec.uses_flask:
            from . import flask_compat  # Flask loads only for predictors that use it

            return in_flask_context
        return invoke
