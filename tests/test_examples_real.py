"""The examples with real pretrained weights: OCR (PP-OCRv4, ONNX) and Silero VAD (TorchScript).

The weights come from the wheels of rapidocr-onnxruntime and silero-vad (``make env``
installs both with ``--no-deps``); each example's make_model.py copies them into a
temporary copy of the example. Text is drawn with Pillow in Debian's DejaVu and WenQuanYi
Micro Hei fonts, speech is made by espeak-ng (``make test`` installs all three).
"""

from __future__ import annotations

import importlib.util
import io
import json
import re
import shutil
import subprocess
import sys
import time
import wave
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import requests
from conftest import ROOT, Server, clean_env, launch, wait_ready
from PIL import Image, ImageDraw, ImageFont

EXAMPLES = ROOT / "examples"
FONTS = Path("/usr/share/fonts/truetype")
SANS = FONTS / "dejavu" / "DejaVuSans.ttf"
ENGLISH_FONTS = [
    SANS,
    FONTS / "dejavu" / "DejaVuSerif.ttf",
    FONTS / "dejavu" / "DejaVuSansMono.ttf",
    FONTS / "dejavu" / "DejaVuSans-Bold.ttf",
]
CHINESE_FONT = FONTS / "wqy" / "wqy-microhei.ttc"
ESPEAK = "/usr/bin/espeak-ng"
GENERATED = shutil.ignore_patterns("*.onnx", "*.jit", "rec", "__pycache__")

ENGLISH = [
    "Hello OpenBayes 2026",
    "The quick brown fox jumps over the lazy dog.",
    "Serving models in production since 2019",
    "Invoice number 48213, due on 15 March",
    "Total amount: 1,250.75 USD",
    "Please keep this receipt for your records",
    "Room 305, Building B, Science Park",
    "Open daily from 9:00 to 21:00",
    "Call us at +86 10 6254 8800",
    "Batch size 32, latency 18 ms",
    "Temperature today: 23 degrees",
    "Model version 4.2 released on Monday",
    "Send an image and get the text back",
    "Flight CA1837 departs at 07:45",
    "Order 7731 shipped by express mail",
    "Text detection and recognition",
    "Welcome to the city library",
    "Parking is free after 6 pm",
    "All prices include tax",
    "Chapter 12: Results and Discussion",
]
CHINESE = [
    "欢迎使用文字识别服务",
    "价格：128元，数量3件",
    "北京市海淀区中关村大街",
    "今天天气晴朗，适合出行",
    "请在服务台领取您的发票",
    "营业时间：上午九点至晚上九点",
    "本店所有商品均可退换",
    "会议将于下午三点开始",
    "人工智能改变我们的生活",
    "订单编号：20260315",
    "欢迎光临，请慢走",
    "图书馆开放时间为每天八点",
    "电话：010-62548800",
    "新年快乐，万事如意",
    "学习使人进步",
    "第三章 实验结果与分析",
    "模型服务上线测试通过",
    "请保持安静",
    "地铁四号线西单站",
    "总计：人民币三百元整",
]


def made_example(name: str, root: Path) -> Path:
    """A copy of ``examples/<name>`` under ``root`` with the weights its make_model.py copies."""
    directory = root / name
    shutil.copytree(EXAMPLES / name, directory, ignore=GENERATED)
    result = subprocess.run(
        [sys.executable, "make_model.py"],
        cwd=directory,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return directory


def serve_example(directory: Path) -> Server:
    """``python predictor.py`` from the example's directory on 127.0.0.1, ready."""
    server = launch(directory / "predictor.py", (), directory, {})
    try:
        wait_ready(server.url, server.proc, timeout=120)
    except RuntimeError:
        server.stop()
        raise RuntimeError(server.log()) from None
    return server


@pytest.fixture(scope="module")
def ocr_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of examples/ocr with its models."""
    return made_example("ocr", tmp_path_factory.mktemp("examples"))


@pytest.fixture(scope="module")
def ocr_server(ocr_dir: Path) -> Iterator[Server]:
    """The OCR example served for the module's tests; it must exit 0 on SIGTERM."""
    server = serve_example(ocr_dir)
    yield server
    assert server.stop() == 0


@pytest.fixture(scope="module")
def ocr_predictor(ocr_dir: Path) -> Any:
    """The example's Predictor in this process, its detector session built as ``onnx`` is."""
    sys.path.insert(0, str(ocr_dir))  # predictor.py imports ppocr.py from its own folder
    try:
        spec = importlib.util.spec_from_file_location("ocr_predictor", ocr_dir / "predictor.py")
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(ocr_dir))
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    det = ort.InferenceSession(str(ocr_dir / "det.onnx"), options, ["CPUExecutionProvider"])
    return module.Predictor(det)


def png(image: Image.Image) -> bytes:
    """The image as PNG bytes."""
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def line_image(text: str, font_file: Path, size: int, pad: int = 20) -> Image.Image:
    """One line of black text on white, ``pad`` pixels around it."""
    font = ImageFont.truetype(str(font_file), size)
    left, top, right, bottom = font.getbbox(text)
    size_px = (int(right - left) + 2 * pad, int(bottom - top) + 2 * pad)
    image = Image.new("RGB", size_px, "white")
    ImageDraw.Draw(image).text((pad - left, pad - top), text, font=font, fill="black")
    return image


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance: insertions, deletions and substitutions of characters."""
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def read(predictor: Any, body: bytes) -> dict:
    """The example's answer for an image, through its three stages in this process."""
    return predictor.postprocess(predictor.predict(predictor.preprocess(body)))


def test_ocr_reads_40_rendered_lines_of_chinese_and_english(ocr_predictor: Any) -> None:
    cases = [(t, ENGLISH_FONTS[i % 4], 22 + 2 * (i % 8)) for i, t in enumerate(ENGLISH)]
    cases += [(t, CHINESE_FONT, 22 + 2 * (i % 8)) for i, t in enumerate(CHINESE)]
    assert len(cases) == 40
    misread = {}
    errors = 0
    for text, font_file, size in cases:
        answer = read(ocr_predictor, png(line_image(text, font_file, size)))
        if answer["text"] != text:
            misread[text] = answer["text"]
        errors += edit_distance(answer["text"], text)
    character_error_rate = errors / sum(len(text) for text, _, _ in cases)
    assert len(misread) <= 2, misread  # at least 95% of the lines exact
    assert character_error_rate < 0.02, misread


def test_ocr_reads_text_on_a_transparent_background_as_on_paper(ocr_predictor: Any) -> None:
    line = line_image("Transparent 2026", SANS, 30).convert("L")
    clear = Image.new("RGBA", line.size, (0, 0, 0, 0))  # black where nothing is drawn
    clear.putalpha(Image.eval(line, lambda v: 255 - v))  # the text opaque, the rest not

    assert read(ocr_predictor, png(clear))["text"] == "Transparent 2026"


DOCUMENT = [  # (text, font, x) drawn one under the other
    ("Quarterly report", FONTS / "dejavu" / "DejaVuSans-Bold.ttf", 60),
    ("Revenue grew 12% to 4.8 million", SANS, 60),
    ("季度报告：收入增长百分之十二", CHINESE_FONT, 60),
    ("Costs stayed flat at 3.1 million", SANS, 60),
    ("下一季度将开设两家新店", CHINESE_FONT, 60),
    ("Signed: the finance team", FONTS / "dejavu" / "DejaVuSerif.ttf", 300),
]


def document() -> tuple[Image.Image, list[tuple[float, float, float, float]]]:
    """A page with DOCUMENT's lines, and where each was drawn (left, top, right, bottom)."""
    image = Image.new("RGB", (900, 620), (252, 250, 245))
    pen = ImageDraw.Draw(image)
    drawn = []
    for index, (text, font_file, x) in enumerate(DOCUMENT):
        font = ImageFont.truetype(str(font_file), 34 if index == 0 else 28)
        y = 50 + 90 * index
        pen.text((x, y), text, font=font, fill=(30, 30, 30))
        drawn.append(pen.textbbox((x, y), text, font=font))
    return image, drawn


def test_ocr_returns_the_lines_of_a_document_in_reading_order_with_their_boxes(
    ocr_server: Server,
) -> None:
    image, drawn = document()

    rv = requests.post(
        ocr_server.url, data=png(image), headers={"Content-Type": "image/png"}, timeout=60
    )

    assert rv.status_code == 200, rv.text
    answer = rv.json()
    assert [line["text"] for line in answer["lines"]] == [text for text, _, _ in DOCUMENT]
    assert answer["text"] == "\n".join(text for text, _, _ in DOCUMENT)
    for line, (left, top, right, bottom) in zip(answer["lines"], drawn):
        xs = [x for x, _ in line["box"]]
        ys = [y for _, y in line["box"]]
        assert len(line["box"]) == 4
        margins = (left - min(xs), top - min(ys), max(xs) - right, max(ys) - bottom)
        # the box holds the drawn text (to a pixel or two), with a margin under a line's height
        assert all(-3 <= margin < 40 for margin in margins), (line, (left, top, right, bottom))
        assert 0.5 <= line["score"] <= 1.0


SAMPLE_TEXT = [
    "Hello from openbayes-serving",
    "Text lines come back in reading order",
    "中文和英文都可以识别",
]


def test_ocr_reads_the_sample_that_make_serve_and_the_readme_show(ocr_server: Server) -> None:
    sample = (EXAMPLES / "ocr" / "sample.png").read_bytes()

    rv = requests.post(
        ocr_server.url, data=sample, headers={"Content-Type": "image/png"}, timeout=60
    )

    assert rv.status_code == 200, rv.text
    assert [line["text"] for line in rv.json()["lines"]] == SAMPLE_TEXT
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    shown = re.search(r"@examples/ocr/sample\.png.*?```json\n(.*?)```", readme, re.S)
    assert shown, "the README shows no answer for the sample"
    assert [line["text"] for line in json.loads(shown.group(1))["lines"]] == SAMPLE_TEXT
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert "EXAMPLE := examples/ocr\n" in makefile
    assert "--data-binary @$(EXAMPLE)/sample.png" in makefile


def test_ocr_example_request_is_the_sample_for_the_page(ocr_server: Server) -> None:
    rv = requests.get(f"{ocr_server.url}/ui/example", timeout=10)

    assert rv.status_code == 200
    assert rv.headers["x-example-kind"] == "file"
    assert rv.headers["Content-Type"].startswith("image/png")
    assert rv.content == (EXAMPLES / "ocr" / "sample.png").read_bytes()


def test_ocr_fetches_an_image_url_and_reads_the_same_text(
    ocr_server: Server, file_server: tuple[Path, str]
) -> None:
    root, base = file_server
    (root / "line.jpg").write_bytes(jpeg(line_image("Fetched from a URL 42", SANS, 30)))

    rv = requests.post(ocr_server.url, json={"url": f"{base}/line.jpg"}, timeout=60)

    assert rv.status_code == 200, rv.text
    assert rv.json()["text"] == "Fetched from a URL 42"


def jpeg(image: Image.Image) -> bytes:
    """The image as JPEG bytes (quality 90)."""
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=90)
    return out.getvalue()


def huge_png(width: int, height: int) -> bytes:
    """A valid grey PNG of width x height pixels, all white, a few hundred KB compressed."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return len(data).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")

    packer = zlib.compressobj(9)
    row = b"\x00" + b"\xff" * width
    data = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 0, 0, 0, 0])
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
    )


def test_ocr_refuses_bad_input_with_clear_json_errors(
    ocr_server: Server, file_server: tuple[Path, str]
) -> None:
    _, base = file_server
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"data": b"not an image"}, 415, "not an image"),
        ({"data": b"", "headers": {"Content-Type": "image/png"}}, 400, "the body is empty"),
        ({"data": huge_png(10_000, 10_000)}, 413, "10000 x 10000 pixels, over the limit"),
        ({"data": png(Image.new("RGB", (64, 64)))[:60]}, 400, "cannot decode the image"),
        ({"json": {"picture": "a.png"}}, 400, 'JSON like {"url": "http://..."}'),
        ({"json": {"url": f"{base}/missing.png"}}, 502, "it answered 404"),
        ({"json": {"url": "http://127.0.0.1:9/x.png"}}, 502, "cannot connect"),
    ]
    for request, status, message in cases:
        started = time.monotonic()
        rv = requests.post(ocr_server.url, timeout=60, **request)
        assert (rv.status_code, message in rv.json()["error"]) == (status, True), rv.text
        assert time.monotonic() - started < 10  # refused, not worked on
    assert requests.post(
        ocr_server.url, data=png(Image.new("RGB", (64, 64))), timeout=60
    ).json() == {
        "text": "",
        "lines": [],
    }  # an image without text is no error: no lines


# vad-torch


@pytest.fixture(scope="module")
def vad_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The VAD example served for the module's tests; it must exit 0 on SIGTERM."""
    server = serve_example(made_example("vad-torch", tmp_path_factory.mktemp("examples")))
    yield server
    assert server.stop() == 0


def speech(text: str, path: Path) -> tuple[np.ndarray, int]:
    """espeak-ng saying ``text``: samples in [-1, 1] without its leading and trailing silence."""
    subprocess.run([ESPEAK, "-w", str(path), text], check=True, timeout=30)
    with wave.open(str(path)) as wav:
        rate = wav.getframerate()
        samples = np.frombuffer(wav.readframes(wav.getnframes()), np.int16) / 32768
    loud = np.flatnonzero(np.abs(samples) > 0.01)
    return samples[loud[0] : loud[-1] + 1], rate


def wav_bytes(samples: np.ndarray, rate: int, channels: int = 1) -> bytes:
    """16-bit PCM WAV bytes of samples in [-1, 1], the same on every channel."""
    pcm = np.clip(samples * 32767, -32768, 32767).astype("<i2")
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(np.repeat(pcm[:, None], channels, axis=1).tobytes())
    return out.getvalue()


def test_vad_finds_espeak_speech_where_it_was_placed_between_silences(
    vad_server: Server, tmp_path: Path
) -> None:
    phrases = ["hello world this is a test", "the weather is nice today", "good night"]
    clips = [speech(text, tmp_path / f"{i}.wav") for i, text in enumerate(phrases)]
    rate = clips[0][1]  # espeak-ng speaks at 22050 Hz
    rng = np.random.default_rng(0)
    parts: list[np.ndarray] = []
    placed = []  # (start, end) seconds of each phrase
    for silence, clip in zip([1.0, 1.5, 2.0, 1.0], [c for c, _ in clips] + [None]):
        parts.append(rng.normal(0, 0.002, int(silence * rate)))  # quiet noise, not speech
        if clip is not None:
            start = sum(len(p) for p in parts) / rate
            placed.append((start, start + len(clip) / rate))
            parts.append(clip)
    audio = np.concatenate(parts)
    times = np.arange(len(audio) * 44100 // rate) * rate / 44100
    as_44k = np.interp(times, np.arange(len(audio)), audio)

    for body in (wav_bytes(audio, rate), wav_bytes(as_44k, 44100, channels=2)):
        rv = requests.post(
            vad_server.url, data=body, headers={"Content-Type": "audio/wav"}, timeout=60
        )

        assert rv.status_code == 200, rv.text
        answer = rv.json()
        assert answer["duration"] == pytest.approx(len(audio) / rate, abs=0.01)
        found = [(s["start"], s["end"]) for s in answer["segments"]]
        assert len(found) == len(placed), (found, placed)
        for (start, end), (placed_start, placed_end) in zip(found, placed):
            assert abs(start - placed_start) <= 0.25, (found, placed)
            assert abs(end - placed_end) <= 0.25, (found, placed)


def test_vad_answers_requests_sent_at_once_each_as_alone(
    vad_server: Server, tmp_path: Path
) -> None:
    clip, rate = speech("one two three", tmp_path / "count.wav")
    quiet = np.zeros(rate)
    bodies = [  # 10 to 15 s each: long enough for their predicts to overlap if they may
        wav_bytes(np.concatenate([quiet] * (2 + i) + [clip] + [quiet] * 8), rate) for i in range(6)
    ]
    alone = [requests.post(vad_server.url, data=body, timeout=60).json() for body in bodies]

    with ThreadPoolExecutor(max_workers=len(bodies)) as pool:
        together = list(
            pool.map(lambda b: requests.post(vad_server.url, data=b, timeout=60), bodies)
        )

    assert [rv.status_code for rv in together] == [200] * len(bodies)
    assert [rv.json() for rv in together] == alone  # the model's state is never shared
    assert [len(answer["segments"]) for answer in alone] == [1] * len(bodies)


def test_vad_refuses_bad_input_with_clear_json_errors(vad_server: Server) -> None:
    tone = np.sin(np.arange(4000) / 4000 * 2 * np.pi * 440)
    cases: list[tuple[bytes, str, int, str]] = [
        (b"", "", 400, "the body is empty"),
        (b"RIFF not a wave file", "", 415, "not a PCM WAV file"),
        (wav_bytes(tone, 4000), "", 415, "the sample rate is 4000 Hz"),
        (wav_bytes(tone, 16000), "?threshold=2", 400, "threshold must be between 0 and 1"),
    ]
    for body, query, status, message in cases:
        rv = requests.post(vad_server.url + query, data=body, timeout=30)
        assert (rv.status_code, message in rv.json()["error"]) == (status, True), rv.text
    rv = requests.post(vad_server.url, data=wav_bytes(np.zeros(16000), 16000), timeout=30)
    assert rv.json() == {"segments": [], "duration": 1.0}  # silence is no error
