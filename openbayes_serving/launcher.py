"""Start serving: ``serv.run(Cls)`` in predictor.py, or a deployment directory.

``run`` resolves the settings, validates the class before any fork and hands it to the
gunicorn server. A directory is served by its start.sh when present (bypassing the
runtime: bash runs it in the directory, with PORT and OPENBAYES_SERVING_PORT set to the
port it must listen on, 80 in production), else by its predictor.py.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import StartupError
from .lifecycle import EXIT_USAGE
from .logs import configure_logging
from .predictor import inspect_predictor
from .settings import environ_snapshot, public_fields, resolve_settings

logger = logging.getLogger(__name__)


def run(predictor_cls: type, **settings: Any) -> None:
    """Serve ``predictor_cls`` over HTTP; blocks until the server stops.

    Keyword arguments are settings (see the README's table) and beat flags and the
    environment. Exits the process with the codes of ``lifecycle``.
    """
    try:
        resolved = resolve_settings(settings, sys.argv[1:])
        configure_logging(resolved.log_level, resolved.log_format)
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
