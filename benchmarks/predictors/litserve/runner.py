"""How the driver runs a LitAPI: its flags, the model and work it names, the server.

The driver passes ``--host``, ``--port`` and ``--model-path``; the server is LitServe's
with its defaults. LitServe reads two annotations to build its endpoint: the ``request``
parameter of ``decode_request`` (none: the body parsed as JSON) and the return of
``encode_response`` (none: a plain JSON answer, no response model). The predictors leave
both unannotated, as LitServe's own examples do.
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path
from types import ModuleType

import litserve as ls

S3_WORK = Path(__file__).resolve().parent.parent / "s3_io" / "work.py"


def flags() -> argparse.Namespace:
    """The flags the benchmark driver gives every server."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--model-path", default=".")
    return parser.parse_args()


def first_onnx(folder: str) -> str:
    """The first ``.onnx`` file by name in ``folder``."""
    return str(sorted(Path(folder).glob("*.onnx"))[0])


def load_work() -> ModuleType:
    """The S3 work module (fetch, compute), shared with the other runtimes' predictors."""
    spec = importlib.util.spec_from_file_location("work", S3_WORK)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def serve(api: ls.LitAPI, args: argparse.Namespace) -> None:
    """Serve ``api`` with LitServe's defaults on the driver's host and port (no client.py)."""
    ls.LitServer(api).run(host=args.host, port=args.port, generate_client_file=False)
