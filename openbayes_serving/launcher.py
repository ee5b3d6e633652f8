"""Start serving: ``serv.run(Cls)`` in predictor.py, or a deployment directory.

``run`` resolves the settings, validates the class before any fork and hands it to the
gunicorn server. A directory is served by its start.sh when present (bypassing the
runtime: bash runs it in the directory, with PORT and OPENBAYES_SERVING_PORT set to the
port it must listen on, 80 in production), else by its predictor.py. A ``.env`` file
beside start.sh or predictor.py fills in environment variables that are not already set.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import StartupError
from .lifecycle import EXIT_USAGE
from .logs import configure_logging
from .predictor import inspect_predictor
from .settings import environ_snapshot, export_environ, public_fields, resolve_settings

logger = logging.getLogger(__name__)


def run(predictor_cls: type, **settings: Any) -> None:
    """Serve ``predictor_cls`` over HTTP; blocks until the server stops.

    Keyword arguments are settings (see the README's table) and beat flags and the
    environment. Exits the process with the codes of ``lifecycle``.
    """
    module = sys.modules.get(getattr(predictor_cls, "__module__", ""))
    file = getattr(module, "__file__", None)
    env_file = Path(file).resolve().parent / ".env" if file else None
    loaded = load_dotenv(env_file) if env_file else []
    try:
        resolved = resolve_settings(settings, sys.argv[1:])
        configure_logging(resolved.log_level, resolved.log_format)
        if loaded:
            logger.info("set from %s: %s", env_file, ", ".join(loaded))
        spec = inspect_predictor(predictor_cls, resolved)
    except StartupError as exc:
        sys.stderr.write(f"openbayes-serving: error: {exc}\n")
        sys.exit(EXIT_USAGE)
    logger.info(
        "starting %s (%s mode) on http://%s:%d; %s",
        spec.name,
        resolved.mode.value,
        resolved.host,
        resolved.bind_port,
        ", ".join(
            f"{f.name}={getattr(resolved, f.name)!r}"
            for f in public_fields()
            if f.name != "api_key"
        ),
    )
    from .server import serve  # gunicorn loads only to serve

    serve(spec, resolved)


def command_for(directory: Path, argv: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """The command line and environment that serve ``directory``.

    Raises:
        StartupError: the directory has neither start.sh nor predictor.py.
    """
    environ = environ_snapshot()
    for name, value in read_dotenv(directory / ".env").items():
        environ.setdefault(name, value)
    start = directory / "start.sh"
    if start.is_file():
        port = resolve_settings(argv=_port_flags(argv), environ=environ).bind_port
        environ["PORT"] = environ["OPENBAYES_SERVING_PORT"] = str(port)
        return ["bash", str(start.resolve())], environ
    predictor = directory / "predictor.py"
    if predictor.is_file():
        return [sys.executable, str(predictor.resolve()), *argv], environ
    raise StartupError(f"{directory} has neither start.sh nor predictor.py to run")


def _port_flags(argv: Sequence[str]) -> list[str]:
    # start.sh takes only the port (and host) from the flags: the rest is its own business.
    kept: list[str] = []
    args = list(argv)
    for index, arg in enumerate(args):
        for flag in ("--port", "--host"):
            if arg == flag and index + 1 < len(args):
                kept += [flag, args[index + 1]]
            elif arg.startswith(flag + "="):
                kept.append(arg)
    return kept


def launch(directory: Path, argv: Sequence[str]) -> None:
    """Replace this process with the server of ``directory`` (signals reach it directly)."""
    command, environ = command_for(directory, argv)
    os.chdir(directory)
    os.execvpe(command[0], command, environ)


_DOTENV_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\"}


def _dotenv_value(raw: str) -> str | None:
    """The value of ``KEY=raw``: quoted ('...' literal, "..." with escapes) or bare."""
    if raw[:1] in ("'", '"'):
        quote = raw[0]
        end = raw.find(quote, 1)
        while quote == '"' and end > 0 and raw[end - 1] == "\\":
            end = raw.find(quote, end + 1)
        if end < 0 or raw[end + 1 :].strip()[:1] not in ("", "#"):
            return None
        value = raw[1:end]
        if quote == '"':
            value = re.sub(r"\\(.)", lambda m: _ESCAPES.get(m[1], m[0]), value)
        return value
    return re.split(r"\s+#", raw, maxsplit=1)[0].strip()


def read_dotenv(path: Path) -> dict[str, str]:
    """The variables of a ``.env`` file ({} when there is none).

    One ``KEY=VALUE`` per line, optionally after ``export``; blank lines and ``#``
    comments are skipped; values may be single-quoted (taken as written) or double-quoted
    (backslash escapes for newline, tab, quote and backslash); nothing is expanded. A line
    that does not parse is skipped with a warning naming it.
    """
    if not path.is_file():
        return {}
    values: dict[str, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _DOTENV_LINE.match(line)
        value = _dotenv_value(match[2]) if match else None
        if match is None or value is None:
            logger.warning("%s:%d is not NAME=VALUE; skipped", path, number)
            continue
        values[match[1]] = value
    return values


def load_dotenv(path: Path) -> list[str]:
    """Set the variables of ``path`` that the environment lacks; returns their names.

    Variables already set (by the platform, the shell or ``openbayes-serving run``) win.
    """
    present = environ_snapshot()
    loaded = []
    for name, value in read_dotenv(path).items():
        if name not in present:
            export_environ(name, value)
            loaded.append(name)
    return loaded
