"""Streaming: a ``predict`` written as a generator sends each token as soon as it is made."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path

import openbayes_serving as serv

TABLE = Path(__file__).resolve().parent / "bigram.json"  # written by make_model.py
MAX_TOKENS = 500


class Predictor:
    """Samples characters from a bigram table, one character per streamed chunk."""

    def __init__(self) -> None:
        counts: dict[str, dict[str, int]] = json.loads(TABLE.read_text())
        # For each character: the characters that may follow it, and how often they did.
        self.table = {ch: (list(row), list(row.values())) for ch, row in counts.items()}

    def preprocess(self, payload: dict) -> tuple[str, int, int]:
        """Check the request before the stream starts, so a bad one is a plain 400."""
        if not isinstance(payload, dict):
            raise serv.ServingError('send JSON like {"prompt": "the ", "max_tokens": 40}')
        prompt = str(payload.get("prompt", "the "))
        try:
            max_tokens = int(payload.get("max_tokens", 40))
            seed = int(payload.get("seed", 0))
        except (TypeError, ValueError) as exc:
            raise serv.ServingError("max_tokens and seed must be integers") from exc
        if not 0 < max_tokens <= MAX_TOKENS:
            raise serv.ServingError(f"max_tokens must be between 1 and {MAX_TOKENS}")
        return prompt, max_tokens, seed

    def predict(self, x: tuple[str, int, int]) -> Iterator[dict[str, str]]:
        """Yield ``{"token": ch}`` chunks: NDJSON lines, or SSE events for text/event-stream."""
        prompt, max_tokens, seed = x
        rng = random.Random(seed)  # one generator per request: same seed, same text
        ch = prompt[-1] if prompt else " "
        for _ in range(max_tokens):
            chars, weights = self.table.get(ch, self.table[" "])
            ch = rng.choices(chars, weights)[0]
            yield {"token": ch}


if __name__ == "__main__":
    serv.run(Predictor)
