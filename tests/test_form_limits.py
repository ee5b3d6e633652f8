"""Flask's form parsing follows max_body_size, not werkzeug 3.1's 500 kB field cap.

0.5.0 predictors read large fields (a base64 image in ``request.form["image"]``) and
uploads through ``request.form`` / ``request.files`` and Flask's global ``request``.
"""

from __future__ import annotations

import hashlib
import random
import string

import pytest
import requests
from conftest import PREDICTORS

from openbayes_serving.predictor import find_predictor_class
from openbayes_serving.testing import LocalClient

TWO_MB = 2 * 1024 * 1024


def big_text(size: int) -> str:
    """``size`` URL-safe characters (no escaping, so the body is as large as the field)."""
    return "".join(random.Random(size).choices(string.ascii_letters + string.digits, k=size))


def digest(data: bytes) -> dict[str, object]:
    return {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


@pytest.fixture(scope="module")
def field() -> str:
    return big_text(TWO_MB)


@pytest.mark.parametrize("via", ["injected", "global"])
def test_a_2mb_urlencoded_field_reaches_request_form_over_http(shared_server, field, via):
    url = shared_server("form_fields")
    rv = requests.post(url, params={"via": via}, data={"image": field}, timeout=30)
    assert rv.status_code == 200, rv.text
    assert rv.json() == {"form": digest(field.encode())}


def test_a_2mb_multipart_file_reaches_request_files_over_http(shared_server):
    content = big_text(TWO_MB).encode() + bytes(range(256))
    files = {"image": ("cat.bin", content, "application/octet-stream")}
    rv = requests.post(shared_server("form_fields"), files=files, timeout=30)
    assert rv.status_code == 200, rv.text
    assert rv.json() == {"file": digest(content), "name": "cat.bin"}


@pytest.mark.parametrize("via", ["injected", "global"])
def test_a_2mb_multipart_text_field_reaches_both_requests(shared_server, field, via):
    files = {"image": (None, field)}  # a multipart field without a file name
    url = shared_server("form_fields")
    rv = requests.post(url, params={"via": via}, files=files, timeout=30)
    assert rv.status_code == 200, rv.text
    assert rv.json() == {"form": digest(field.encode())}


def test_a_form_larger_than_max_body_size_is_still_413(shared_server, field):
    url = shared_server("form_fields", "--max-body-size", str(TWO_MB))
    rv = requests.post(url, data={"image": field}, timeout=30)  # 2 MB + "image="
    assert rv.status_code == 413
    assert "larger than" in rv.json()["error"]


def test_form_fields_in_process(field):
    with LocalClient(find_predictor_class(PREDICTORS / "form_fields.py")) as client:
        body = f"image={field}".encode()
        rv = client.post(data=body, content_type="application/x-www-form-urlencoded")
    assert rv.status_code == 200
    assert rv.json() == {"form": digest(field.encode())}
