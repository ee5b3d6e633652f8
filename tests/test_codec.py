"""codec: values in, bytes out."""

from __future__ import annotations

import msgpack
import numpy as np
import orjson
import pytest

from openbayes_serving import codec
from openbayes_serving.errors import BadRequestError, NotAcceptableError


@pytest.mark.parametrize(
    ("content_type", "kind"),
    [
        ("application/json", codec.BodyKind.JSON),
        ("Application/JSON; charset=utf-8", codec.BodyKind.JSON),
        ("application/msgpack", codec.BodyKind.MSGPACK),
        ("application/x-msgpack", codec.BodyKind.MSGPACK),
        ("application/vnd.msgpack", codec.BodyKind.MSGPACK),
        ("application/vnd.messagepack", codec.BodyKind.MSGPACK),
        ("application/octet-stream", codec.BodyKind.RAW),
        ("text/json", codec.BodyKind.RAW),
        (None, codec.BodyKind.RAW),
    ],
)
def test_body_kind_follows_the_reference_content_types(content_type, kind):
    assert codec.body_kind(content_type) is kind


def test_deeply_nested_json_is_400_not_a_crash():
    with pytest.raises(BadRequestError):
        codec.decode_structured(b"[" * 100_000 + b"]" * 100_000, codec.BodyKind.JSON)


def test_msgpack_declaring_a_huge_array_in_a_small_body_is_400():
    bomb = b"\xdd\xff\xff\xff\xff"  # array32 of 4 billion items, 5 bytes long
    with pytest.raises(BadRequestError):
        codec.decode_structured(bomb, codec.BodyKind.MSGPACK)


def test_deeply_nested_msgpack_is_400():
    with pytest.raises(BadRequestError):
        codec.decode_structured(b"\x91" * 100_000 + b"\x00", codec.BodyKind.MSGPACK)


def test_json_encoding_keeps_non_ascii_and_base64s_bytes():
    assert codec.encode_json({"t": "中", "b": b"\x01"}) == '{"t":"中","b":"AQ=="}'.encode()


def test_numpy_values_encode_in_both_formats():
    value = {
        "a": np.arange(3, dtype=np.int32),
        "s": np.float32(1.5),
        "f16": np.ones(2, dtype=np.float16),
    }
    assert orjson.loads(codec.encode_json(value)) == {"a": [0, 1, 2], "s": 1.5, "f16": [1.0, 1.0]}
    assert msgpack.unpackb(codec.encode_msgpack(value)) == {
        "a": [0, 1, 2],
        "s": 1.5,
        "f16": [1.0, 1.0],
    }


def test_negotiate_raises_406_error_for_unservable_accept():
    with pytest.raises(NotAcceptableError):
        codec.negotiate("image/png")
    # JSON's own range refuses it (q=0); */* still allows MessagePack (RFC 9110 12.5.1).
    assert codec.negotiate("application/json;q=0, */*;q=0.1") is codec.Format.MSGPACK
    assert codec.negotiate("application/vnd.msgpack") is codec.Format.MSGPACK


def test_sse_frames_multiline_text_as_one_event():
    assert codec.frame_chunk("a\nb", sse=True) == b"data: a\ndata: b\n\n"
    assert codec.frame_chunk({"x": 1}, sse=False) == b'{"x":1}\n'
