"""The try-it page's example request and its boxes drawn over the image sent, in Chromium.

A fake server declares an example (a file, a JSON body, or none) at ``GET /ui/example``
as the runtime does, and answers POST / with boxes; the last test clicks through the
page in front of the real OCR example.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import test_ui
from PIL import Image, ImageDraw
from test_examples_real import SAMPLE_TEXT, made_example, serve_example
from test_ui import (
    STATIC_TYPES,
    UI_DIR,
    FakeHandler,
    FakeServer,
    open_page,
    running,
    text_of,
    wait_text,
)

browser = test_ui.browser  # the same headless Chromium fixture, one per module

BACKGROUND = (10, 200, 120)
BOX_COLOR = (255, 45, 85)  # the page's #ff2d55
LINES = [  # what the fake answers for an image: two OCR-style lines
    {"text": "first", "score": 0.99, "box": [[20, 20], [180, 20], [180, 50], [20, 50]]},
    {"text": "second", "score": 0.98, "box": [[20, 70], [120, 70], [120, 100], [20, 100]]},
]


def picture(width: int = 240, height: int = 120) -> bytes:
    """A PNG of one flat colour with a dark bar: easy to tell from the boxes drawn over it."""
    image = Image.new("RGB", (width, height), BACKGROUND)
    ImageDraw.Draw(image).rectangle((200, 10, 230, 110), fill=(0, 0, 0))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


class ExampleServer(FakeServer):
    """Serves the page; ``example`` is what GET /ui/example declares (None: a 404)."""

    def __init__(self) -> None:
        super().__init__(ExampleHandler)
        self.example: tuple[str, str, bytes] | None = None  # (kind, content type, body)
        self.answer: dict[str, Any] = {"lines": LINES}
        self.received: list[tuple[str, bytes]] = []  # (content type, body) of each POST


class ExampleHandler(FakeHandler):
    """GET / and /ui/* (the page, the declared example), POST / (the configured answer)."""

    server: ExampleServer

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        files = {f"/ui/{p.name}": p for p in UI_DIR.iterdir() if p.is_file()}
        if path == "/" and "text/html" in (self.headers.get("Accept") or ""):
            path = "/ui/index.html"
        if path == "/ui/example" and self.server.example:
            kind, content_type, body = self.server.example
            self.answer(200, content_type, body, {"x-example-kind": kind})
        elif path in files:
            kind = STATIC_TYPES.get(files[path].suffix, "application/octet-stream")
            self.answer(200, kind, files[path].read_bytes())
        else:
            self.answer(404, "application/json", b'{"error":"not found"}')

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        content_type = self.headers.get("Content-Type") or ""
        self.server.received.append((content_type, body))
        if content_type == "application/json":
            self.answer(200, "application/json", body)  # a JSON body comes back as it is
        else:
            self.answer(200, "application/json", json.dumps(self.server.answer).encode())


@pytest.fixture(scope="module")
def example_server() -> Iterator[ExampleServer]:
    """One fake server for the module; each test sets the example it declares."""
    with running(ExampleServer()) as server:
        yield server


@contextlib.contextmanager
def page_of(browser: Any, url: str) -> Iterator[Any]:
    """The page, opened fresh once its example request (if any) was answered."""
    pages = open_page(browser, url)
    page = next(pages)
    page.wait_for_load_state("networkidle")
    try:
        yield page
    finally:
        next(pages, None)  # closes it and checks that no script failed


def pixel(page: Any, x: int, y: int) -> tuple[int, int, int]:
    """The colour of a pixel of the boxes canvas, in the image's own pixels."""
    rgba = page.evaluate(
        "([x, y]) => Array.from(document.querySelector('#result-boxes')"
        ".getContext('2d').getImageData(x, y, 1, 1).data)",
        [x, y],
    )
    return (rgba[0], rgba[1], rgba[2])


def close_to(color: tuple[int, int, int], expected: tuple[int, int, int]) -> bool:
    """Within 8 of the expected colour on each channel (anti-aliasing, colour profiles)."""
    return all(abs(a - b) <= 8 for a, b in zip(color, expected))


def wait_for_boxes(page: Any) -> None:
    """Wait until the page shows the image sent with the answered boxes."""
    page.wait_for_selector("#result-boxes", state="visible")


def test_page_offers_the_example_file_and_draws_the_answered_boxes_over_it(
    browser: Any, example_server: ExampleServer
) -> None:
    sample = picture()
    example_server.example = ("file", "image/png", sample)
    with page_of(browser, example_server.url) as page:
        assert page.is_visible("#try-example")
        assert text_of(page, "#example-hint").startswith("image/png")
        assert page.evaluate("document.querySelector('#example-preview').naturalWidth") == 240

        page.click("#try-example")

        wait_text(page, "#status", r"^200\b")
        wait_for_boxes(page)
        assert example_server.received[-1] == ("image/png", sample)
        assert json.loads(text_of(page, "#result")) == {"lines": LINES}
        assert page.evaluate("document.querySelector('#result-boxes').width") == 240
        assert page.evaluate("document.querySelector('#result-boxes').height") == 120
        assert close_to(pixel(page, 100, 20), BOX_COLOR)  # top edge of the first box
        assert close_to(pixel(page, 120, 85), BOX_COLOR)  # right edge of the second box
        assert close_to(pixel(page, 60, 35), BACKGROUND)  # inside a box: the image itself
        assert close_to(pixel(page, 215, 60), (0, 0, 0))  # the image's dark bar
        assert text_of(page, "#progress").startswith("2 boxes drawn")
        assert "--data-binary @'example.png'" in text_of(page, "#curl")


def test_page_draws_corner_boxes_over_an_uploaded_image(
    browser: Any, example_server: ExampleServer
) -> None:
    example_server.example = None
    example_server.answer = {"boxes": [[30.5, 40.0, 90.0, 80.0]], "labels": [3], "scores": [0.9]}
    try:
        with page_of(browser, example_server.url) as page:
            page.set_input_files(
                "#file-input",
                files=[{"name": "p.png", "mimeType": "image/png", "buffer": picture()}],
            )
            page.click("#send-file")

            wait_for_boxes(page)
            assert close_to(pixel(page, 60, 40), BOX_COLOR)  # [x1, y1, x2, y2]: top edge
            assert close_to(pixel(page, 60, 60), BACKGROUND)
            assert text_of(page, "#progress").startswith("1 box drawn")
    finally:
        example_server.answer = {"lines": LINES}


def test_page_fills_and_sends_a_json_example(browser: Any, example_server: ExampleServer) -> None:
    value = {"inputs": [[1, 2, 3, 4]], "lang": "中文"}
    example_server.example = ("json", "application/json", json.dumps(value).encode())
    with page_of(browser, example_server.url) as page:
        assert text_of(page, "#example-hint") == "a JSON body"
        assert page.is_hidden("#example-preview")

        page.click("#try-example")

        wait_text(page, "#status", r"^200\b")
        assert json.loads(page.input_value("#json-input")) == value
        content_type, body = example_server.received[-1]
        assert (content_type, json.loads(body)) == ("application/json", value)
        assert page.is_hidden("#result-boxes")  # no image was sent: nothing to draw over


def test_page_without_an_example_shows_no_example_button(
    browser: Any, example_server: ExampleServer
) -> None:
    example_server.example = None
    with page_of(browser, example_server.url) as page:
        assert page.is_hidden("#example-card")
        assert page.is_hidden("#try-example")


def test_page_draws_no_boxes_when_a_json_request_is_answered_with_boxes(
    browser: Any, example_server: ExampleServer
) -> None:
    example_server.example = None
    with page_of(browser, example_server.url) as page:
        page.fill("#json-input", json.dumps({"lines": LINES}))
        page.click("#send-json")

        wait_text(page, "#status", r"^200\b")
        assert json.loads(text_of(page, "#result")) == {"lines": LINES}
        assert page.is_hidden("#result-boxes")


@pytest.fixture(scope="module")
def ocr_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The real OCR example, served by the runtime."""
    server = serve_example(made_example("ocr", tmp_path_factory.mktemp("examples")))
    yield server.url
    assert server.stop() == 0


def test_runtime_page_reads_the_ocr_sample_with_one_click(browser: Any, ocr_url: str) -> None:
    with page_of(browser, ocr_url) as page:
        page.click("#try-example")

        wait_text(page, "#status", r"^200\b")
        wait_for_boxes(page)
        answer = json.loads(text_of(page, "#result"))
        assert [line["text"] for line in answer["lines"]] == SAMPLE_TEXT
        assert text_of(page, "#progress").startswith("3 boxes drawn")
        with Image.open(Path(__file__).parent.parent / "examples" / "ocr" / "sample.png") as sample:
            assert page.evaluate("document.querySelector('#result-boxes').width") == sample.width
