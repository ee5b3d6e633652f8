"""The command line: ``openbayes-serving`` (alias ``serving``) init / run / predict.

The only module that prints.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from . import __version__, launcher
from .errors import StartupError

TEMPLATES = ("basic", "onnx", "pytorch", "batch", "stream")


def _templates_root() -> Path:
    # Installed: the templates/ folder ships inside the package as templates/. In a
    # source checkout (editable install) it stays at the top of the repository.
    package = Path(__file__).resolve().parent
    installed = package / "templates"
    return installed if installed.is_dir() else package.parent / "templates"


def cmd_init(args: argparse.Namespace) -> int:
    """Copy a template into a directory."""
    source = _templates_root() / args.template
    if not source.is_dir():
        raise StartupError(f"no template {args.template!r}; choose one of {', '.join(TEMPLATES)}")
    target = Path(args.dir)
    target.mkdir(parents=True, exist_ok=True)
    files = [p for p in sorted(source.iterdir()) if p.is_file() and p.suffix != ".pyc"]
    clashes = [p.name for p in files if (target / p.name).exists()]
    if clashes and not args.force:
        raise StartupError(f"{target} already has {', '.join(clashes)}; pass --force to overwrite")
    for path in files:
        shutil.copyfile(path, target / path.name)
    print(f"wrote {', '.join(p.name for p in files)} to {target}")
    readme = target / "README.md"
    if readme.is_file():
        print(f"next: see {readme}")
    else:
        print(f"next: openbayes-serving run {target}")
    return 0


def cmd_run(args: argparse.Namespace, rest: Sequence[str]) -> int:
    """Serve a directory: start.sh if present, else predictor.py (on Ray with --ray-replicas)."""
    if args.ray_replicas is not None:
        from .ray import serve_directory

        launcher.load_dotenv(Path(args.dir) / ".env")  # as for start.sh and predictor.py
        return serve_directory(Path(args.dir), args.ray_replicas, rest)
    launcher.launch(Path(args.dir), rest)
    return 0  # not reached: launch replaces the process


def cmd_predict(args: argparse.Namespace) -> int:
    """Call the predictor of a directory in-process, with no server."""
    import os

    from .predictor import find_predictor_class
    from .testing import LocalClient

    directory = Path(args.dir).resolve()
    os.chdir(directory)
    cls = find_predictor_class(directory / "predictor.py")
    params = dict(p.split("=", 1) for p in args.param)
    with LocalClient(cls) as client:
        if args.file:
            data = Path(args.file).read_bytes()
            response = client.post(data=data, content_type=args.content_type, params=params)
        else:
            import orjson

            response = client.post(json=orjson.loads(args.json or "{}"), params=params)
    out = response.body
    if response.content_type.startswith(("application/json", "text/")):
        sys.stdout.write(out.decode("utf-8", "replace").rstrip("\n") + "\n")
    else:
        sys.stdout.buffer.write(out)
    return 0 if response.status_code < 400 else 1


def build_parser() -> argparse.ArgumentParser:
    """The parser with its three subcommands."""
    parser = argparse.ArgumentParser(
        prog="openbayes-serving", description="Serve a predictor.py over HTTP."
    )
    parser.add_argument("--version", action="version", version=f"openbayes-serving {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    init = sub.add_parser("init", help="write a runnable predictor.py from a template")
    init.add_argument("dir", nargs="?", default=".", help="where to write (default: here)")
    init.add_argument("--template", choices=TEMPLATES, default="basic")
    init.add_argument("--force", action="store_true", help="overwrite existing files")
    run = sub.add_parser(
        "run",
        help="serve DIR: its start.sh if present, else its predictor.py",
        description="Serve DIR. Other flags (--port, --host, any setting) go to the server.",
    )
    run.add_argument("dir", nargs="?", default=".", help="the deployment directory")
    run.add_argument(
        "--ray-replicas",
        type=int,
        metavar="N",
        help="serve predictor.py on Ray Serve with N replicas (needs openbayes-serving[ray])",
    )
    predict = sub.add_parser("predict", help="call DIR's predictor in-process, without a server")
    predict.add_argument("dir", help="directory with predictor.py")
    source = predict.add_mutually_exclusive_group()
    source.add_argument("--json", help="a JSON body, e.g. '{\"x\": 1}'")
    source.add_argument("--file", help="a file sent as the raw body")
    predict.add_argument("--content-type", default="application/octet-stream", help="for --file")
    predict.add_argument("--param", action="append", default=[], help="query arg k=v (repeatable)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``openbayes-serving`` and ``serving``."""
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    try:
        if args.command == "run":
            return cmd_run(args, rest)
        if rest:
            parser.error(f"unrecognized arguments: {' '.join(rest)}")
        if args.command == "init":
            return cmd_init(args)
        return cmd_predict(args)
    except StartupError as exc:
        print(f"openbayes-serving: error: {exc}", file=sys.stderr)
        return 2
