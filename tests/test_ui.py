"""The try-it page, clicked through in a real headless Chromium driven by Playwright.

Needs Debian's chromium and the playwright package (never ``playwright install``):
``apt-get install -y chromium`` and ``pip install playwright``; ``make test`` installs
both. Most tests drive a fake server that can hold a stream open on cue; the
``test_runtime_*`` tests click through the page served by the real runtime.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from fakes import FAKE_WAIT, FakeHandler, FakeServer, png_bytes, running

UI_DIR = Path(__file__).resolve().parent.parent / "openbayes_serving" / "ui"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
STATIC_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript", ".css": "text/css"}
EXPECT_MS = 10_000  # how long an assertion on the page waits for it to become true
# A predictor error whose text is markup: the page must show it, never run it.
HOSTILE = "<img src=x onerror=window.__pwned=1><script>window.__pwned=2</script>"


class FakeUiServer(FakeServer):
    """Serves the page and answers POST / as a predictor ``return payload`` would."""

    def __init__(self) -> None:
        super().__init__(FakeUiHandler)
        self.received: list[tuple[str, dict[str, str], bytes]] = []


class FakeUiHandler(FakeHandler):
    """GET / (the page), GET /ui/<file>, POST / (echo, PNG echo, error, stream)."""

    server: FakeUiServer

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        files = {f"/ui/{p.name}": p for p in UI_DIR.iterdir() if p.is_file()}
        if path == "/" and "text/html" in (self.headers.get("Accept") or ""):
            path = "/ui/index.html"
        if path in files:
            kind = STATIC_TYPES.get(files[path].suffix, "application/octet-stream")
            self.answer(200, kind, files[path].read_bytes())
        elif path == "/":
            self.answer(200, "application/json", b'{"message":"the service works"}')
        else:
            self.answer(404, "application/json", b'{"error":"not found"}')

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.received.append((self.path, dict(self.headers.items()), body))
        params = dict(parse_qsl(urlsplit(self.path).query))
        kind = (self.headers.get("Content-Type") or "").split(";")[0]
        if "reject" in params:
            self.answer(422, "application/json", json.dumps({"error": HOSTILE}).encode())
        elif "fail" in params:
            error = {
                "error": "internal server error",
                "request_id": "r-500",
                "traceback": "Traceback (most recent call last):\n"
                f'  File "predictor.py", line 9, in predict\nRuntimeError: {HOSTILE}\n',
            }
            self.answer(500, "application/json", json.dumps(error).encode())
        elif "stream" in params:
            self._stream(int(params["stream"]), params)
        elif kind == "application/json":
            text = json.dumps(json.loads(body), ensure_ascii=False)
            self.answer(200, "application/json", text.encode())
        elif body.startswith(b"\x89PNG"):
            self.answer(200, "image/png", body)
        else:
            self.answer(200, "application/octet-stream", body)

    def _stream(self, count: int, params: dict[str, str]) -> None:
        sse = "text/event-stream" in (self.headers.get("Accept") or "")
        kind = "text/event-stream" if sse else "application/x-ndjson"
        self.start_answer(200, kind, {"Transfer-Encoding": "chunked"})
        try:
            for index in range(count):
                line = json.dumps({"i": index}, separators=(",", ":"))
                data = f"data: {line}\n\n" if sse else f"{line}\n"
                self.send_chunk(data.encode())
                if index == 0 and "gate" in params:
                    self.server.gate_opened_in_time = self.server.gate.wait(FAKE_WAIT)
            self.wfile.write(b"0\r\n\r\n")
        except OSError:
            self.close_connection = True


@pytest.fixture(scope="module")
def fake_ui_server() -> Iterator[FakeUiServer]:
    with running(FakeUiServer()) as server:
        yield server


@pytest.fixture(scope="module")
def ui_server_url(fake_ui_server: FakeUiServer) -> str:
    """The server under test. To use the real runtime, serve a predictor that does this:

    ``predict(self, payload, params)``: ``"reject" in params`` -> raise
    ``ServingError(HOSTILE, 422)``; ``"fail" in params`` -> raise ``RuntimeError(HOSTILE)``
    (in local mode, so the 500 carries the traceback);
    ``"stream" in params`` -> a generator of ``{"i": i}``; else ``return payload`` (a
    JSON body comes back as JSON, PNG bytes come back as ``image/png``).
    """
    return fake_ui_server.url


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright import sync_api

    assert CHROMIUM.exists(), f"{CHROMIUM} is missing: apt-get install -y chromium"
    playwright = sync_api.sync_playwright().start()
    try:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield browser
        finally:
            browser.close()
    finally:
        playwright.stop()


@pytest.fixture
def page(browser: Any, ui_server_url: str) -> Iterator[Any]:
    """The page, opened fresh; fails the test on any script error in it."""
    yield from open_page(browser, ui_server_url)


@pytest.fixture
def runtime_page(browser: Any, shared_server: Any) -> Iterator[Any]:
    """The page as the real runtime serves it, in front of tests/predictors/ui_predictor.py."""
    yield from open_page(browser, shared_server("ui_predictor"))


def open_page(browser: Any, url: str) -> Iterator[Any]:
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(EXPECT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    response = page.goto(f"{url}/")
    assert response is not None
    assert response.status == 200
    yield page
    context.close()
    assert errors == []


def text_of(page: Any, selector: str) -> str:
    return str(page.locator(selector).text_content())


def wait_text(page: Any, selector: str, pattern: str) -> None:
    """Wait until the element's text matches ``pattern`` (a regular expression)."""
    page.wait_for_function(
        "([selector, pattern]) => new RegExp(pattern).test("
        "document.querySelector(selector).textContent)",
        arg=[selector, pattern],
        timeout=EXPECT_MS,
    )


def add_param(page: Any, name: str, value: str) -> None:
    page.click("#add-param")
    row = page.locator("#params .param").last
    row.locator("input").nth(0).fill(name)
    row.locator("input").nth(1).fill(value)


def test_page_sends_json_and_shows_status_latency_request_id_and_pretty_json(page):
    check_json_call(page)


def test_runtime_page_sends_json_and_shows_the_pretty_json_answer(runtime_page):
    check_json_call(runtime_page)


def test_runtime_page_uploads_an_image_and_shows_the_answered_image(runtime_page):
    check_image_upload(runtime_page)


def test_runtime_page_shows_the_traceback_of_a_failed_request_in_local_mode(runtime_page):
    add_param(runtime_page, "fail", "1")
    runtime_page.click("#send-json")
    wait_text(runtime_page, "#status", r"^500\b")
    wait_text(runtime_page, "#traceback", "RuntimeError")


def check_json_call(page: Any) -> None:
    value = {"name": "Ada", "langs": ["en", "fr"], "n": 1.5, "ok": True}
    assert page.input_value("#json-input") == "{}"

    page.fill("#json-input", json.dumps(value))
    page.click("#send-json")

    wait_text(page, "#status", r"^200\b")
    wait_text(page, "#latency", r"^\d+ ms$")
    assert text_of(page, "#result") == json.dumps(value, indent=2, ensure_ascii=False)
    assert text_of(page, "#request-id") not in ("", "–")
    assert page.is_hidden("#error")
    assert page.is_hidden("#traceback")
    assert page.is_hidden("#result-image")


def test_page_uploads_an_image_and_shows_the_answered_image(page):
    check_image_upload(page)


def check_image_upload(page: Any) -> None:
    image = png_bytes(width=3, height=2)

    page.set_input_files(
        "#file-input", files=[{"name": "dot.png", "mimeType": "image/png", "buffer": image}]
    )
    page.click("#send-file")

    wait_text(page, "#status", r"^200\b")
    page.wait_for_function(
        "() => { const img = document.querySelector('#result-image');"
        " return !img.hidden && img.complete && img.naturalWidth > 0; }",
        timeout=EXPECT_MS,
    )
    assert page.evaluate("document.querySelector('#result-image').naturalWidth") == 3
    assert page.get_attribute("#result-image", "src").startswith("blob:")
    assert text_of(page, "#content-type").startswith("image/png")


def test_page_sends_the_file_with_its_own_content_type(page, fake_ui_server):
    image = png_bytes()
    page.set_input_files(
        "#file-input", files=[{"name": "dot.png", "mimeType": "image/png", "buffer": image}]
    )

    page.click("#send-file")

    wait_text(page, "#status", r"^200\b")
    path, headers, body = fake_ui_server.received[-1]
    assert (path, headers["Content-Type"], body) == ("/", "image/png", image)


def test_page_shows_the_error_message_as_text_and_runs_none_of_it(page):
    add_param(page, "reject", "1")

    page.click("#send-json")

    wait_text(page, "#status", r"^422\b")
    assert text_of(page, "#error") == HOSTILE
    assert page.is_hidden("#traceback")
    assert page.evaluate("window.__pwned") is None
    assert page.locator("img[src=x]").count() == 0


def test_page_shows_the_traceback_of_a_500_as_text_and_runs_none_of_it(page):
    add_param(page, "fail", "1")

    page.click("#send-json")

    wait_text(page, "#status", r"^500\b")
    page.wait_for_selector("#traceback", state="visible")
    assert text_of(page, "#error").strip()
    assert HOSTILE in text_of(page, "#traceback")
    assert "Traceback (most recent call last)" in text_of(page, "#traceback")
    assert "traceback" not in json.loads(text_of(page, "#result"))
    assert page.evaluate("window.__pwned") is None
    assert page.locator("img[src=x]").count() == 0


def test_page_passes_query_params_to_the_predictor(page, fake_ui_server):
    add_param(page, "lang", "fr")
    add_param(page, "top k", "3&4")

    page.click("#send-json")

    wait_text(page, "#status", r"^200\b")
    query = urlsplit(fake_ui_server.received[-1][0]).query
    assert parse_qsl(query) == [("lang", "fr"), ("top k", "3&4")]


def test_page_appends_sse_chunks_as_they_arrive(page, fake_ui_server):
    fake_ui_server.gate.clear()
    page.select_option("#accept", label="Stream (SSE)")
    add_param(page, "stream", "3")
    add_param(page, "gate", "1")

    page.click("#send-json")

    # The server holds chunks 1 and 2 back until the page shows chunk 0.
    wait_text(page, "#result", r'\{"i":0\}')
    assert '{"i":1}' not in text_of(page, "#result")
    fake_ui_server.gate.set()
    wait_text(page, "#progress", r"^3 chunks")
    assert text_of(page, "#result") == '{"i":0}\n{"i":1}\n{"i":2}\n'
    assert fake_ui_server.gate_opened_in_time is True
    assert fake_ui_server.received[-1][1]["Accept"].startswith("text/event-stream")


def test_page_appends_ndjson_lines(page):
    add_param(page, "stream", "2")

    page.click("#send-json")

    wait_text(page, "#progress", r"^2 chunks")
    assert text_of(page, "#result") == '{"i":0}\n{"i":1}\n'


def test_page_refuses_invalid_json_without_sending_it(page, fake_ui_server):
    sent = len(fake_ui_server.received)

    page.fill("#json-input", "{not json")
    page.click("#send-json")

    wait_text(page, "#json-hint", "^Not valid JSON")
    assert text_of(page, "#status") == "–"
    assert len(fake_ui_server.received) == sent


class _Elements(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: dict[str, str] = {}
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name == "id" and value:
                self.ids[value] = tag
            if name in ("src", "href", "action") and value:
                self.urls.append(value)


def ui_text() -> str:
    return "\n".join(p.read_text("utf-8") for p in sorted(UI_DIR.iterdir()) if p.is_file())


def test_page_has_the_stable_element_ids():
    parser = _Elements()
    parser.feed((UI_DIR / "index.html").read_text("utf-8"))

    assert parser.ids["json-input"] == "textarea"
    assert parser.ids["file-input"] == "input"
    assert parser.ids["result-image"] == "img"
    assert parser.ids["traceback"] == "pre"
    for name in ("send-json", "send-file"):
        assert parser.ids[name] == "button"
    for name in ("status", "latency", "result"):
        assert name in parser.ids


def test_page_loads_nothing_from_another_origin():
    parser = _Elements()
    parser.feed((UI_DIR / "index.html").read_text("utf-8"))

    assert [url for url in parser.urls if re.match(r"^([a-z]+:)?//", url, re.I)] == []
    assert not re.search(r"@import|url\(\s*['\"]?(https?:)?//", ui_text(), re.I)


@pytest.mark.parametrize(
    "sink",
    ["eval(", "new Function", "innerHTML", "outerHTML", "insertAdjacentHTML", "document.write"],
)
def test_page_never_turns_text_into_code_or_markup(sink):
    assert sink not in ui_text()
