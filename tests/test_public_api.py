"""The public API and the 0.5.0 compatibility imports."""

from __future__ import annotations

import subprocess
import sys
import types

import openbayes_serving


def test_all_is_exactly_the_public_names():
    public = {
        name
        for name, value in vars(openbayes_serving).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert set(openbayes_serving.__all__) == public


def test_common_serving_error_is_the_same_class():
    from openbayes_serving.common import ServingError

    assert ServingError is openbayes_serving.ServingError
    error = ServingError("nope", 404, {"k": 1})
    assert (error.message, error.status_code, error.payload) == (
        "nope",
        404,
        {"k": 1, "error": "nope"},
    )


def test_importing_the_package_loads_no_onnxruntime_torch_flask_or_requests():
    # The gunicorn master imports the package: what it does not load, it does not hold.
    code = (
        "import sys, openbayes_serving; print(sorted(m for m in "
        "('onnxruntime', 'torch', 'flask', 'werkzeug', 'requests', 'prometheus_client') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_flask_loads_only_for_predictors_that_use_it():
    # Flask, werkzeug and jinja2 cost a worker about 5 MB: a predictor that never asks for
    # `request`, Flask's globals or a Response must serve without them.
    code = """
import sys
from openbayes_serving.testing import LocalClient

class Plain:
    def predict(self, json):
        return json

class Headers:
    def predict(self, json, headers):
        return {"agent": headers.get("user-agent")}

with LocalClient(Plain) as client:
    assert client.post(json={"a": 1}).json() == {"a": 1}
    assert client.post(data=b"not json").status_code == 400
print(sorted(name for name in ("flask", "werkzeug", "jinja2") if name in sys.modules))
with LocalClient(Headers) as client:
    assert client.post(json={}, headers={"User-Agent": "t"}).json() == {"agent": "t"}
print(sorted(name for name in ("flask", "werkzeug", "jinja2") if name in sys.modules))
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.split("\n")[:2] == ["[]", "['flask', 'jinja2', 'werkzeug']"]


def test_importing_the_package_for_the_client_loads_no_server():
    code = (
        "import sys; from openbayes_serving import Client; print(sorted(m for m in "
        "('gunicorn', 'uvicorn', 'uvicorn_worker', 'httptools', 'uvloop') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_package_has_no_import_cycle():
    import ast
    from pathlib import Path

    package = Path(openbayes_serving.__file__).parent
    edges: dict[str, set[str]] = {}
    for path in package.glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = {
            alias.name if node.module is None else node.module
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.level == 1
            for alias in node.names
        }
        edges[path.stem] = {name.split(".")[0] for name in names} & {
            p.stem for p in package.glob("*.py")
        }

    def reach(start: str, node: str, seen: set[str]) -> bool:
        for nxt in edges.get(node, ()):
            if nxt == start:
                return True
            if nxt not in seen:
                seen.add(nxt)
                if reach(start, nxt, seen):
                    return True
        return False

    cyclic = sorted(module for module in edges if reach(module, module, set()))
    assert cyclic == []
