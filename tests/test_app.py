"""The ASGI app in-process (LocalClient): the route table, auth, the error boundary."""

from __future__ import annotations

import pytest

from openbayes_serving import app as app_module
from openbayes_serving.errors import UnrecoverableError
from openbayes_serving.lifecycle import Health
from openbayes_serving.testing import LocalClient


class Echo:
    def predict(self, json):
        return json


class WithFileExample:
    example = "sample.txt"

    def predict(self, data):
        return data


class WithJsonExample:
    example = {"text": "hello"}

    def predict(self, json):
        return json


class Fatal:
    def predict(self, json):
        raise UnrecoverableError("device lost")


@pytest.fixture
def echo():
    with LocalClient(Echo) as client:
        yield client


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/nowhere", 404),
        ("POST", "/nowhere", 405),
        ("PUT", "/", 405),
        ("POST", "/healthz", 405),
        ("POST", "/ui/index.html", 405),
        ("GET", "/ui/missing.js", 404),
        ("GET", "/ui/example", 404),
    ],
)
def test_unrouted_requests_get_json_errors(echo, method, path, status):
    answer = echo.request(method, path, b"", {}, None)
    assert answer.status_code == status
    assert answer.content_type == "application/json"
    assert answer.json()["error"]


def test_head_is_served_where_get_is(echo):
    assert echo.request("HEAD", "/healthz", b"", {}, None).status_code == 200


def test_options_is_a_cors_preflight_on_any_path(echo):
    answer = echo.request("OPTIONS", "/", b"", {"Access-Control-Request-Headers": "x-a"}, None)
    assert answer.status_code == 204
    assert answer.headers["access-control-allow-headers"] == "x-a"
    assert answer.headers["access-control-allow-origin"] == "*"


def test_every_answer_names_its_request_id(echo):
    assert echo.get("/healthz", headers={"X-Request-Id": "r-1"}).headers["x-request-id"] == "r-1"
    assert echo.post(json={"a": 1}).headers["x-request-id"]


def test_routes_that_need_the_api_key_refuse_without_it():
    with LocalClient(Echo, api_key="k") as client:
        assert client.post(json={}).status_code == 401
        assert client.get("/metrics").status_code == 401
        assert client.get("/healthz").status_code == 200
        good = {"Authorization": "Bearer k"}
        assert client.post(json={"a": 1}, headers=good).json() == {"a": 1}
        assert client.get("/metrics", headers={"X-API-Key": "k"}).status_code == 200


def test_metrics_count_each_route_of_the_table_by_its_path(echo):
    exact = [route for route in app_module.ROUTES if not route.is_prefix]
    for route in exact:
        echo.request(route.method, route.path, b"{}", {"Content-Type": "application/json"}, None)
    echo.get("/nowhere")
    text = echo.get("/metrics").text
    for route in exact:
        assert f'route="{route.path}"' in text
    assert 'route="other",status="404"' in text


def test_a_declared_file_example_is_served_with_its_type(tmp_path, monkeypatch):
    (tmp_path / "sample.txt").write_text("some text")
    monkeypatch.setattr(WithFileExample, "__module__", "not_a_module")
    monkeypatch.chdir(tmp_path)
    with LocalClient(WithFileExample) as client:
        answer = client.get("/ui/example")
    assert answer.status_code == 200
    assert answer.body == b"some text"
    assert answer.content_type == "text/plain"
    assert answer.headers["x-example-kind"] == "file"


def test_a_declared_json_example_is_served_as_json():
    with LocalClient(WithJsonExample) as client:
        answer = client.get("/ui/example")
    assert (answer.json(), answer.headers["x-example-kind"]) == ({"text": "hello"}, "json")


def test_a_draining_server_refuses_new_predictions_with_503(echo):
    echo.app.lifecycle.start_draining()
    answer = echo.post(json={})
    assert answer.status_code == 503
    assert "shutting down" in answer.json()["error"]
    assert echo.get("/readyz").json() == {"status": "draining"}


def test_an_unrecoverable_error_fails_the_server_and_tells_the_host():
    calls: list[tuple[int, bool]] = []
    with LocalClient(Fatal) as client:
        client.app.lifecycle.on_fatal = lambda code, drain: calls.append((code, drain))
        assert client.post(json={}).status_code == 500
        assert client.app.lifecycle.health is Health.FAILED
        assert client.get("/healthz").status_code == 503
    assert calls == [(4, True)]
