"""Find the user's predictor class, inspect it once, validate it, and build instances.

No Flask here. Everything the request path needs is learned at start-up: which
resolver feeds each parameter, whether predict batches or streams, which stages exist.
"""

from __future__ import annotations

import importlib.util
import inspect
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

from . import inject, sessions
from .batching import BatchSpec
from .errors import PredictorError, StartupError
from .inject import InitContext
from .settings import Settings

logger = logging.getLogger(__name__)


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
    example: Any = None  # the class's ``example``: a file name or a JSON value


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
    preprocess, postprocess, request_params = _stages(owner, cls, predict)
    batch = getattr(predict, "__openbayes_batch__", None)
    if batch is not None and inspect.isgeneratorfunction(predict):
        raise PredictorError(f"{owner}.predict() cannot both stream and use @serv.batch.")
    run = getattr(cls, "run", None)
    module = sys.modules.get(cls.__module__)
    file = getattr(module, "__file__", None)
    directory = Path(file).resolve().parent if file else Path.cwd()
    if any(name == "onnx" for _, name in init_params):
        _check_onnx(owner, settings, directory)
    return PredictorSpec(
        cls=cls,
        name=owner,
        directory=directory,
        init_params=init_params,
        request_params=request_params,
        has_preprocess=preprocess is not None,
        has_postprocess=postprocess is not None,
        preprocess_is_async=inspect.iscoroutinefunction(preprocess),
        postprocess_is_async=inspect.iscoroutinefunction(postprocess),
        batch=batch,
        is_streaming=inspect.isgeneratorfunction(predict),
        has_run=callable(run) and not _params(run),
        uses_flask=uses_flask_globals(module),
        example=getattr(cls, "example", None),
    )


Stage = Callable[..., Any]


def _stages(
    owner: str, cls: type, predict: Stage
) -> tuple[Stage | None, Stage | None, tuple[tuple[str, str], ...]]:
    """preprocess, postprocess (None when absent) and the request parameters they take."""
    preprocess = getattr(cls, "preprocess", None)
    postprocess = getattr(cls, "postprocess", None)
    if callable(preprocess):
        request_params = _match(owner, "preprocess", preprocess, inject.REQUEST_NAMES)
        _one_argument(owner, "predict", predict, "preprocess()")
    else:
        preprocess = None
        request_params = _match(owner, "predict", predict, inject.REQUEST_NAMES)
    if callable(postprocess):
        _one_argument(owner, "postprocess", postprocess, "predict()")
        if inspect.isgeneratorfunction(predict):
            raise PredictorError(
                f"{owner}.predict() is a generator (it streams), so {owner}.postprocess() "
                "cannot run: remove postprocess() or return a value from predict()."
            )
    else:
        postprocess = None
    return preprocess, postprocess, request_params


def _check_onnx(owner: str, settings: Settings, directory: Path) -> None:
    """``onnx`` can be injected: onnxruntime is installed and a model file is found."""
    if importlib.util.find_spec("onnxruntime") is None:
        raise PredictorError(
            f"{owner}.__init__() asks for 'onnx' but onnxruntime is not installed: "
            f"{sessions.ONNX_INSTALL}"
        )
    sessions.find_onnx_model(settings, directory)


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


def find_predictor_class(path: Path) -> type:
    """Import predictor.py as a module and find the class serv.run() would be given.

    Raises:
        StartupError: the file cannot be imported or defines no single predictor class.
    """
    spec = importlib.util.spec_from_file_location("predictor", path)
    if spec is None or spec.loader is None:
        raise StartupError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["predictor"] = module
    sys.path.insert(0, str(path.parent))
    spec.loader.exec_module(module)
    classes = [
        value
        for value in vars(module).values()
        if isinstance(value, type)
        and value.__module__ == module.__name__
        and hasattr(value, "predict")
    ]
    for name in ("Predictor", "PythonPredictor"):
        for cls in classes:
            if cls.__name__ == name:
                return cls
    if len(classes) == 1:
        return classes[0]
    raise StartupError(f"{path} defines no single class with a predict() method")
