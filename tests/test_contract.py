"""The 0.5.0 HTTP contract (DESIGN section 1): in-process, and over real HTTP (marked ``http``)."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Iterator

import msgpack
import pytest
from conftest import PREDICTORS
from PIL import Image
from transports import HttpTarget, LocalTarget, local_target

MSGPACK_TYPES = [
    "application/msgpack",
    "application/x-msgpack",
    "application/vnd.msgpack",
    "application/vnd.messagepack",
]


@pytest.fixture(scope="module", params=["local", "http"])
def target(request, shared_server) -> Iterator[Callable[..., HttpTarget]]:
    """Open a predictor of tests/predictors in-process ("local") or as a server ("http").

    Every test runs in-process; those marked ``http`` run over a real server too.
    """
    made: dict[tuple[str, ...], LocalTarget] = {}

    def open_target(name: str, *args: str, **env: str) -> HttpTarget:
        if request.param == "http":
            return HttpTarget(shared_server(name, *args, **env))
        key = (name, *args, *sorted(f"{k}={v}" for k, v in env.items()))
        if key not in made:
            made[key] = local_target(PREDICTORS / f"{name}.py", args, env)
        return made[key]

    yield open_target
    for local in made.values():
        local.client.close()


@pytest.fixture(scope="module")
def echo(target):
    return target("echo_json")


@pytest.fixture(scope="module")
def results(target):
    return target("results")


def post_kind(url: HttpTarget, kind: str, **kwargs):
    return url.post(json={"kind": kind}, timeout=10, **kwargs)


@pytest.mark.http
def test_get_root_answers_json_message(echo):
    rv = echo.get(timeout=5)
    assert rv.status_code == 200
    assert rv.headers["content-type"] == "application/json"
    assert "message" in rv.json()


@pytest.mark.http
def test_json_body_is_echoed_as_json_without_escaping_non_ascii(echo):
    rv = echo.post(
        data='{"text": "中文"}'.encode(),
        headers={"Content-Type": "application/json; charset=utf-8"},
        timeout=5,
    )
    assert rv.status_code == 200
    assert rv.headers["content-type"] == "application/json"
    assert "中文".encode() in rv.content
    assert rv.json() == {"text": "中文"}


@pytest.mark.http
@pytest.mark.parametrize("content_type", MSGPACK_TYPES)
def test_every_msgpack_alias_is_parsed(echo, content_type):
    body = msgpack.packb({"x": [1, 2], "b": b"\x00\x01"})
    rv = echo.post(
        data=body, headers={"Content-Type": content_type, "Accept": content_type}, timeout=5
    )
    assert rv.status_code == 200
    assert rv.headers["content-type"] == "application/msgpack"
    assert msgpack.unpackb(rv.content) == {"x": [1, 2], "b": b"\x00\x01"}


def test_accept_msgpack_answers_msgpack_for_a_json_body(echo):
    rv = echo.post(json={"a": 1}, headers={"Accept": "application/msgpack"}, timeout=5)
    assert rv.headers["content-type"] == "application/msgpack"
    assert msgpack.unpackb(rv.content) == {"a": 1}


@pytest.mark.http
@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        ("*/*", "application/json"),
        ("application/json;q=0.5, application/msgpack", "application/msgpack"),
        ("application/msgpack;q=0.1, application/json", "application/json"),
        ("text/html, application/*;q=0.8", "application/json"),
    ],
)
def test_accept_negotiation_picks_the_preferred_format(echo, accept, expected):
    rv = echo.post(json={"a": 1}, headers={"Accept": accept}, timeout=5)
    assert rv.status_code == 200
    assert rv.headers["content-type"] == expected


def test_accept_matching_neither_format_is_406_with_json_error(echo):
    rv = echo.post(json={"a": 1}, headers={"Accept": "text/html"}, timeout=5)
    assert rv.status_code == 406
    assert "application/json" in rv.json()["error"]


def test_json_body_that_does_not_parse_is_400(echo):
    rv = echo.post(data=b"{nope", headers={"Content-Type": "application/json"}, timeout=5)
    assert rv.status_code == 400
    assert "not valid JSON" in rv.json()["error"]


def test_msgpack_body_that_does_not_parse_is_400(echo):
    rv = echo.post(data=b"\xc1", headers={"Content-Type": "application/msgpack"}, timeout=5)
    assert rv.status_code == 400
    assert "MessagePack" in rv.json()["error"]


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_json_param_with_other_content_type_is_400(echo, content_type):
    headers = {"Content-Type": content_type} if content_type else {}
    rv = echo.post(data=b'{"a": 1}', headers=headers, timeout=5)
    assert rv.status_code == 400
    assert "application/json" in rv.json()["error"]


def test_payload_is_parsed_for_json_and_raw_for_other_types(target):
    url = target("inject_all")
    parsed = url.post(json={"a": 1}, timeout=5).json()
    assert parsed["payload"] == {"type": "dict", "value": {"a": 1}}
    raw = url.post(data=b"\x00raw", headers={"Content-Type": "image/png"}, timeout=5).json()
    assert raw["payload"] == {"type": "bytes", "base64": base64.b64encode(b"\x00raw").decode()}


def test_payload_with_json_type_that_does_not_parse_is_400(target):
    url = target("inject_all")
    rv = url.post(data=b"{bad", headers={"Content-Type": "application/json"}, timeout=5)
    assert rv.status_code == 400


def test_data_is_the_raw_body_for_every_content_type_form_posts_included(target):
    url = target("inject_all")
    for content_type in ["application/json", "application/x-www-form-urlencoded", "text/plain"]:
        body = b'{"a": 1}' if content_type == "application/json" else b"a=1&b=2"
        rv = url.post(data=body, headers={"Content-Type": content_type}, timeout=5).json()
        assert base64.b64decode(rv["data"]["base64"]) == body


def test_params_args_and_headers_are_injected(target):
    url = target("inject_all")
    rv = url.post(
        params=[("k", "1"), ("k", "2"), ("z", "")],
        json={},
        headers={"X-Custom": "yes"},
        timeout=5,
    )
    body = rv.json()
    assert body["params"] == {"k": ["1", "2"], "z": [""]}
    assert body["args_is_params"] is True
    assert body["header"] == body["header_lower"] == "yes"


def test_annotations_never_break_known_names_and_name_injection_by_annotation(target):
    url = target("annotated")
    rv = url.post(params={"q": "1"}, json={"a": 1}, timeout=5)
    assert rv.json() == {"json": {"a": 1}, "query": {"q": "1"}, "extra": 3}


@pytest.mark.http
def test_request_param_is_a_real_flask_request(target):
    url = target("request_param")
    rv = url.post(params={"a": "b"}, json={"x": 1}, headers={"X-Custom": "c"}, timeout=5).json()
    assert rv["class"] == "flask.wrappers.Request"
    assert rv["json"] == {"x": 1}
    assert rv["args"] == {"a": "b"}
    assert rv["header"] == "c"
    form = url.post(data={"f": "v"}, timeout=5).json()
    assert form["form"] == {"f": "v"}
    assert form["content_type"] == "application/x-www-form-urlencoded"


def test_flask_globals_and_jsonify_work_inside_predict(target):
    url = target("flask_globals")
    rv = url.post(params={"x": "7"}, json={"k": "v"}, timeout=5)
    assert rv.status_code == 200
    assert rv.json() == {"path": "/", "x": "7", "body": {"k": "v"}, "text": "中文"}


@pytest.mark.http
def test_returned_flask_response_passes_through(target):
    url = target("flask_globals")
    rv = url.post(json={"response": True}, timeout=5)
    assert rv.status_code == 201
    assert rv.text == "custom body"
    assert rv.headers["X-Mine"] == "yes"
    assert rv.headers["content-type"].startswith("text/x-custom")
    assert rv.headers["x-request-id"]


@pytest.mark.parametrize(
    ("kind", "content_type", "expected"),
    [
        ("dict", "application/json", {"a": 1, "text": "中文"}),
        ("list", "application/json", [1, 2, 3]),
        ("tuple", "application/json", [1, "two"]),
        ("none", "application/json", None),
        ("int", "application/json", 7),
        ("ndarray", "application/json", [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]),
        ("npscalar", "application/json", 2.5),
        ("nested_numpy", "application/json", {"v": 3, "a": [1, 2]}),
        ("bytes_in_dict", "application/json", {"blob": base64.b64encode(b"\x00\xffhi").decode()}),
        ("int_keys", "application/json", {"1": "one"}),
    ],
)
def test_structured_results_are_json(results, kind, content_type, expected):
    rv = post_kind(results, kind)
    assert rv.status_code == 200
    assert rv.headers["content-type"] == content_type
    assert rv.json() == expected


def test_bytes_stay_binary_in_msgpack(results):
    rv = post_kind(results, "bytes_in_dict", headers={"Accept": "application/x-msgpack"})
    assert rv.headers["content-type"] == "application/msgpack"
    assert msgpack.unpackb(rv.content) == {"blob": b"\x00\xffhi"}


def test_str_result_is_utf8_text_and_ignores_accept(results):
    rv = post_kind(results, "str", headers={"Accept": "application/msgpack"})
    assert rv.headers["content-type"] == "text/plain; charset=utf-8"
    assert rv.content == "héllo".encode()


@pytest.mark.parametrize(
    ("kind", "content_type"),
    [("png", "image/png"), ("jpeg", "image/jpeg"), ("raw", "application/octet-stream")],
)
def test_bytes_results_are_sniffed(results, kind, content_type):
    rv = post_kind(results, kind, headers={"Accept": "text/html"})
    assert rv.status_code == 200
    assert rv.headers["content-type"] == content_type
    if kind != "raw":
        assert Image.open(io.BytesIO(rv.content)).size == (4, 3)


def test_unsupported_result_type_is_500_naming_the_type(results):
    rv = post_kind(results, "unsupported")
    assert rv.status_code == 500
    assert "object" in rv.json()["error"]
    assert rv.json()["request_id"] == rv.headers["x-request-id"]


def test_serving_error_sets_status_and_merges_payload(target):
    url = target("raises")
    rv = url.post(json={"kind": "serving"}, timeout=5)
    assert rv.status_code == 418
    assert rv.json() == {"hint": "teapot", "error": "no coffee"}
    rv = url.post(json={"kind": "default_status"}, timeout=5)
    assert rv.status_code == 400
    assert rv.json() == {"error": "bad input"}


def test_flask_abort_in_predict_keeps_its_status(target):
    url = target("raises")
    rv = url.post(json={"kind": "abort"}, timeout=5)
    assert rv.status_code == 409
    assert rv.json() == {"error": "conflict here"}


@pytest.mark.http
def test_other_exception_is_500_with_request_id_and_server_keeps_serving(target):
    url = target("raises")
    rv = url.post(json={"kind": "crash"}, headers={"X-Request-Id": "req-42"}, timeout=5)
    assert rv.status_code == 500
    assert rv.json()["request_id"] == "req-42"
    assert rv.headers["x-request-id"] == "req-42"
    assert url.post(json={"kind": "serving"}, timeout=5).status_code == 418


@pytest.mark.http
def test_traceback_is_shown_only_in_local_mode(target):
    local = target("raises").post(json={"kind": "crash"}, timeout=5).json()
    assert "secret internal detail" in local["traceback"]
    production = target("raises", OPENBAYES_SERVING_PRODUCTION="1").post(
        json={"kind": "crash"}, timeout=5
    )
    assert production.status_code == 500
    assert "traceback" not in production.json()
    assert "secret internal detail" not in production.text
    assert "Traceback" not in production.text


@pytest.mark.http
@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("GET", "/nowhere", 404), ("POST", "/nowhere", 405), ("PUT", "/", 405), ("DELETE", "/", 405)],
)
def test_404_and_405_bodies_are_json(echo, method, path, status):
    rv = echo.request(method, path, timeout=5)
    assert rv.status_code == status
    assert rv.headers["content-type"] == "application/json"
    assert rv.json()["error"]


@pytest.mark.http
def test_cors_allows_any_origin_without_credentials(echo):
    rv = echo.post(json={}, headers={"Origin": "https://example.test"}, timeout=5)
    assert rv.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in rv.headers
    pre = echo.options(
        headers={
            "Origin": "https://example.test",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type, x-api-key",
        },
        timeout=5,
    )
    assert pre.status_code == 204
    assert "POST" in pre.headers["access-control-allow-methods"]
    assert pre.headers["access-control-allow-headers"] == "content-type, x-api-key"


def test_cors_origins_setting_allows_only_listed_origins(target):
    url = target("echo_json", "--cors-origins", "https://ok.test")
    ok = url.post(json={}, headers={"Origin": "https://ok.test"}, timeout=5)
    assert ok.headers["access-control-allow-origin"] == "https://ok.test"
    other = url.post(json={}, headers={"Origin": "https://evil.test"}, timeout=5)
    assert "access-control-allow-origin" not in other.headers


@pytest.mark.http
def test_request_id_is_generated_or_taken_from_the_request(echo):
    generated = echo.post(json={}, timeout=5).headers["x-request-id"]
    assert len(generated) >= 16
    given = echo.post(json={}, headers={"X-Request-Id": "abc"}, timeout=5)
    assert given.headers["x-request-id"] == "abc"
    platform = echo.post(json={}, headers={"X-Openbayes-Serving-Request-Id": "12"}, timeout=5)
    assert platform.headers["x-request-id"] == "12"


@pytest.mark.http
def test_healthz_and_readyz_answer_when_ready(echo):
    assert echo.get("/healthz", timeout=5).status_code == 200
    assert echo.get("/readyz", timeout=5).json() == {"status": "ready"}


@pytest.mark.http
def test_png_made_from_raw_body_is_returned_as_image(target):
    url = target("returns_png")
    rv = url.post(
        data=bytes(range(10)), headers={"Content-Type": "application/octet-stream"}, timeout=5
    )
    assert rv.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(rv.content))
    assert image.size == (10, 1)
    assert image.tobytes() == bytes(range(10))


@pytest.mark.http
def test_run_thread_updates_state_that_predict_reads(target):
    url = target("run_thread")
    assert url.post(json={}, timeout=15).json() == {"ticks": 3}


@pytest.mark.http
def test_body_larger_than_max_body_size_is_413_json(target):
    url = target("echo_json", "--max-body-size", "1000")
    rv = url.post(data=b"x" * 2000, headers={"Content-Type": "application/json"}, timeout=5)
    assert rv.status_code == 413
    assert "1000" in rv.json()["error"]
