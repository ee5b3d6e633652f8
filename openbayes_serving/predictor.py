"""Find the user's predictor class, inspect it once and validate it.

No Flask here. Everything the request path needs is learned at start-up: which
resolver feeds each parameter, whether predict batches or streams, which stages exist,
which of them ask for ``cancelled``, whether there is a ``warmup``, ``health`` or ``run``
to call. Building instances is ``instances``.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import logging
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

from . import inject, sessions
from .batching import BatchSpec
from .errors import PredictorError, StartupError
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
    has_warmup: bool = False  # warmup(self): called on each instance before ready
    has_health: bool = False  # health(self): asked by /readyz
    # The parameter that asks for ``cancelled`` in predict when it takes preprocess's
    # result, and in postprocess (preprocess and predict otherwise: ``request_params``).
    predict_cancelled: str | None = None
    postprocess_cancelled: str | None = None
    example: Any = None  # the class's ``example``: a file name or a JSON value
    file: Path | None = None  # the file that defines the class (predictor.py)

    @property
    def asks_cancelled(self) -> bool:
        """True when a stage asks for ``cancelled``: only then is one made per request."""
        asked = any(name == inject.CANCELLED for _, name in self.request_params)
        return asked or bool(self.predict_cancelled or self.postprocess_cancelled)


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
    required = _results(func)
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
        has_run=_takes_nothing(cls, "run"),
        uses_flask=uses_flask_globals(module),
        example=getattr(cls, "example", None),
        file=path,
        has_warmup=_takes_nothing(cls, "warmup"),
        has_health=_takes_nothing(cls, "health"),
        predict_cancelled=_cancelled_param(predict) if preprocess is not None else None,
        postprocess_cancelled=_cancelled_param(postprocess) if postprocess else None,
    )


def _takes_nothing(cls: type, name: str) -> bool:
    """True when the class has a method ``name(self)`` taking no other argument."""
    method = getattr(cls, name, None)
    return callable(method) and not _params(method)


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


def _asks_cancelled(param: inspect.Parameter) -> bool:
    return inject.match_name(param.name, param.annotation, (inject.CANCELLED,)) is not None


def _cancelled_param(func: Stage) -> str | None:
    """The parameter of ``func`` that asks for ``cancelled``, if one does."""
    return next((p.name for p in _params(func) if _asks_cancelled(p)), None)


def _results(func: Stage) -> list[inspect.Parameter]:
    """The required parameters of a stage, ``cancelled`` aside: what it takes as input."""
    return [
        p
        for p in _params(func)
        if p.default is inspect.Parameter.empty
        and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
        and not _asks_cancelled(p)
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
    method, which the server never inspects or calls. A ``cancelled`` parameter is not
    counted: ``predict(self, x, cancelled)`` takes one argument.
    """
    found = {n: getattr(cls, n) for n in _STAGES if callable(getattr(cls, n, None))}
    if not found:
        return None, None, _match(owner, "predict", predict, inject.REQUEST_NAMES)
    called = _called_by(predict, _STAGES)
    required = _results(predict)
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
        or (preprocess is None and len(_results(postprocess)) != 1)
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
