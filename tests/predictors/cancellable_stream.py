"""A generator predict that asks for ``cancelled``: one chunk, then waits on it.

``{"log": PATH}``: the first chunk goes out at once; the generator then waits up to
10 s for ``cancelled`` and notes in PATH (``time.monotonic()``) when the wait ended.
"""

import json as jsonlib
import time

import openbayes_serving as serv


class Predictor:
    def predict(self, json, cancelled):
        yield {"chunk": 1}
        stopped = cancelled.wait(10)
        with open(json["log"], "a", encoding="utf-8") as out:
            line = {"at": time.monotonic(), "cancelled": stopped, "reason": cancelled.reason}
            out.write(jsonlib.dumps(line) + "\n")
        if not stopped:
            yield {"chunk": 2}


if __name__ == "__main__":
    serv.run(Predictor)
