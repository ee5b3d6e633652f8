"""What a result becomes (results), in-process: the table of result types."""

from __future__ import annotations

import msgpack
import numpy as np
import orjson
import pytest

from openbayes_serving.errors import BadResultError, NotAcceptableError
from openbayes_serving.results import encode_value

PNG = b"\x89PNG\r\n\x1a\n rest"
JPEG = b"\xff\xd8\xff\xe0 rest"


@pytest.mark.parametrize(
    ("value", "accept", "content_type"),
    [
        ({"a": 1}, None, "application/json"),
        ([1, 2], "application/msgpack", "application/msgpack"),
        ((1, 2), None, "application/json"),
        (None, None, "application/json"),
        (np.float32(1.5), None, "application/json"),
        ("text", "application/msgpack", "text/plain; charset=utf-8"),
        (PNG, None, "image/png"),
        (JPEG, None, "image/jpeg"),
        (bytearray(b"\x00raw"), "application/json", "application/octet-stream"),
    ],
)
def test_each_result_type_gets_its_content_type(value, accept, content_type):
    assert encode_value(value, accept)[1] == content_type


def test_a_tuple_is_a_json_array_and_bytes_stay_binary_in_msgpack():
    assert orjson.loads(encode_value((1, "a"), None)[0]) == [1, "a"]
    body, _ = encode_value({"b": b"\x00"}, "application/msgpack")
    assert msgpack.unpackb(body) == {"b": b"\x00"}


def test_str_and_bytes_ignore_accept_but_structured_results_do_not():
    assert encode_value("x", "image/png") == (b"x", "text/plain; charset=utf-8")
    with pytest.raises(NotAcceptableError):
        encode_value({"a": 1}, "image/png")


def test_a_value_that_cannot_be_answered_names_its_type_and_the_allowed_ones():
    with pytest.raises(BadResultError) as info:
        encode_value(object(), None)
    assert "predict() returned object" in str(info.value)
    assert "dict, list, tuple, str, bytes" in str(info.value)


def test_an_unencodable_value_inside_a_dict_is_a_bad_result():
    with pytest.raises(BadResultError):
        encode_value({"x": object()}, None)
