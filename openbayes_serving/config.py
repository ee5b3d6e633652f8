"""The ``config`` that ``__init__`` may ask for: a mapping read from JSON or YAML.

``config`` is a ``Config``, a dict subclass: its items are the file's, unchanged. It also
keeps the one method of openbayes-serving 0.1.x's ``config`` object,
``config.limit_concurrency(n)`` (0.1.13 to 0.1.16; 0.1.17 removed it), so that predictors
written for 0.1.x start unchanged:

- 0.1.x passed ``n`` to uvicorn's ``limit_concurrency``: at most ``n`` connections and
  requests at once, and a 503 at once for any beyond them. Here it pins the instance's
  predict concurrency to ``n`` (no ``auto`` adaptation); requests beyond wait in the
  queue like any others, and get 503 only when ``max_queue`` is full (``max_queue=0``
  gives 0.1.x's immediate 503).
- Precedence: an explicit ``predict_concurrency`` setting (keyword, flag or environment)
  beats ``config.limit_concurrency(n)``, which beats the default ``auto``. The setting is
  the deployment's choice, made without editing the code; the log says when it overrides.
- Any other attribute (0.1.x had none) raises an ``AttributeError`` that says what
  ``config`` is.
"""

from __future__ import annotations

import json
import logging
import weakref
from pathlib import Path
from typing import Any

from .errors import PredictorError
from .settings import Settings

logger = logging.getLogger(__name__)


class Config(dict[str, Any]):
    """The ``config`` dict, with 0.1.x's ``limit_concurrency(n)``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._concurrency: int | None = None

    def limit_concurrency(self, n: int) -> None:
        """Pin this instance's predict concurrency to ``n`` (openbayes-serving 0.1.x's API).

        Raises:
            ValueError: ``n`` is not a positive integer.
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"config.limit_concurrency(n) needs a positive integer, got {n!r}")
        self._concurrency = n
        logger.info(
            "config.limit_concurrency(%d): at most %d predicts at once on this instance; "
            "requests beyond wait in the queue (503 once max_queue is full)",
            n,
            n,
        )

    def requested_concurrency(self) -> int | None:
        """The ``n`` of the last ``limit_concurrency(n)`` call, None when never called."""
        return self._concurrency

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        raise AttributeError(
            f"config has no attribute {name!r}: config is the dict read from config.json or "
            f"config.yaml (read a key with config[{name!r}] or config.get({name!r})); of "
            "openbayes-serving 0.1.x's config, limit_concurrency(n) is kept"
        )


# The Config objects each built instance was given, for requested_concurrency().
_given: dict[int, list[Config]] = {}


def remember_configs(instance: Any, configs: list[Config]) -> None:
    """Record the configs injected into ``instance`` (for ``concurrency_pin``)."""
    if not configs:
        return
    key = id(instance)
    _given[key] = configs
    try:
        weakref.finalize(instance, _given.pop, key, None)
    except TypeError:  # not weak-referenceable (__slots__): kept for the process's life
        pass


def requested_concurrency(instance: Any) -> int | None:
    """The ``n`` of ``config.limit_concurrency(n)`` called on the config ``instance`` got.

    None when its ``__init__`` did not ask for ``config`` or never called it.
    """
    asked = [c.requested_concurrency() for c in _given.get(id(instance), [])]
    return next((n for n in reversed(asked) if n is not None), None)


def concurrency_pin(settings: Settings, instance: Any) -> int | None:
    """The predict concurrency pinned for ``instance``; None means it adapts (``auto``).

    An explicit ``predict_concurrency`` setting, else ``config.limit_concurrency(n)``
    from ``__init__``, else None.
    """
    value = settings.predict_concurrency
    pin = value if isinstance(value, int) else None  # "auto" is no number
    asked = requested_concurrency(instance)
    if pin is not None and asked is not None and asked != pin:
        logger.info(
            "predict_concurrency=%d (the setting) overrides config.limit_concurrency(%d)",
            pin,
            asked,
        )
    return pin if pin is not None else asked


def load_config(settings: Settings, predictor_dir: Path) -> Config:
    """The ``config`` dict: --config FILE, else config.json / .yaml / .yml beside predictor.py."""
    if settings.config:
        path = Path(settings.config)
        if not path.is_file():
            raise PredictorError(f"config file {path} does not exist")
    else:
        candidates = [predictor_dir / n for n in ("config.json", "config.yaml", "config.yml")]
        existing = [p for p in candidates if p.is_file()]
        if not existing:
            return Config()
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
        return Config()
    if not isinstance(value, dict):
        raise PredictorError(f"config file {path} must hold a mapping, not {type(value).__name__}")
    return Config(value)
