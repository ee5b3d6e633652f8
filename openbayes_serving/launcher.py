"""Start a deployment directory: its start.sh when present, else its predictor.py.

start.sh bypasses the runtime: it runs with bash in the directory, with PORT and
OPENBAYES_SERVING_PORT set to the port it must listen on (80 in production).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

from .errors import StartupError
from .settings import environ_snapshot, resolve_settings


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
