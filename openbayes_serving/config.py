"""The ``config`` that ``__init__`` may ask for: a mapping read from JSON or YAML."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import PredictorError
from .settings import Settings


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
