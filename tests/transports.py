"""One test, two transports: the app in-process (LocalClient) or a real server over HTTP.

A ``Target`` answers ``post``/``get``/``options``/``request`` with requests' keyword
arguments and a response with requests' attributes, so a contract test reads the same
either way. The in-process leg needs no server process; the HTTP leg proves the same
behaviour on the wire.
"""

from __future__ import annotations

import importlib.util
import json as jsonlib
import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import orjson
import requests
from requests.structures import CaseInsensitiveDict

from openbayes_serving.testing import LocalClient


class HttpTarget:
    """A real server, reached with requests."""

    def __init__(self, url: str) -> None:
        self.url = url

    def request(self, method: str, path: str = "/", **kwargs: Any) -> Any:
        return requests.request(method, self.url + path, **kwargs)

    def post(self, path: str = "/", **kwargs: Any) -> Any:
        return self.request("POST", path, **kwargs)

    def get(self, path: str = "/", **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs)

    def options(self, path: str = "/", **kwargs: Any) -> Any:
        return self.request("OPTIONS", path, **kwargs)


class LocalAnswer:
    """A LocalClient answer with the attributes of a requests response."""

    def __init__(self, status: int, headers: Mapping[str, str], body: bytes) -> None:
        self.status_code = status
        self.headers = CaseInsensitiveDict(headers)
        self.content = body

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return orjson.loads(self.content)


class LocalTarget(HttpTarget):
    """The same app in-process: requests' arguments turned into an ASGI call."""

    def __init__(self, client: LocalClient) -> None:
        super().__init__("local")
        self.client = client

    def request(self, method: str, path: str = "/", **kwargs: Any) -> LocalAnswer:
        return self._call(method, path, **kwargs)

    def _call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        data: Any = None,
        headers: Mapping[str, str] | None = None,
        params: Any = None,
        timeout: float | None = None,
    ) -> LocalAnswer:
        sent = {k.lower(): v for k, v in (headers or {}).items()}
        body = b""
        if json is not None:
            body = jsonlib.dumps(json).encode()
            sent.setdefault("content-type", "application/json")
        elif isinstance(data, Mapping):
            body = urlencode(data).encode()
            sent.setdefault("content-type", "application/x-www-form-urlencoded")
        elif data is not None:
            body = data.encode() if isinstance(data, str) else bytes(data)
        answer = self.client.request(method, path, body, sent, params)
        return LocalAnswer(answer.status_code, answer.headers, answer.body)


def settings_from(args: tuple[str, ...]) -> dict[str, str]:
    """``("--max-body-size", "1000")`` -> ``{"max_body_size": "1000"}``."""
    return {args[i][2:].replace("-", "_"): args[i + 1] for i in range(0, len(args), 2)}


@contextmanager
def environment(env: Mapping[str, str]) -> Iterator[None]:
    """``env`` set in os.environ while the block runs (settings read it once)."""
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def load_class(script: Path) -> type:
    """The predictor class of a predictor file, imported under a module name of its own."""
    name = f"predictor_{script.stem}"
    module = sys.modules.get(name)
    if module is None:
        spec = importlib.util.spec_from_file_location(name, script)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    classes = [
        value
        for value in vars(module).values()
        if isinstance(value, type) and value.__module__ == name and hasattr(value, "predict")
    ]
    assert len(classes) == 1, f"{script} should define one predictor class"
    return classes[0]


def local_target(script: Path, args: tuple[str, ...], env: Mapping[str, str]) -> LocalTarget:
    """A LocalTarget for a predictor file, with settings from flags and the environment."""
    with environment(env):
        return LocalTarget(LocalClient(load_class(script), **settings_from(args)))
