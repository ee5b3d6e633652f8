"""Overload: predict holds the GIL for about 40 ms of pure-Python work, then echoes.

The work is a fixed number of loop turns, counted once at start-up, so two predicts at
once take twice as long each (a time-based spin would not).
"""

from __future__ import annotations

import time

import openbayes_serving as serv

SECONDS = 0.04


def _spin(turns: int) -> int:
    total = 0
    for i in range(turns):
        total += i
    return total


def _turns_for(seconds: float) -> int:
    turns, began = 100_000, time.perf_counter()
    _spin(turns)
    return max(1, int(turns * seconds / (time.perf_counter() - began)))


class Predictor:
    def __init__(self):
        self.turns = min(_turns_for(SECONDS) for _ in range(3))

    def predict(self, json):
        _spin(self.turns)
        return {"echo": json}


if __name__ == "__main__":
    serv.run(Predictor)
