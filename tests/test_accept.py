"""Accept negotiation follows RFC 9110 section 12.5.1: the most specific range decides.

The property test holds ``codec.negotiate`` to werkzeug's ``MIMEAccept.best_match`` on
generated headers. The MessagePack aliases name one representation here (answers are
``application/msgpack``), so the reference sees each alias as ``application/msgpack``.
Where werkzeug's answer depends only on the order of the server's list (a full tie),
negotiate answers with the range the client listed first.
"""

from __future__ import annotations

import msgpack
import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st
from werkzeug.datastructures import MIMEAccept
from werkzeug.http import parse_accept_header

from openbayes_serving import codec
from openbayes_serving.errors import NotAcceptableError

JSON = "application/json"
MSGPACK = "application/msgpack"
ALIASES = ("application/x-msgpack", "application/vnd.msgpack", "application/vnd.messagepack")
RANGES = ("*/*", "application/*", JSON, MSGPACK, *ALIASES, "text/html", "text/*", "image/png")
FORMATS = {JSON: codec.Format.JSON, MSGPACK: codec.Format.MSGPACK}

quality = st.one_of(
    st.none(), st.integers(0, 1000).map(lambda n: f"{n / 1000:.3f}".rstrip("0").rstrip("."))
)
accept_header = st.lists(st.tuples(st.sampled_from(RANGES), quality), min_size=1, max_size=6)


def render(items: list[tuple[str, str | None]], canonical: bool) -> str:
    parts = []
    for mime, q in items:
        if canonical and mime in ALIASES:
            mime = MSGPACK
        parts.append(mime if q is None else f"{mime};q={q}")
    return ", ".join(parts)


def reference(header: str) -> set[codec.Format]:
    """werkzeug's best match, for both orders of the server's list (two on a full tie)."""
    accept = parse_accept_header(header, MIMEAccept)
    answers = {accept.best_match(order) for order in ([JSON, MSGPACK], [MSGPACK, JSON])}
    return {FORMATS[answer] for answer in answers if answer is not None}


@settings(max_examples=400, deadline=None)
@given(accept_header)
def test_negotiate_agrees_with_werkzeug_mime_accept(items):
    header = render(items, canonical=False)
    expected = reference(render(items, canonical=True))
    if not expected:
        with pytest.raises(NotAcceptableError):
            codec.negotiate(header)
        return
    assert codec.negotiate(header) in expected


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        pytest.param("*/*, application/json;q=0", codec.Format.MSGPACK, id="json-refused"),
        pytest.param("application/*;q=0.9, application/msgpack;q=0", codec.Format.JSON, id="mp-0"),
        pytest.param("*/*, application/msgpack", codec.Format.MSGPACK, id="named-beats-wildcard"),
        pytest.param("application/msgpack, application/json", codec.Format.MSGPACK, id="first"),
        pytest.param("application/json, application/msgpack", codec.Format.JSON, id="first-json"),
        pytest.param("*/*", codec.Format.JSON, id="wildcard-json"),
        pytest.param("application/x-msgpack;q=0.5, */*;q=0.4", codec.Format.MSGPACK, id="alias"),
    ],
)
def test_specificity_and_order_decide(accept, expected):
    assert codec.negotiate(accept) is expected


def test_json_refused_by_q0_is_never_the_answer(shared_server):
    url = shared_server("echo_json")
    headers = {"Accept": "*/*, application/json;q=0"}
    rv = requests.post(url, json={"x": 1}, headers=headers, timeout=10)
    assert rv.status_code == 200
    assert rv.headers["Content-Type"] == "application/msgpack"
    assert msgpack.unpackb(rv.content) == {"x": 1}
    headers = {"Accept": "application/json;q=0, application/msgpack;q=0, text/html"}
    rv = requests.post(url, json={"x": 1}, headers=headers, timeout=10)
    assert rv.status_code == 406
    assert "cannot answer with" in rv.json()["error"]
