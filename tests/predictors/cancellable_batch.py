"""A batched predict that asks for ``cancelled``: one per item, as a list.

Each item says how long predict may wait (``wait``); predict polls until any item's
``cancelled`` is set or the longest wait ends, then answers each item with the batch's
size and its own ``cancelled``.
"""

import time

import openbayes_serving as serv


class Predictor:
    @serv.batch(max_batch_size=8, max_delay_ms=300)
    def predict(self, json, cancelled):
        end = time.monotonic() + max(item.get("wait", 0) for item in json)
        while time.monotonic() < end and not any(c.is_set() for c in cancelled):
            time.sleep(0.01)
        return [
            {"id": item["id"], "batch": len(json), "cancelled": c.is_set(), "reason": c.reason}
            for item, c in zip(json, cancelled)
        ]


if __name__ == "__main__":
    serv.run(Predictor)
