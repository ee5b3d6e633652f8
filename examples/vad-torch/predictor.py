"""Voice activity detection with Silero VAD (TorchScript): speech segments of a WAV file.

WAV bytes in (PCM, any rate from 8 to 192 kHz, mono or not: mixed down and resampled to
16 kHz with numpy); ``{"segments": [{"start": s, "end": s}, ...], "duration": s}`` out.
``make_model.py`` copies the model out of the silero-vad wheel.
"""

from __future__ import annotations

import io
import warnings
import wave
from pathlib import Path

import numpy as np
import torch
from werkzeug.datastructures import MultiDict

import openbayes_serving as serv

MODEL = Path(__file__).resolve().parent / "silero_vad.jit"  # written by make_model.py
RATE = 16_000  # the model reads 16 kHz audio in frames of 512 samples (32 ms)
FRAME = 512
MIN_RATE, MAX_RATE = 8_000, 192_000
MAX_SECONDS = 600
MIN_SPEECH_S = 0.25  # shorter bursts are not speech
SPEECH_PAD_S = 0.03  # each segment is widened by this much on both sides
LOWPASS_TAPS = 101
Audio = tuple[np.ndarray, float, float]  # 16 kHz samples, threshold, min_silence (s)
Frames = tuple[np.ndarray, float, float, float]  # probabilities, duration (s), threshold, ...


class Predictor:
    """Where speech is in an uploaded WAV file, in seconds."""

    def __init__(self, device: str) -> None:
        # `device` is injected by name: "cpu" unless --devices says otherwise.
        self.device = torch.device(device)
        # The model reads 32 ms frames one after another, each a few small operations: one
        # thread does them fastest (several spend their time handing the work over).
        torch.set_num_threads(1)
        with warnings.catch_warnings():  # the model ships as TorchScript, which torch 2.9+
            warnings.simplefilter("ignore", FutureWarning)  # calls deprecated
            self.model = torch.jit.load(str(MODEL), map_location=self.device).eval()
        silence = torch.zeros(RATE, device=self.device)
        for _ in range(3):  # TorchScript optimises the graph over its first calls
            self.model.audio_forward(silence, RATE)

    def preprocess(self, data: bytes, params: MultiDict) -> Audio:
        """Decode, mix down and resample, on a request thread outside the lock.

        `data` is the raw body; `params` the query string: ``?threshold=`` (0-1, default
        0.5) and ``?min_silence_ms=`` (the pause that ends a segment, default 100).
        """
        threshold = params.get("threshold", 0.5, type=float)
        min_silence = params.get("min_silence_ms", 100, type=float)
        if not 0.0 < threshold < 1.0:
            raise serv.ServingError("threshold must be between 0 and 1")
        if not 0 <= min_silence <= 10_000:
            raise serv.ServingError("min_silence_ms must be between 0 and 10000")
        return to_16k(*read_wav(data)), threshold, min_silence / 1000

    def predict(self, x: Audio) -> Frames:
        """Speech probability of each 32 ms frame, under the predict lock.

        The model keeps state from frame to frame (audio_forward resets it first): one
        predict at a time per model, as serv.run below pins.
        """
        audio, threshold, min_silence = x
        samples = torch.from_numpy(audio).to(self.device)
        probabilities = self.model.audio_forward(samples, RATE)[0].numpy()
        return probabilities, len(audio) / RATE, threshold, min_silence

    def postprocess(self, y: Frames) -> dict:
        """Frames to segments, as JSON."""
        probabilities, duration, threshold, min_silence = y
        segments = speech_segments(probabilities, duration, threshold, min_silence)
        return {
            "segments": [{"start": round(s, 3), "end": round(e, 3)} for s, e in segments],
            "duration": round(duration, 3),
        }


def read_wav(data: bytes) -> tuple[np.ndarray, int]:
    """Samples in [-1, 1] (mixed down to mono) and their rate, from PCM WAV bytes."""
    if not data:
        raise serv.ServingError("the body is empty: send a WAV file")
    try:
        with wave.open(io.BytesIO(data)) as wav:
            rate, width, channels = wav.getframerate(), wav.getsampwidth(), wav.getnchannels()
            if not MIN_RATE <= rate <= MAX_RATE:
                raise serv.ServingError(
                    f"the sample rate is {rate} Hz: send {MIN_RATE}-{MAX_RATE} Hz", 415
                )
            if wav.getnframes() > MAX_SECONDS * rate:
                raise serv.ServingError(f"the audio is longer than {MAX_SECONDS} s", 413)
            raw = wav.readframes(wav.getnframes())
    except (wave.Error, EOFError) as exc:
        raise serv.ServingError(f"the body is not a PCM WAV file: {exc}", 415) from exc
    if width == 3:  # 24-bit: widen to 32 bits
        bytes3 = np.frombuffer(raw[: len(raw) // 3 * 3], np.uint8).reshape(-1, 3)
        raw = np.pad(bytes3, ((0, 0), (1, 0))).tobytes()
        width = 4
    kinds = {1: np.uint8, 2: np.int16, 4: np.int32}
    samples = np.frombuffer(raw[: len(raw) // width * width], kinds[width]).astype(np.float32)
    if width == 1:
        samples = samples - 128  # 8-bit WAV is unsigned
    samples /= float(2 ** (8 * width - 1))
    frames = len(samples) // channels
    if frames == 0:
        raise serv.ServingError("the WAV file holds no samples")
    return samples[: frames * channels].reshape(frames, channels).mean(1), rate


def to_16k(samples: np.ndarray, rate: int) -> np.ndarray:
    """Resample to 16 kHz with numpy.

    A windowed-sinc low-pass under the new Nyquist frequency when the rate goes down, then
    linear interpolation.
    """
    if rate == RATE:
        return samples.astype(np.float32)
    if rate > RATE:
        cutoff = 0.45 * RATE / rate  # in cycles per input sample
        n = np.arange(LOWPASS_TAPS) - (LOWPASS_TAPS - 1) / 2
        taps = 2 * cutoff * np.sinc(2 * cutoff * n) * np.hanning(LOWPASS_TAPS)
        samples = np.convolve(samples, taps / taps.sum(), mode="same")
    times = np.arange(int(len(samples) * RATE / rate)) * (rate / RATE)
    return np.interp(times, np.arange(len(samples)), samples).astype(np.float32)


def speech_segments(
    probabilities: np.ndarray, duration: float, threshold: float, min_silence: float
) -> list[tuple[float, float]]:
    """(start, end) seconds of speech from the probability of each frame.

    A segment opens on a frame at or above ``threshold`` and closes after ``min_silence``
    seconds below ``threshold - 0.15``; segments under MIN_SPEECH_S are dropped.
    """
    frame_s = FRAME / RATE
    low = max(threshold - 0.15, 0.01)
    segments: list[list[float]] = []
    start: float | None = None
    quiet_since: float | None = None
    for i, p in enumerate(probabilities):
        t = i * frame_s
        if p >= threshold:
            quiet_since = None
            if start is None:
                start = t
        elif start is not None and p < low:
            quiet_since = t if quiet_since is None else quiet_since
            if t + frame_s - quiet_since >= min_silence:
                segments.append([start, quiet_since])
                start = quiet_since = None
    if start is not None:
        segments.append([start, duration])
    kept = [(s, e) for s, e in segments if e - s >= MIN_SPEECH_S]
    padded = []
    for i, (s, e) in enumerate(kept):  # pad, at most half way to the next segment
        before = kept[i - 1][1] if i else 0.0
        after = kept[i + 1][0] if i + 1 < len(kept) else duration
        padded.append(
            (max(s - SPEECH_PAD_S, (before + s) / 2), min(e + SPEECH_PAD_S, (e + after) / 2))
        )
    return padded


if __name__ == "__main__":
    # The model keeps state from frame to frame: never two predicts at once on one model.
    serv.run(Predictor, predict_concurrency=1)
