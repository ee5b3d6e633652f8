"""The 0.5.0 HTTP contract (DESIGN section 1), over real HTTP against real servers."""

from __future__ import annotations

import base64
import io

import msgpack
import pytest
import requests
from PIL import Image

MSGPACK_TYPES = [
    "application/msgpack",
    "application/x-msgpack",
    "application/vnd.msgpack",
    "application/vnd.messagepack",
]


@pytest.fixture(scope="module")
def echo(shared_server):
    return shared_server("echo_json")


@pytest.fixture(scope="module")
def results(shared_server):
    return shared_server("results")


def post_kind(url: str, kind: str, **kwargs):
    return requests.post(url, json={"kind": kind}, timeout=10, **kwargs)


def test_get_root_answers_json_message(echo):
    rv = requests.get(echo, timeout=5)
    assert rv.status_code == 200
    assert rv.headers["content-type"] == "application/json"
    assert "message" in rv.json()


def test_json_body_is_echoed_as_json_without_escaping_non_ascii(echo):
    rv = requests.post(
        echo,
        data='{"text": "中文"}'.encode(),
        headers={"Content-Type": "application/json; charset=utf-8"},
        timeout=5,
    )
    assert rv.status_code == 200
    assert rv.headers["content-type"] == "application/json"
    assert "中文".encode() in rv.content
    assert rv.json() == {"text": "中文"}


@pytest.mark.parametrize("content_type", MSGPACK_TYPES)
def test_every_msgpack_alias_is_parsed(echo, content_type):
    body = msgpack.packb({"x": [1, 2], "b": b"\x00\x01"})
    rv = requests.post(
        echo, data=body, headers={"Content-Type": content_type, "Accept": content_type}, timeout=5
    )
    assert rv.status_code == 200
    assert rv.headers["content-type"] == "application/msgpack"
    assert msgpack.unpackb(rv.content) == {"x": [1, 2], "b": b"\x00\x01"}


def test_accept_msgpack_answers_msgpack_for_a_json_body(echo):
    rv = requests.post(echo, json={"a": 1}, headers={"Accept": "application/msgpack"}, timeout=5)
    assert rv.headers["content-type"] == "application/msgpack"
    assert msgpack.unpackb(rv.content) == {"a": 1}


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
    rv = requests.post(echo, json={"a": 1}, headers={"Accept": accept}, timeout=5)
    assert rv.status_code == 200
    assert rv.headers["content-type"] == expected


def test_accept_matching_neither_format_is_406_with_json_error(echo):
    rv = requests.post(echo, json={"a": 1}, headers={"Accept": "text/html"}, timeout=5)
    assert rv.status_code == 406
    assert "application/json" in rv.json()["error"]


def test_json_body_that_does_not_parse_is_400(echo):
    rv = requests.post(echo, data=b"{nope", headers={"Content-Type": "application/json"}, timeout=5)
    assert rv.status_code == 400
    assert "not valid JSON" in rv.json()["error"]


def test_msgpack_body_that_does_not_parse_is_400(echo):
    rv = requests.post(
        echo, data=b"\xc1", headers={"Content-Type": "application/msgpack"}, timeout=5
    )
    assert rv.status_code == 400
    assert "MessagePack" in rv.json()["error"]


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_json_param_with_other_content_type_is_400(echo, content_type):
    headers = {"Content-Type": content_type} if content_type else {}
    rv = requests.post(echo, data=b'{"a": 1}', headers=headers, timeout=5)
    assert rv.status_code == 400
    assert "application/json" in rv.json()["error"]


def test_payload_is_parsed_for_json_and_raw_for_other_types(shared_server):
    url = shared_server("inject_all")
    parsed = requests.post(url, json={"a": 1}, timeout=5).json()
    assert parsed["payload"] == {"type": "dict", "value": {"a": 1}}
    raw = requests.post(
        url, data=b"\x00raw", headers={"Content-Type": "image/png"}, timeout=5
    ).json()
    assert raw["payload"] == {"type": "bytes", "base64": base64.b64encode(b"\x00raw").decode()}


def test_payload_with_json_type_that_does_not_parse_is_400(shared_server):
    url = shared_server("inject_all")
    rv = requests.post(url, data=b"{bad", headers={"Content-Type": "application/json"}, timeout=5)
    assert rv.status_code == 400


def test_data_is_the_raw_body_for_every_content_type_form_posts_included(shared_server):
    url = shared_server("inject_all")
    for content_type in ["application/json", "application/x-www-form-urlencoded", "text/plain"]:
        body = b'{"a": 1}' if content_type == "application/json" else b"a=1&b=2"
        rv = requests.post(url, data=body, headers={"Content-Type": content_type}, timeout=5).json()
        assert base64.b64decode(rv["data"]["base64"]) == body


def test_params_args_and_headers_are_injected(shared_server):
    url = shared_server("inject_all")
    rv = requests.post(
        url,
        params=[("k", "1"), ("k", "2"), ("z", "")],
        json={},
        headers={"X-Custom": "yes"},
        timeout=5,
    )
    body = rv.json()
    assert body["params"] == {"k": ["1", "2"], "z": [""]}
    assert body["args_is_params"] is True
    assert body["header"] == body["header_lower"] == "yes"


def test_annotations_never_break_known_names_and_name_injection_by_annotation(shared_server):
    url = shared_server("annotated")
    rv = requests.post(url, params={"q": "1"}, json={"a": 1}, timeout=5)
    assert rv.json() == {"json": {"a": 1}, "query": {"q": "1"}, "extra": 3}


def test_request_param_is_a_real_flask_request(shared_server):
    url = shared_server("request_param")
    rv = requests.post(
        url, params={"a": "b"}, json={"x": 1}, headers={"X-Custom": "c"}, timeout=5
    ).json()
    assert rv["class"] == "flask.wrappers.Request"
    assert rv["json"] == {"x": 1}
    assert rv["args"] == {"a": "b"}
    assert rv["header"] == "c"
    form = requests.post(url, data={"f": "v"}, timeout=5).json()
    assert form["form"] == {"f": "v"}
    assert form["content_type"] == "application/x-www-form-urlencoded"


def test_flask_globals_and_jsonify_work_inside_predict(shared_server):
    url = shared_server("flask_globals")
    rv = requests.post(url, params={"x": "7"}, json={"k": "v"}, timeout=5)
    assert rv.status_code == 200
    assert rv.json() == {"path": "/", "x": "7", "body": {"k": "v"}, "text": "中文"}


def test_returned_flask_response_passes_through(shared_server):
    url = shared_server("flask_globals")
    rv = requests.post(url, json={"response": True}, timeout=5)
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


def test_serving_error_sets_status_and_merges_payload(shared_server):
    url = shared_server("raises")
    rv = requests.post(url, json={"kind": "serving"}, timeout=5)
    assert rv.status_code == 418
    assert rv.json() == {"hint": "teapot", "error": "no coffee"}
    rv = requests.post(url, json={"kind": "default_status"}, timeout=5)
    assert rv.status_code == 400
    assert rv.json() == {"error": "bad input"}


def test_flask_abort_in_predict_keeps_its_status(shared_server):
    url = shared_server("raises")
    rv = requests.post(url, json={"kind": "abort"}, timeout=5)
    assert rv.status_code == 409
    assert rv.json() == {"error": "conflict here"}


def test_other_exception_is_500_with_request_id_and_server_keeps_serving(shared_server):
    url = shared_server("raises")
    rv = requests.post(url, json={"kind": "crash"}, headers={"X-Request-Id": "req-42"}, timeout=5)
    assert rv.status_code == 500
    assert rv.json()["request_id"] == "req-42"
    assert rv.headers["x-request-id"] == "req-42"
    assert requests.post(url, json={"kind": "serving"}, timeout=5).status_code == 418


def test_traceback_is_shown_only_in_local_mode(shared_server):
    local = requests.post(shared_server("raises"), json={"kind": "crash"}, timeout=5).json()
    assert "secret internal detail" in local["traceback"]
    production = requests.post(
        shared_server("raises", OPENBAYES_SERVING_PRODUCTION="1"), json={"kind": "crash"}, timeout=5
    )
    assert production.status_code == 500
    assert "traceback" not in production.json()
    assert "secret internal detail" not in production.text
    assert "Traceback" not in production.text


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("GET", "/nowhere", 404), ("POST", "/nowhere", 405), ("PUT", "/", 405), ("DELETE", "/", 405)],
)
def test_404_and_405_bodies_are_json(echo, method, path, status):
    rv = requests.request(method, echo + path, timeout=5)
    assert rv.status_code == status
    assert rv.headers["content-type"] == "application/json"
    assert rv.json()["error"]


def test_cors_allows_any_origin_without_credentials(echo):
    rv = requests.post(echo, json={}, headers={"Origin": "https://example.test"}, timeout=5)
    assert rv.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in rv.headers
    pre = requests.options(
        echo,
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


def test_cors_origins_setting_allows_only_listed_origins(shared_server):
    url = shared_server("echo_json", "--cors-origins", "https://ok.test")
    ok = requests.post(url, json={}, headers={"Origin": "https://ok.test"}, timeout=5)
    assert ok.headers["access-control-allow-origin"] == "https://ok.test"
    other = requests.post(url, json={}, headers={"Origin": "https://evil.test"}, timeout=5)
    assert "access-control-allow-origin" not in other.headers


def test_request_id_is_generated_or_taken_from_the_request(echo):
    generated = requests.post(echo, json={}, timeout=5).headers["x-request-id"]
    assert len(generated) >= 16
    given = requests.post(echo, json={}, headers={"X-Request-Id": "abc"}, timeout=5)
    assert given.headers["x-request-id"] == "abc"
    platform = requests.post(
        echo, json={}, headers={"X-Openbayes-Serving-Request-Id": "12"}, timeout=5
    )
    assert platform.headers["x-request-id"] == "12"


def test_healthz_and_readyz_answer_when_ready(echo):
    assert requests.get(echo + "/healthz", timeout=5).status_code == 200
    assert requests.get(echo + "/readyz", timeout=5).json() == {"status": "ready"}


def test_png_made_from_raw_body_is_returned_as_image(shared_server):
    url = shared_server("returns_png")
    rv = requests.post(
        url, data=bytes(range(10)), headers={"Content-Type": "application/octet-stream"}, timeout=5
    )
    assert rv.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(rv.content))
    assert image.size == (10, 1)
    assert image.tobytes() == bytes(range(10))


def test_run_thread_updates_state_that_predict_reads(shared_server):
    url = shared_server("run_thread")
    assert requests.post(url, json={}, timeout=15).json() == {"ticks": 3}


def test_body_larger_than_max_body_size_is_413_json(shared_server):
    url = shared_server("echo_json", "--max-body-size", "1000")
    rv = requests.post(
        url, data=b"x" * 2000, headers={"Content-Type": "application/json"}, timeout=5
    )
    assert rv.status_code == 413
    assert "1000" in rv.json()["error"]
