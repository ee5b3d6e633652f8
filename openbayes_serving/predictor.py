"""Find the user's predictor class, inspect it once, validate it, and build instances.

No Flask here. Everything the request path needs is learned at start-up: which
resolver feeds each parameter, whether predict batches or streams, which stages exist.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import logging
import re
import sys
import textwrap
import traceback
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

from . import inject, sessions
from .batching import BatchSpec
from .config import Config, remember_configs
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
    file: Path | None = None  # the file that defines the class (predictor.py)


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
    path = Path(file).resolve() if file else None
    directory = path.parent if path else Path.cwd()
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
        file=path,
    )


Stage = Callable[..., Any]
_STAGES = ("preprocess", "postprocess")


def _called_by(func: Stage, names: tuple[str, ...]) -> set[str]:
    """Which of ``names`` ``func`` calls on its own instance (``self.preprocess(...)``)."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(inspect.unwrap(func))))
    except (OSError, TypeError, SyntaxError):
        return set()  # no source (built at run time): judged by the signatures alone
    params = list(inspect.signature(func).parameters)
    own = params[0] if params else "self"
    return {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == own
        and node.attr in names
    }


def _required(func: Stage) -> list[inspect.Parameter]:
    return [
        p
        for p in _params(func)
        if p.default is inspect.Parameter.empty
        and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    ]


def _stages(
    owner: str, cls: type, predict: Stage
) -> tuple[Stage | None, Stage | None, tuple[tuple[str, str], ...]]:
    """preprocess, postprocess (None when absent or the predictor's own) and request params.

    The rule (README, "The pipeline"): ``preprocess`` is a stage when ``predict`` takes
    exactly one argument, named nothing that can be injected (it gets preprocess's
    result); ``postprocess`` is a stage when it takes exactly one argument and
    ``preprocess`` is absent or a stage. A method that ``predict`` calls itself
    (``self.postprocess(y)``) is never a stage. Anything else is the predictor's own
    method, which the server never inspects or calls.
    """
    found = {n: getattr(cls, n) for n in _STAGES if callable(getattr(cls, n, None))}
    if not found:
        return None, None, _match(owner, "predict", predict, inject.REQUEST_NAMES)
    called = _called_by(predict, _STAGES)
    required = _required(predict)
    takes_result = len(required) == 1 and (
        inject.match_name(required[0].name, required[0].annotation, inject.REQUEST_NAMES) is None
    )
    preprocess = found.get("preprocess")
    if preprocess is not None and (not takes_result or "preprocess" in called):
        preprocess = None
    postprocess = found.get("postprocess")
    if postprocess is not None and (
        "postprocess" in called
        or ("preprocess" in found and preprocess is None)
        or (preprocess is None and len(_required(postprocess)) != 1)
    ):
        postprocess = None
    _log_reading(owner, found, preprocess, postprocess, called)
    if preprocess is not None:
        request_params = _match(owner, "preprocess", preprocess, inject.REQUEST_NAMES)
        _one_argument(owner, "predict", predict, "preprocess()")
    else:
        request_params = _match(owner, "predict", predict, inject.REQUEST_NAMES)
    if postprocess is not None:
        _one_argument(owner, "postprocess", postprocess, "predict()")
        if inspect.isgeneratorfunction(predict):
            raise PredictorError(
                f"{owner}.predict() is a generator (it streams), so {owner}.postprocess() "
                "cannot run: remove postprocess() or return a value from predict()."
            )
    return preprocess, postprocess, request_params


def _log_reading(
    owner: str,
    found: dict[str, Stage],
    preprocess: Stage | None,
    postprocess: Stage | None,
    called: set[str],
) -> None:
    """One start-up line: which of preprocess/postprocess are stages, which are helpers."""
    stages = [n for n, f in (("preprocess", preprocess), ("postprocess", postprocess)) if f]
    own = [n for n in found if n not in stages]
    if stages:
        logger.info("%s: %s() run as pipeline stages around predict()", owner, "(), ".join(stages))
    if own:
        why = (
            "predict() calls them itself"
            if called & set(own)
            else "predict() does not take a single preprocess result"
            if "preprocess" in found and preprocess is None
            else "postprocess() does not take a single predict result"
        )
        logger.info(
            "%s: %s() are the predictor's own methods, never called by the server (%s)",
            owner,
            "(), ".join(own),
            why,
        )


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


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
WEIGHTS_ONLY_HINT = (
    "torch.load refused a pickled checkpoint (torch >= 2.6 loads weights only by default). "
    "If you trust the file, set TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 (in the environment or a "
    ".env beside predictor.py) to load it unchanged, or call torch.load(..., weights_only=False)."
)


def _where(filename: str, base: Path | None) -> str:
    """A frame's file, as short as stays clear: under the predictor's folder, else its package."""
    path = Path(filename)
    roots = [base] if base else []
    roots += sorted((Path(p) for p in sys.path if p), key=lambda r: len(str(r)), reverse=True)
    for root in roots:
        try:
            return path.relative_to(root).as_posix()
        except ValueError:
            continue
    return path.name


def describe_exception(exc: BaseException, user_file: Path | None = None) -> str:
    """``ValueError: message (predictor.py:12)``: where user code raised, in one line.

    When the exception came from deeper (a library), the innermost frame follows:
    ``(predictor.py:12, raised in torch/serialization.py:1529)``. ``user_file`` is the
    predictor's file; without it, only the innermost frame is named.
    """
    message = " ".join(_ANSI.sub("", str(exc)).split())
    frames = traceback.extract_tb(exc.__traceback__) if exc.__traceback__ else []
    places = []
    if frames:
        base = user_file.parent if user_file else None
        mine = [f for f in frames if base and Path(f.filename).resolve() == user_file]
        if mine and user_file:
            places.append(f"{user_file.name}:{mine[-1].lineno}")
        if not mine or mine[-1] is not frames[-1]:
            inner = frames[-1]
            where = f"{_where(inner.filename, base)}:{inner.lineno}"
            places.append(f"raised in {where}" if mine else where)
    where = f" ({', '.join(places)})" if places else ""
    return f"{type(exc).__name__}: {message}{where}"


def _is_weights_only_refusal(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if type(seen).__name__ == "UnpicklingError" and "weights_only" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _startup_failure(
    spec: PredictorSpec, settings: Settings, headline: str, exc: Exception
) -> PredictorError:
    """The error a failed ``__init__`` exits with: one line, a hint, the traceback locally."""
    lines = [f"{headline} {describe_exception(exc, spec.file)}"]
    if _is_weights_only_refusal(exc):
        lines.append(WEIGHTS_ONLY_HINT)
    if settings.is_local:
        tb = exc.__traceback__
        if tb is not None and tb.tb_frame.f_code.co_filename == __file__:
            tb = tb.tb_next  # start at the user's code, not at this module's call
        lines.append("".join(traceback.format_exception(type(exc), exc, tb)))
    return PredictorError("\n".join(lines).rstrip())


def build_instance(spec: PredictorSpec, settings: Settings, device: str) -> Any:
    """Call the user's ``__init__`` with injected values (in the worker, after the fork).

    Raises:
        PredictorError: injection failed or ``__init__`` raised. The first line says why
            and where (the predictor's line and the library's); a torch ``weights_only``
            refusal adds a line saying how to load a trusted checkpoint; in local mode the
            traceback follows.
    """
    ctx = InitContext(settings=settings, predictor_dir=spec.directory, device=device)
    kwargs = {}
    for param, name in spec.init_params:
        try:
            kwargs[param] = inject.INIT_RESOLVERS[name](ctx)
        except PredictorError as exc:
            raise PredictorError(f"{spec.name}.__init__(): {exc}") from exc
        except Exception as exc:  # onnxruntime refusing a file, a broken config, ...
            headline = f"{spec.name}.__init__() asks for {param!r}, which could not be made:"
            raise _startup_failure(spec, settings, headline, exc) from exc
    try:
        instance = spec.cls(**kwargs)
    except Exception as exc:
        raise _startup_failure(spec, settings, f"{spec.name}.__init__() raised", exc) from exc
    remember_configs(instance, [v for v in kwargs.values() if isinstance(v, Config)])
    return instance


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
