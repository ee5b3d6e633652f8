"""predict asks for ``cancelled`` and polls it: for cancellation tests over HTTP.

``{"id": ..., "wait": S, "log": PATH}``: predict notes its start in PATH (one JSON line,
``time.monotonic()`` included), polls ``cancelled`` for up to S seconds, notes when it
returns and why, and answers the same.
"""

import json as jsonlib
import time

import openbayes_serving as serv


def note(path, **fields):
    with open(path, "a", encoding="utf-8") as out:
        out.write(jsonlib.dumps({"at": time.monotonic(), **fields}) + "\n")


class Predictor:
    def predict(self, json, cancelled):
        note(json["log"], event="start", id=json.get("id"))
        end = time.monotonic() + json.get("wait", 0)
        while time.monotonic() < end and not cancelled.is_set():
            time.sleep(0.01)
        answer = {"id": json.get("id"), "cancelled": cancelled.is_set(), "reason": cancelled.reason}
        note(json["log"], event="return", **answer)
        return answer


if __name__ == "__main__":
    serv.run(Predictor)
