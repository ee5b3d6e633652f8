"""Benchmark the examples that serve real pretrained models, against the same models alone.

OCR (examples/ocr, PP-OCRv4): requests/s and p50 latency on a fixed set of document
images drawn with Pillow, for this runtime serving the example, for the example's own
pre/post-processing and models called in this process (the model alone), and for
rapidocr's ``RapidOCR()`` pipeline in this process, all at the same onnxruntime thread
count. VAD (examples/vad-torch, Silero): the same, served and alone. Writes a markdown
table.

Run from the repository root after ``make env`` (weights) with the fonts ``make test``
installs::

    .venv/bin/python benchmarks/real_models.py            # about 10 minutes
    .venv/bin/python benchmarks/real_models.py --quick    # about 4 minutes

rapidocr's pipeline needs OpenCV, pyclipper and shapely, which the project's environment
leaves out: the first run installs them with pip into benchmarks/.work/real-models/deps
(added to this process's path only). Servers bind 127.0.0.1, are stopped by pid, and
every loop is bounded in time and count.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.util
import io
import os
import platform
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import wave
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import requests

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORK = HERE / ".work" / "real-models"
DEPS = WORK / "deps"
RAPIDOCR_DEPS = ["opencv-python-headless", "pyclipper", "shapely", "six", "tqdm"]
FONTS = Path("/usr/share/fonts/truetype")
ENGLISH_FONTS = ["DejaVuSans.ttf", "DejaVuSerif.ttf", "DejaVuSans-Bold.ttf"]
CHINESE_FONT = FONTS / "wqy" / "wqy-microhei.ttc"
HOST = "127.0.0.1"
MAX_REQUESTS = 100_000  # a bound on every measuring loop, beside its duration
THROUGHPUT_TARGET = 0.85  # served req/s as a share of the model alone
LATENCY_TARGET = 1.10  # served p50 as a multiple of the model alone

WORDS = (
    "model serving request batch latency image text line page report invoice order "
    "total amount price market city river station library window garden summer "
    "morning letter number account service quality result table figure chapter"
).split()
PHRASES = (
    "欢迎使用文字识别服务 北京市海淀区 今天天气晴朗 请在服务台领取发票 营业时间为上午九点 "
    "本店商品均可退换 会议将于下午三点开始 人工智能改变生活 订单已经发货 图书馆每天开放 "
    "新年快乐 学习使人进步 实验结果与分析 模型服务上线 地铁四号线 总计人民币三百元"
).split()


@dataclass
class Row:
    """One line of the table: a figure for each contender, the ratio and its goal."""

    scenario: str
    metric: str
    served: float | None
    alone: float | None
    rapidocr: float | None = None
    target: str = ""
    verdict: str = ""

    @property
    def ratio(self) -> float | None:
        """served / alone."""
        if self.served is None or not self.alone:
            return None
        return self.served / self.alone


# ---------------------------------------------------------------------------- inputs


def documents(count: int, seed: int = 7) -> list[tuple[bytes, list[str]]]:
    """``count`` PNG pages of English and Chinese lines, and the text drawn on each."""
    from PIL import Image, ImageDraw, ImageFont

    rng = random.Random(seed)
    pages = []
    for _ in range(count):
        image = Image.new("RGB", (900, 700), (252, 251, 247))
        pen = ImageDraw.Draw(image)
        lines = []
        for row in range(12):
            if rng.random() < 0.35:
                text = rng.choice(PHRASES) + rng.choice(PHRASES)
                font = ImageFont.truetype(str(CHINESE_FONT), 26)
            else:
                words = [rng.choice(WORDS) for _ in range(rng.randint(3, 7))]
                words.insert(rng.randint(0, len(words)), str(rng.randint(1, 9999)))
                text = " ".join(words).capitalize()
                font = ImageFont.truetype(str(FONTS / "dejavu" / rng.choice(ENGLISH_FONTS)), 24)
            pen.text((50, 30 + 54 * row), text, font=font, fill=(25, 25, 25))
            lines.append(text)
        out = io.BytesIO()
        image.save(out, format="PNG")
        pages.append((out.getvalue(), lines))
    return pages


def audio_wav(seconds: float, seed: int = 3) -> bytes:
    """16 kHz mono PCM: bursts of voiced, speech-like sound between stretches of quiet."""
    rate = 16_000
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    pitch = 120 + 30 * np.sin(2 * np.pi * 0.7 * t)
    voiced = sum(np.sin(2 * np.pi * k * np.cumsum(pitch) / rate) / k for k in range(1, 12))
    envelope = (np.sin(2 * np.pi * 0.25 * t) > 0).astype(float)
    samples = 0.2 * voiced * envelope + rng.normal(0, 0.003, len(t))
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(np.clip(samples * 32767, -32768, 32767).astype("<i2").tobytes())
    return out.getvalue()


# ---------------------------------------------------------------------------- the examples


def prepare_example(name: str) -> Path:
    """A copy of examples/<name> under .work with the weights its make_model.py copies."""
    directory = WORK / name
    shutil.rmtree(directory, ignore_errors=True)
    shutil.copytree(ROOT / "examples" / name, directory)
    subprocess.run([sys.executable, "make_model.py"], cwd=directory, check=True, timeout=300)
    return directory


def load_predictor(directory: Path, threads: int) -> Any:
    """The example's Predictor in this process; an ``onnx`` session built as the runtime
    builds it (``threads`` intra-op threads, no spinning) when ``__init__`` asks for one."""
    import inspect

    sys.path.insert(0, str(directory))
    try:
        spec = importlib.util.spec_from_file_location(
            f"{directory.name}_bench", directory / "predictor.py"
        )
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(directory))
    wanted = inspect.signature(module.Predictor.__init__).parameters
    if "onnx" in wanted:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        model = sorted(directory.glob("*.onnx"))[0]
        session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        return module.Predictor(session)
    return module.Predictor("cpu")


def stages(predictor: Any) -> Callable[[bytes], Any]:
    """What the server does for one request, in this process: preprocess, predict,
    postprocess (with empty query parameters when preprocess asks for them)."""
    import inspect

    from werkzeug.datastructures import MultiDict

    extra = [MultiDict()] if "params" in inspect.signature(predictor.preprocess).parameters else []

    def call(body: bytes) -> Any:
        return predictor.postprocess(predictor.predict(predictor.preprocess(body, *extra)))

    return call


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def served(directory: Path, *flags: str) -> Iterator[str]:
    """``python predictor.py`` on 127.0.0.1 (production mode), ready; stopped by pid after."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENBAYES_")}
    env["OPENBAYES_SERVING_PRODUCTION"] = "1"
    cmd = [sys.executable, "predictor.py", "--host", HOST, "--port", str(port), *flags]
    cmd += ["--model-path", str(directory)]  # production mode would look in /mnt/project
    log = (WORK / f"server-{directory.name}.log").open("wb")
    proc = subprocess.Popen(cmd, cwd=directory, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://{HOST}:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the {directory.name} server exited with {proc.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the {directory.name} server was not ready in 120 s")
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            time.sleep(0.1)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


# ---------------------------------------------------------------------------- measuring


def rate_served(
    url: str, bodies: list[bytes], kind: str, connections: int, seconds: float
) -> float:
    """Requests/s from ``connections`` clients posting ``bodies`` in turn for ``seconds``."""
    done = [0] * connections
    failures: list[str] = []
    stop_at = time.perf_counter() + seconds

    def client(index: int) -> None:
        with requests.Session() as session:
            n = index
            while time.perf_counter() < stop_at and done[index] < MAX_REQUESTS:
                rv = session.post(
                    url, data=bodies[n % len(bodies)], headers={"Content-Type": kind}, timeout=120
                )
                if rv.status_code != 200:
                    failures.append(f"{rv.status_code} {rv.text[:200]}")
                    return
                done[index] += 1
                n += connections

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise RuntimeError(f"the server failed: {failures[0]}")
    return sum(done) / (time.perf_counter() - started)


def rate_alone(call: Callable[[bytes], Any], bodies: list[bytes], seconds: float) -> float:
    """Calls/s of ``call`` over ``bodies`` in turn, one after another, for ``seconds``."""
    calls, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds and calls < MAX_REQUESTS:
        call(bodies[calls % len(bodies)])
        calls += 1
    return calls / (time.perf_counter() - started)


def one_at_a_time(
    call: Callable[[bytes], Any], bodies: list[bytes], passes: int
) -> tuple[float, list[Any]]:
    """Median ms of one call at a time over ``passes`` of ``bodies``; the first pass's answers."""
    times, answers = [], []
    for index in range(passes):
        for body in bodies:
            started = time.perf_counter()
            answer = call(body)
            times.append(time.perf_counter() - started)
            if index == 0:
                answers.append(answer)
    return 1000 * statistics.median(times), answers


def rapidocr_engine(threads: int) -> Any:
    """rapidocr's own pipeline, its dependencies installed under .work on first use."""
    if str(DEPS) not in sys.path:
        sys.path.append(str(DEPS))  # after the environment's own packages (numpy stays its)
    try:
        import cv2  # noqa: F401
        import pyclipper  # noqa: F401
        import shapely  # noqa: F401
    except ImportError:
        print(f"installing rapidocr's dependencies into {DEPS}", flush=True)
        cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(DEPS)]
        subprocess.run([*cmd, *RAPIDOCR_DEPS], check=True, timeout=900)
        importlib.invalidate_caches()
    import cv2

    cv2.setNumThreads(threads)
    from rapidocr_onnxruntime import RapidOCR

    return RapidOCR(intra_op_num_threads=threads, inter_op_num_threads=1)


def exact_share(answers: list[Any], pages: list[tuple[bytes, list[str]]]) -> float:
    """The share of the drawn lines read exactly, in order, in the answers for ``pages``."""
    exact = total = 0
    for answer, (_, lines) in zip(answers, pages):
        read = [line["text"] for line in answer["lines"]]
        exact += sum(a == b for a, b in zip(read, lines))
        total += len(lines)
    return exact / total


@dataclass
class Workload:
    """One example's inputs and how to measure it."""

    name: str  # the example's folder
    bodies: list[bytes]
    content_type: str
    seconds: float
    connections: int
    passes: int  # of ``bodies``, for the p50
    threads: int  # onnxruntime intra-op threads (OCR)
    server_flags: tuple[str, ...] = ()
    pages: list[tuple[bytes, list[str]]] | None = None  # OCR: the drawn text, for accuracy


Figures = dict[str, float]  # "rate", "p50" and, for OCR, "exact"


def measure_served(work: Workload, directory: Path) -> Figures:
    """The example served by this runtime: req/s, p50 (and lines read exactly)."""
    flags = ("--log-level", "warning", *work.server_flags)
    with served(directory, *flags) as url, requests.Session() as session:
        headers = {"Content-Type": work.content_type}

        def call(body: bytes) -> Any:
            rv = session.post(url, data=body, headers=headers, timeout=120)
            rv.raise_for_status()
            return rv.json()

        for body in work.bodies[:3]:  # warm-up
            call(body)
        rate = rate_served(url, work.bodies, work.content_type, work.connections, work.seconds)
        return figures_of(rate, *one_at_a_time(call, work.bodies, work.passes), work)


def measure_alone(work: Workload, call: Callable[[bytes], Any]) -> Figures:
    """A pipeline called in this process: calls/s, p50 (and lines read exactly)."""
    for body in work.bodies[:3]:  # warm-up
        call(body)
    rate = rate_alone(call, work.bodies, work.seconds)
    return figures_of(rate, *one_at_a_time(call, work.bodies, work.passes), work)


def figures_of(rate: float, p50: float, answers: list[Any], work: Workload) -> Figures:
    """The figures of one contender: its rate, its p50 and, for OCR, its exact share."""
    figures = {"rate": rate, "p50": p50}
    if work.pages:
        figures["exact"] = exact_share(answers, work.pages)
    return figures


def rapidocr_call(threads: int) -> Callable[[bytes], Any]:
    """RapidOCR()'s answer for an image, shaped like the example's (``lines`` of ``text``)."""
    engine = rapidocr_engine(threads)

    def call(body: bytes) -> Any:
        result, _ = engine(body)
        return {"lines": [{"text": text} for _, text, _ in result or []]}

    return call


def contend(work: Workload, reps: int, rapidocr: bool) -> dict[str, list[Figures]]:
    """Each contender ``reps`` times, the one that goes first rotating between repetitions."""
    directory = prepare_example(work.name)
    if work.name == "vad-torch":
        import warnings

        with warnings.catch_warnings():  # torch.jit.load is deprecated in torch 2.9+
            warnings.simplefilter("ignore", FutureWarning)
            alone = stages(load_predictor(directory, work.threads))
    else:
        alone = stages(load_predictor(directory, work.threads))
    contenders: dict[str, Callable[[], Figures]] = {
        "served": lambda: measure_served(work, directory),
        "alone": lambda: measure_alone(work, alone),
    }
    if rapidocr:
        rapid = rapidocr_call(work.threads)
        contenders["rapidocr"] = lambda: measure_alone(work, rapid)
    results: dict[str, list[Figures]] = {name: [] for name in contenders}
    names = list(contenders)
    for rep in range(reps):
        for name in names[rep % len(names) :] + names[: rep % len(names)]:
            print(f"{work.name}: {name}, repetition {rep + 1} of {reps}", flush=True)
            results[name].append(contenders[name]())
    return results


def median_of(results: dict[str, list[Figures]], name: str, key: str) -> float | None:
    """The median of one figure over a contender's repetitions (None if it has none)."""
    values = [figures[key] for figures in results.get(name, []) if key in figures]
    return statistics.median(values) if values else None


def rows_of(scenario: str, work: Workload, results: dict[str, list[Figures]]) -> list[Row]:
    """The table rows of one scenario: medians over the repetitions."""

    def row(metric: str, key: str) -> Row:
        return Row(
            scenario,
            metric,
            median_of(results, "served", key),
            median_of(results, "alone", key),
            median_of(results, "rapidocr", key),
        )

    rate = row(f"req/s ({work.connections} connections served)", "rate")
    rate.target = f">= {THROUGHPUT_TARGET:.0%} of alone"
    rate.verdict = verdict(rate.ratio, THROUGHPUT_TARGET, True)
    p50 = row("p50 ms, one request at a time", "p50")
    p50.target = f"<= {LATENCY_TARGET:.2f}x alone"
    p50.verdict = verdict(p50.ratio, LATENCY_TARGET, False)
    rows = [rate, p50]
    if work.pages:
        rows.append(row("lines read exactly", "exact"))
    return rows


def verdict(value: float | None, goal: float, higher_is_better: bool) -> str:
    """PASS or MISS against a goal, n/a without a value."""
    if value is None:
        return "n/a"
    ok = value >= goal if higher_is_better else value <= goal
    return "PASS" if ok else "MISS"


def measure(
    threads: int,
    seconds: float,
    reps: int = 2,
    connections: int = 2,
    pages: int = 6,
    only: str = "ocr,vad",
) -> list[Row]:
    """Every row of the benchmark, measured now: OCR, then VAD."""
    WORK.mkdir(parents=True, exist_ok=True)
    rows: list[Row] = []
    if "ocr" in only:
        docs = documents(pages)
        ocr = Workload(
            "ocr",
            [body for body, _ in docs],
            "image/png",
            seconds,
            connections,
            passes=2,
            threads=threads,
            server_flags=("--onnx-threads", str(threads)),
            pages=docs,
        )
        rows += rows_of(f"OCR, {pages} pages", ocr, contend(ocr, reps, rapidocr=True))
    if "vad" in only:
        audio = [audio_wav(20.0, seed) for seed in range(3)]
        vad = Workload("vad-torch", audio, "audio/wav", seconds, connections, 3, threads)
        rows += rows_of("VAD, 20 s of audio", vad, contend(vad, reps, rapidocr=False))
    return rows


# ---------------------------------------------------------------------------- report


def cell(value: float | None, metric: str) -> str:
    """A figure as the table shows it."""
    if value is None:
        return "n/a"
    if metric.startswith("lines"):
        return f"{value:.1%}"
    return f"{value:.2f}" if value < 10 else f"{value:,.0f}"


def markdown(rows: list[Row], threads: int, command: str) -> str:
    """The report: how it ran, then one table row per measurement."""
    load = os.getloadavg()
    lines = [
        "# Real models: served vs alone",
        "",
        f"{datetime.datetime.now().isoformat(timespec='seconds')}, `{command}`; "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"load average {load[0]:.1f} / {load[1]:.1f}; onnxruntime intra-op threads: {threads} "
        "for every OCR contender; the VAD model runs on one torch thread (as the example sets).",
        "",
        "Served: this runtime serving the example on 127.0.0.1 (production mode), requests "
        "from this process. Alone: the example's own preprocess, predict and postprocess "
        "called in this process, one request after another. RapidOCR(): rapidocr's pipeline "
        "(its defaults: detection at the image's own size or larger, orientation classifier "
        "on), in this process.",
        "",
        "| scenario | metric | served | alone | RapidOCR() | served / alone | target | |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        ratio = "" if row.ratio is None or row.metric.startswith("lines") else f"{row.ratio:.2f}"
        rapid = "" if row.rapidocr is None else cell(row.rapidocr, row.metric)
        served, alone = cell(row.served, row.metric), cell(row.alone, row.metric)
        lines.append(
            f"| {row.scenario} | {row.metric} | {served} | {alone} | {rapid} | {ratio} | "
            f"{row.target} | {row.verdict} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Measure, print the table and write it to --output."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--threads",
        type=int,
        default=len(os.sched_getaffinity(0)),
        help="onnxruntime intra-op threads for every OCR contender (default: the cores)",
    )
    parser.add_argument("--seconds", type=float, default=20.0, help="each throughput measurement")
    parser.add_argument("--reps", type=int, default=2, help="repetitions (medians are shown)")
    parser.add_argument("--connections", type=int, default=2, help="clients of the served runs")
    parser.add_argument("--pages", type=int, default=6, help="document images for OCR")
    parser.add_argument("--only", default="ocr,vad", help="ocr, vad or both")
    parser.add_argument("--quick", action="store_true", help="one repetition, 8 s per measurement")
    parser.add_argument("--output", type=Path, default=WORK / "REAL-MODELS.md")
    args = parser.parse_args(argv)
    for font in [FONTS / "dejavu" / f for f in ENGLISH_FONTS] + [CHINESE_FONT]:
        if not font.exists():
            print(f"{font} is missing: apt-get install -y fonts-dejavu-core fonts-wqy-microhei")
            return 2
    seconds, reps = (8.0, 1) if args.quick else (args.seconds, args.reps)
    rows = measure(args.threads, seconds, reps, args.connections, args.pages, args.only)
    command = "benchmarks/real_models.py " + " ".join(argv if argv is not None else sys.argv[1:])
    report = markdown(rows, args.threads, command.strip())
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(report, encoding="utf-8")
    print(report)
    print(f"written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
